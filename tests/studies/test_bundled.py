"""Every study shipped in adamlab/studies/specs validates (each of its trials builds a valid TrainConfig), and
bundled studies resolve by name."""

from pathlib import Path

import pytest
from typer.testing import CliRunner

import adamlab
from adamlab.cli import app
from adamlab.optim import registry
from adamlab.studies import bundled_studies, copy_study, expand_trials, load_spec, resolve_spec
from adamlab.studies.recommend import load_recommend_spec

runner = CliRunner()

STUDIES = Path(__file__).parents[2] / "src" / "adamlab" / "studies" / "specs"
NEEDS = {"memory_efficient.yaml": ("ldadam", "adam_mini", "adamw_8bit")}


def missing_optimizers(name: str) -> list[str]:
    return [o for o in NEEDS.get(name, ()) if o not in registry.REGISTRY or not registry.REGISTRY[o].installed]


# The pre-training and GLUE studies of the workloads (docs/protocols.md)
WORKLOADS = {"pretrain_cpu.yaml", "pretrain_c4_llama.yaml", "adam_mini_gpt2.yaml", "glue_ldadam.yaml",
             "glue_minilm_cpu.yaml"}
RECOMMEND = {"recommend_demo.yaml"}  # `mode: recommend` specs, read by `adamlab recommend`


@pytest.mark.parametrize("path", sorted(p for p in STUDIES.glob("*.yaml") if p.name not in RECOMMEND),
                         ids=lambda path: path.name)
def test_bundled_study_validates(path, tmp_path):
    missing = missing_optimizers(path.name)
    if missing:
        pytest.skip(f"{path.name} compares optimizers this install lacks: {', '.join(missing)}")
    # As `adamlab validate`: a dds arm's α would be estimated on the real model (a minute on a CPU), so it is left
    # pending; the estimator has its own tests and tests/studies/test_trials.py runs it inside a study.
    spec = load_spec(path)
    trials = expand_trials(spec, tmp_path, run_estimates=False)
    assert spec.name == path.stem and trials


def test_bundled_recommendations_load_by_name(tmp_path):
    for name in RECOMMEND:
        assert load_recommend_spec(Path(name).stem, tmp_path) == load_recommend_spec(STUDIES / name, tmp_path)


def test_the_bundled_studies_are_all_there():
    assert {p.name for p in STUDIES.glob("*.yaml")} == {"demo.yaml", "smollm2_cpu.yaml", "adamdds_paper.yaml", *WORKLOADS,
                                                        "hybrid_csqa.yaml", "memory_efficient.yaml", *RECOMMEND}


def test_bundled_studies_resolve_by_name_and_a_path_wins(tmp_path, monkeypatch):
    assert resolve_spec("demo") == resolve_spec("demo.yaml") == STUDIES / "demo.yaml"
    assert set(bundled_studies()) == {p.stem for p in STUDIES.glob("*.yaml")}
    monkeypatch.chdir(tmp_path)
    (tmp_path / "demo").write_text("name: mine\n")  # a file of that name is the user's spec
    assert resolve_spec("demo") == Path("demo")
    with pytest.raises(FileNotFoundError, match="bundled studies: adam_mini_gpt2, adamdds_paper, demo, "):
        resolve_spec("dmo")
    with pytest.raises(FileNotFoundError, match="no study spec at sub/demo.yaml"):
        resolve_spec("sub/demo.yaml")  # a path is never taken for a bundled name


def test_copy_study_writes_an_editable_copy_and_never_overwrites(tmp_path):
    written = copy_study("demo", tmp_path)
    assert written == tmp_path / "demo.yaml"
    assert written.read_text() == (STUDIES / "demo.yaml").read_text()
    assert load_spec(written).name == "demo"
    with pytest.raises(ValueError, match="already exists"):
        copy_study("demo", written)
    with pytest.raises(ValueError, match="bundled studies: adam_mini_gpt2, adamdds_paper"):
        copy_study("dem", tmp_path / "x.yaml")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["demo.yaml"]  # no temporary file left behind


def test_cli_version_studies_and_init(tmp_path):
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0 and result.output.strip() == f"adamlab {adamlab.__version__}"
    result = runner.invoke(app, ["studies"])
    assert result.exit_code == 0
    assert [line.split()[0] for line in result.output.splitlines() if line and not line.startswith(" ")] == \
        sorted(bundled_studies())
    result = runner.invoke(app, ["init", "smollm2_cpu", "--out", str(tmp_path)])
    assert result.exit_code == 0 and (tmp_path / "smollm2_cpu.yaml").is_file()
    result = runner.invoke(app, ["init", "smollm2_cpu", "--out", str(tmp_path)])
    assert result.exit_code == 2 and "already exists" in result.output
    result = runner.invoke(app, ["validate", "no_such_study"])
    assert result.exit_code == 2 and "bundled studies: adam_mini_gpt2, adamdds_paper" in result.output
