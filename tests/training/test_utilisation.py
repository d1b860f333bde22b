"""The utilisation timeline: sampled on a timer thread (not only at steps), stored with the run, drawn per trial in
the HTML report."""

import json
import time

import pytest

from adamlab.reports import collect
from adamlab.reports.html import html_report, table_figures
from adamlab.studies import Store
from adamlab.training import train
from adamlab.training.telemetry import UTILISATION_FILE, JsonlLog, UtilisationSampler, _proc_probe, _psutil_probe

from ..reports.conftest import study_dir  # noqa: F401  (the fixture: a finished study in a store)
from .test_train import tiny_config


def busy(seconds: float) -> None:
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        sum(range(1000))


def read(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.mark.parametrize("probe", [_psutil_probe, _proc_probe])
def test_the_cpu_probes_see_a_busy_process(probe):
    measure = probe()
    busy(0.3)
    sample = measure()
    assert sample["source"] in ("psutil", "proc") and sample["rss_bytes"] > 2**20
    assert sample["cpu_percent"] > 0  # the process burned CPU since the probe was made


def test_samples_come_on_the_timer_between_steps(tmp_path):
    step = [0]
    sampler = UtilisationSampler(JsonlLog(tmp_path / UTILISATION_FILE), lambda: step[0], interval=0.05).start()
    busy(0.4)  # no step finishes meanwhile: the timer alone takes these samples
    step[0] = 1
    busy(0.1)
    sampler.stop()
    sampler.stop()  # idempotent: no second final sample
    samples = read(tmp_path / UTILISATION_FILE)
    assert sum(sample["step"] == 0 for sample in samples) >= 3 and samples[-1]["step"] == 1
    seconds = [sample["seconds"] for sample in samples]
    assert seconds == sorted(seconds) and 0.4 <= seconds[-1] < 5
    assert all(sample["cpu_percent"] >= 0 and sample["rss_bytes"] > 0 for sample in samples)


def test_a_resumed_timeline_keeps_its_samples_up_to_the_step_and_continues_their_clock(tmp_path):
    path = tmp_path / UTILISATION_FILE
    path.write_text("".join(json.dumps({"step": s, "seconds": 10.0 * s, "source": "proc"}) + "\n" for s in range(4)))
    sampler = UtilisationSampler(JsonlLog(path, resume_step=2), lambda: 2, interval=60, probe=lambda: {"x": 1})
    sampler.start().stop()
    samples = read(path)
    assert [s["step"] for s in samples] == [0, 1, 2, 2] and samples[-1]["seconds"] >= 20.0


def test_a_bad_interval_is_refused(tmp_path):
    with pytest.raises(ValueError, match="interval"):
        UtilisationSampler(JsonlLog(tmp_path / UTILISATION_FILE), lambda: 0, interval=0)


def test_a_run_stores_its_timeline_in_the_folder_and_the_record(tmp_path):
    result = train(tiny_config(tmp_path / "run", steps=2, train_limit=8, eval_limit=4), show_progress=False)
    samples = read(tmp_path / "run" / UTILISATION_FILE)
    assert samples and samples[-1]["step"] == 2 and samples[-1]["source"] in ("psutil", "proc")
    assert result.record.utilisation == samples
    assert json.loads((tmp_path / "run" / "result.json").read_text())["utilisation"] == samples


def test_the_report_draws_a_utilisation_timeline_per_trial(study_dir):  # noqa: F811
    store = Store.open(study_dir)
    try:
        results, trials = collect(store), store.trials()
        curves = {trial.key: store.step_metrics(trial.key) for trial in trials}
    finally:
        store.close()
    timelines = {trial.key: [{"step": s, "seconds": 0.5 * s, "source": "proc", "cpu_percent": 90.0 + s + i,
                              "rss_bytes": 2**30} for s in range(3)] for i, trial in enumerate(trials)}
    table = results.tables[0]
    figures = {figure.layout.title.text: figure for figure, _, _ in table_figures(table, curves, timelines)}
    traces = figures["Utilisation"].data
    keys = [trial.key for row in table.rows for trial in row.trials]
    assert len(traces) == len(keys)  # one line per trial
    first = [trial.key for trial in trials].index(keys[0])  # the sample values of the first line's trial
    assert list(traces[0].x) == [0.0, 0.5, 1.0] and list(traces[0].y) == [90.0 + s + first for s in range(3)]
    assert "Utilisation" not in {f.layout.title.text for f, _, _ in table_figures(table, curves, {})}
    page = html_report(results, curves, timelines)
    assert 'data-figures="8"' in page and "percent of one core" in page
