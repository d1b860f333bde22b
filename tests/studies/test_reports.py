"""Reports read the store only, report every configuration, and their numbers are the database's."""

import csv
import json
import statistics

import pytest

from adamlab.reports import write_report
from adamlab.reports.results import published_tables
from adamlab.studies import Owner, Store, TrialOutcome, expand_trials, parse_spec

from .tiny import TINY_SPEC

THREE_ARMS = TINY_SPEC + """\
  - name: lion_small
    optimizer: lion
    lr: 1e-4
"""
ACCURACY = {("adam", 0): 0.5, ("adam", 1): 0.7, ("adamw-cosine", 0): 0.8, ("adamw-cosine", 1): 0.9,
            ("lion_small", 0): 0.75}  # lion_small seed 1 diverges


@pytest.fixture
def study_dir(tmp_path):
    """A store holding a finished study, written without training (the report cannot tell)."""
    spec = parse_spec(THREE_ARMS, "study.yaml")
    store = Store.open(tmp_path, create=True)
    store.register(spec, expand_trials(spec, tmp_path))
    owner = Owner.current()
    while (trial := store.claim(owner)) is not None:
        accuracy = ACCURACY.get((trial.arm, trial.seed))
        status = "done" if accuracy is not None else "diverged"
        evaluations = [{"step": 3, "accuracy": accuracy, "weighted_f1": accuracy / 2, "n_total": 8, "n_invalid": 1,
                        "seconds": 0.5}] if accuracy is not None else []
        steps = [{"step": s, "loss": 2.0 - s / 10 - trial.seed, "lr": trial.lr} for s in (1, 2, 3)]
        store.finish(trial.key, owner, TrialOutcome(status, 3, 1.0, None, steps, evaluations,
                                                    {"python": "3.11", "packages": {"torch": "2"}}))
    store.close()
    return tmp_path


def test_the_summary_holds_the_database_numbers(study_dir):
    report = write_report(study_dir)
    summary = json.loads(report.summary.read_text())
    store = Store.open(study_dir)
    finals = store.final_evaluations()
    trials = store.trials()
    (table,) = summary["tables"]
    assert (table["model"], table["task"], table["primary_metric"]) == ("tiny-llama", "ag_news", "accuracy")
    assert table["metrics"] == ["accuracy", "weighted_f1", "n_total", "n_invalid", "train_loss"]
    assert [row["arm"] for row in table["rows"]] == ["adam", "adamw-cosine", "lion_small"]  # every configuration
    for row in table["rows"]:
        done = [t for t in trials if t.arm == row["arm"] and t.status == "done"]
        accuracies = [finals[t.key]["accuracy"] for t in sorted(done, key=lambda t: t.seed)]
        assert row["mean"]["accuracy"] == statistics.fmean(accuracies)
        assert row["std"]["accuracy"] == (statistics.stdev(accuracies) if len(accuracies) > 1 else None)
        losses = [store.step_metrics(t.key)[-1]["loss"] for t in sorted(done, key=lambda t: t.seed)]
        assert row["mean"]["train_loss"] == statistics.fmean(losses)
        assert [t["scores"]["accuracy"] for t in row["trials"] if t["status"] == "done"] == accuracies
    lion = table["rows"][2]
    assert lion["statuses"] == {"done": 1, "diverged": 1} and lion["seeds_done"] == 1
    assert [row["marks"].get("accuracy") for row in table["rows"]] == [None, "best", "second"]
    assert summary["budget"] == {"search_space": "one fixed learning rate per arm", "trials_per_arm": 3,
                                 "seeds": [0, 1], "configurations_per_arm": {"adam": 1, "adamw-cosine": 1,
                                                                             "lion_small": 1}}
    assert summary["trials"]["done"] == 5 and summary["trials"]["diverged"] == 1


def test_markdown_latex_and_csv_show_the_same_numbers_and_marks(study_dir):
    report = write_report(study_dir)
    markdown = report.markdown.read_text()
    assert "Search space: one fixed learning rate per arm" in markdown
    assert "at most 3 configuration(s)" in markdown and "seeds 0, 1" in markdown
    assert "| adamw-cosine | adamw | cosine | 0.01 | 2/2 | **0.8500 ± 0.0707** |" in markdown
    assert "| lion_small | lion | constant | 0.0001 | 1/2 (1 diverged) | <u>0.7500</u> |" in markdown
    assert "| adam | adam | constant | 0.01 | 2/2 | 0.6000 ± 0.1414 |" in markdown
    assert "select nothing" in markdown and "python 3.11" in markdown

    latex = (report.folder / "tables" / "tiny-llama__ag_news.tex").read_text()
    assert "\\textbf{0.8500 $\\pm$ 0.0707}" in latex and "\\underline{0.7500}" in latex
    assert "lion\\_small" in latex and "\\begin{tabular}{lllllrrrrr}" in latex

    with (report.folder / "tables" / "tiny-llama__ag_news.csv").open() as f:
        rows = {row["arm"]: row for row in csv.DictReader(f)}
    assert float(rows["adam"]["accuracy_mean"]) == statistics.fmean([0.5, 0.7])
    assert float(rows["adam"]["accuracy_std"]) == statistics.stdev([0.5, 0.7])
    assert rows["lion_small"]["accuracy_std"] == "" and rows["lion_small"]["statuses"] == "done=1;diverged=1"


def test_a_folder_without_results_is_refused(tmp_path):
    with pytest.raises(FileNotFoundError, match="holds no study results"):
        write_report(tmp_path)


def test_the_published_layout_puts_models_under_each_metric_and_configurations_in_columns(tmp_path):
    """Two models, and a dds arm whose α differs per model: its multiples still line up in one column each."""
    text = (TINY_SPEC.replace("models: [tiny-llama]", "models: [tiny-llama, tiny-qwen]")
            + "  - name: adam-dds\n    optimizer: adam\n    lr: dds x0.5, x1\n"
            + "dds:\n  alpha:\n    tiny-llama: {ag_news: 4e-3}\n    tiny-qwen: {ag_news: 2e-3}\n")
    spec = parse_spec(text.replace("trials_per_arm: 3", "trials_per_arm: 2"), "study.yaml")
    store = Store.open(tmp_path, create=True)
    store.register(spec, expand_trials(spec, tmp_path))
    owner = Owner.current()
    accuracy = {}
    while (trial := store.claim(owner)) is not None:
        accuracy[trial.key] = value = 0.5 + 0.01 * trial.position
        store.finish(trial.key, owner, TrialOutcome("done", 3, 1.0, None, [{"step": 3, "loss": 1.0}],
                                                    [{"step": 3, "accuracy": value, "weighted_f1": value / 2,
                                                      "n_total": 8, "n_invalid": 0, "seconds": 0.5}]))
    store.close()
    report = write_report(tmp_path)
    (table,) = published_tables(report.results)
    assert table.columns == ["adam", "adamw-cosine", "adam-dds α×0.5", "adam-dds α×1"]
    assert [(row.metric, row.model) for row in table.rows] == [
        ("accuracy", "tiny-llama"), ("accuracy", "tiny-qwen"), ("weighted_f1", "tiny-llama"), ("weighted_f1", "tiny-qwen")]
    store = Store.open(tmp_path)
    for row in table.rows:
        for column, cell in zip(table.columns, row.cells):
            keys = [t.key for t in store.trials() if t.model == row.model and column == (
                f"{t.arm} α×{t.stepsize_estimate['multiplier']:g}" if t.stepsize_estimate else t.arm)]
            assert len(keys) == 2  # two seeds
            expected = statistics.fmean(accuracy[k] * (0.5 if row.metric == "weighted_f1" else 1) for k in keys)
            assert cell.mean(row.metric) == pytest.approx(expected)
    # The best of each row is the configuration run last (position grows with the value), second the one before.
    assert all(row.marks() == {3: "best", 2: "second"} for row in table.rows)
    markdown = report.markdown.read_text()
    assert "| metric, model | adam | adamw-cosine | adam-dds α×0.5 | adam-dds α×1 |" in markdown
    assert (report.folder / "tables" / "ag_news.published.tex").read_text().count("\\textbf{") == 4
