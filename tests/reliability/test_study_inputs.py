"""Study specs that attack the loader, and a report that must escape what it quotes."""

import time

import pytest
from typer.testing import CliRunner

from adamlab.cli import app
from adamlab.studies.spec import SpecError, load_spec

runner = CliRunner()

BILLION_LAUGHS = """\
a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]
b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]
c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]
d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]
e: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]
f: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]
g: &g [*f,*f,*f,*f,*f,*f,*f,*f,*f]
h: &h [*g,*g,*g,*g,*g,*g,*g,*g,*g]
i: &i [*h,*h,*h,*h,*h,*h,*h,*h,*h]
"""


def test_an_alias_bomb_exits_2_within_a_second(tmp_path):
    spec = tmp_path / "bomb.yaml"
    spec.write_text(BILLION_LAUGHS)
    runner.invoke(app, ["validate", str(tmp_path / "missing.yaml")])  # imports done: the bomb alone is timed
    started = time.perf_counter()
    result = runner.invoke(app, ["validate", str(spec)])
    assert time.perf_counter() - started < 1.0
    assert result.exit_code == 2
    assert len(result.stderr.strip().splitlines()) == 1
    assert f"{spec}: the YAML expands to more than 100,000 values" in result.stderr


def test_a_recursive_alias_is_refused_with_its_line(tmp_path):
    spec = tmp_path / "loop.yaml"
    spec.write_text("name: x\nmodels: &m [tiny-llama, *m]\n")
    with pytest.raises(SpecError, match=r"loop.yaml:2: an alias refers to a block that contains it"):
        load_spec(spec)


def test_a_shared_block_through_an_alias_still_loads(tmp_path):
    spec = tmp_path / "shared.yaml"
    spec.write_text(
        "name: shared\nbudget: {search_space: none, trials_per_arm: 1}\nmodels: [tiny-llama]\ntasks: [ag_news]\nseeds: [0]\nsteps: 2\nlr: 0.001\n"
        "arms:\n  - {name: a, optimizer: adamw, hparams: &h {weight_decay: 0.01}}\n"
        "  - {name: b, optimizer: adam, hparams: *h}\n"
    )
    assert [arm.hparams for arm in load_spec(spec).arms] == [{"weight_decay": 0.01}] * 2


def test_a_spec_that_is_not_utf8_names_its_file_and_line(tmp_path):
    spec = tmp_path / "latin1.yaml"
    spec.write_bytes("name: x\ndescription: caf\xe9\n".encode("latin-1"))
    result = runner.invoke(app, ["validate", str(spec)])
    assert result.exit_code == 2 and f"{spec}:2: not UTF-8 text" in result.stderr


HOSTILE_SPEC = """\
name: hostile
description: 'see <script>alert(1)</script> and [a link](javascript:alert(2)) ![x](http://e/x.png)'
budget:
  search_space: '<img src=x onerror=alert(3)> `code` **bold**'
  trials_per_arm: 1
models: [tiny-llama]
tasks: [ag_news]
seeds: [0]
steps: 1
lr: 1e-2
arms:
  - name: '<img src=x onerror=alert(4)>|x'
    optimizer: adam
"""


def test_report_md_escapes_everything_it_quotes(tmp_path):
    from adamlab.reports import write_report
    from adamlab.studies import Owner, Store, TrialOutcome, expand_trials, parse_spec

    spec = parse_spec(HOSTILE_SPEC, "hostile.yaml")
    store = Store.open(tmp_path, create=True)
    store.register(spec, expand_trials(spec, tmp_path))
    owner = Owner.current()
    trial = store.claim(owner)
    store.finish(trial.key, owner, TrialOutcome("done", 1, 1.0, None, [{"step": 1, "loss": 1.0, "lr": 0.01}],
                                                [{"step": 1, "accuracy": 0.5, "n_total": 2, "n_invalid": 0}],
                                                {"python": "3.11 <b>", "packages": {}}))
    store.close()
    markdown = write_report(tmp_path).markdown.read_text()
    for raw in ("<script>", "<img", "[a link](", "![x]", "`code`", "**bold**", "<b>"):
        assert raw not in markdown, raw
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in markdown
    assert "| &lt;img src=x onerror=alert(4)&gt;\\|x | adam |" in markdown  # the pipe does not split the row
