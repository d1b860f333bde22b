"""adamlab recommend: honest splits, synchronous successive halving with continuation, guards, the JSON contract."""

from __future__ import annotations

import importlib
import json
import math
from pathlib import Path

import numpy as np
import pytest

from adamlab.studies.confidence import binomial_se, bootstrap_draws, difference, probability_best
from adamlab.studies.devsplit import carve_dev_split, dev_size
from adamlab.studies.guards import exclusion_reason, majority_baseline
from adamlab.studies.recommend import (RESULT_FILE, candidates, load_recommend_spec, plan_rungs, promote,
                                       read_runs, recommend, room_for_close_calls, verdict_line)
from adamlab.tasks import get_task
from adamlab.tasks.base import Task
from .recommend_helpers import DIVERGING_LR, tiny_settings

# The module, not the function adamlab.studies re-exports under the same name.
recommend_module = importlib.import_module("adamlab.studies.recommend")

CONTRACT = {"model", "task", "metric", "selected_on", "optimizer", "hparams", "lr", "schedule", "steps", "dev", "test",
            "baseline", "p_best", "delta_vs_baseline", "cost", "alternatives", "excluded", "use_it"}


def test_dev_split_is_disjoint_stratified_and_a_function_of_the_seed(tmp_path):
    task = get_task("sst2")
    split = carve_dev_split(task, tmp_path / "a", seed=3, fraction=0.1)
    train = task.load("train", split.train_file)
    dev = task.load("eval", split.dev_file)
    assert (len(train), len(dev)) == (split.n_train, split.n_dev) == (3600, 400)
    train_sentences = {e.text for e in train}
    assert not {e.text for e in dev} & train_sentences or \
        len({e.text for e in dev} & train_sentences) < 5  # the sample holds a few duplicate sentences, no more
    originals = task.load("train")
    assert sorted(e.text for e in train + dev) == sorted(e.text for e in originals)
    share = np.mean([e.label for e in originals])
    assert abs(np.mean([e.label for e in dev]) - share) <= 1 / len(dev)  # stratified to within one example
    again = carve_dev_split(task, tmp_path / "b", seed=3, fraction=0.1)
    other = carve_dev_split(task, tmp_path / "c", seed=4, fraction=0.1)
    assert again.dev_ids_sha256 == split.dev_ids_sha256 != other.dev_ids_sha256
    assert dev_size(1000, 0.1) == 200 and dev_size(300, 0.1) == 150 and dev_size(10_000, 0.1) == 1000


def test_promotion_keeps_the_top_third_rounded_up_ties_in_candidate_order():
    scores = {"a": 0.5, "b": 0.9, "c": 0.7, "d": 0.7, "e": 0.1, "f": 0.8, "g": 0.2}
    assert promote(scores, list("abcdefg"), keep=3) == ["b", "f", "c"]
    assert promote(scores, list("abdcefg"), keep=3) == ["b", "f", "d"]


def test_close_calls_at_the_cut_continue_best_first_as_far_as_the_room_goes():
    # One standard error at 0.70 on 100 examples is 0.046: d (0.70) and a (0.66) cannot be told from the cut c.
    scores = {"a": 0.66, "b": 0.9, "c": 0.7, "d": 0.7, "e": 0.64, "f": 0.8, "g": 0.2}
    order = list("abcdefg")
    assert promote(scores, order, keep=3, n_eval=100, room=5) == ["b", "f", "c", "d", "a"]
    assert promote(scores, order, keep=3, n_eval=100, room=1) == ["b", "f", "c", "d"]
    assert promote(scores, order, keep=3, n_eval=100, room=0) == ["b", "f", "c"]
    assert promote(scores, order, keep=3, n_eval=10_000, room=5) == ["b", "f", "c", "d"]  # SE 0.0046


def test_room_for_close_calls_is_what_the_budget_leaves_after_the_rest_of_the_plan():
    plan = plan_rungs(20, 150, eta=3, seeds=2, finalists=2, min_rung=10, budget_steps=1500)
    assert plan.steps == [16, 48, 150] and plan.survivors == [20, 7, 3]
    # After rung 0 (320 steps spent), the plan still owes 7 x 32 + 3 x 102, the finalists' second seeds (2 x 150)
    # and the baseline from step 48 on both seeds (300 - 48): 1402 of 1500, room for 3 more trials of 32 steps.
    assert room_for_close_calls(plan, 0, spent=320, keep=7, baseline_reach=48, seeds=2, finalists=2,
                                budget_steps=1500) == 3
    # After rung 1 (544 spent) with an AdamW trial among the 3 kept, its first seed reaches the horizon: 1300 owed,
    # room for one more trial of 102 steps; with none kept the baseline owes 300 - 48 and there is none.
    assert room_for_close_calls(plan, 1, spent=544, keep=3, baseline_reach=150, seeds=2, finalists=2,
                                budget_steps=1500) == 1
    assert room_for_close_calls(plan, 1, spent=544, keep=3, baseline_reach=48, seeds=2, finalists=2,
                                budget_steps=1500) == 0


def test_rung_plan_matches_the_worked_example():
    plan = plan_rungs(18, 300, eta=3, seeds=3, finalists=2, min_rung=10, budget_steps=int(0.25 * 18 * 300 * 3))
    assert plan.steps == [33, 99, 300] and plan.survivors == [18, 6, 2]
    assert plan.grid_trial_steps == 16_200
    search = 18 * 33 + 6 * 66 + 2 * 201
    assert plan.projected_trial_steps == search + 2 * 2 * 300 + 3 * 300 - 33
    assert plan.budget_met
    generous = plan_rungs(18, 300, eta=3, seeds=3, finalists=2, min_rung=10, budget_steps=16_200)
    assert generous.steps == [300]  # a budget the full grid fits runs the grid: nothing is pruned needlessly


def test_candidates_centre_on_family_defaults_and_record_their_origin(tmp_path):
    settings = tiny_settings(tmp_path, lrs={}, optimizers=["adamw", "lion", "sgd"])
    found = candidates(settings)
    by_optimizer = {}
    for candidate in found:
        by_optimizer.setdefault(candidate.optimizer, []).append(candidate.lr)
    assert by_optimizer["adamw"] == [1e-4, 3.33e-4, 1e-3, 3e-3]
    assert by_optimizer["lion"][2] == 3.33e-4 and by_optimizer["sgd"][2] == 3e-2  # the centres: c/3, 30c
    assert all("family default" in c.lr_origin for c in found)
    assert found[0].optimizer == "adamw"  # the baseline first: ties in rank keep it


def test_guards_exclude_divergence_collapse_and_chance():
    assert exclusion_reason("diverged", [], None, 0.5) == "diverged"
    assert exclusion_reason("done", [1] * 50, 0.6, 0.5) == "constant predictions"  # scores the majority share
    assert "majority-class" in exclusion_reason("done", [0, 1] * 50, 0.52, 0.5)  # within one SE of 0.5 on 100
    assert exclusion_reason("done", [0, 1] * 50, 0.7, 0.5) is None
    assert majority_baseline([0, 1, 1, 1]) == 0.75
    assert binomial_se(0.5, 100) == 0.05


def test_bootstrap_is_paired_and_p_best_sums_to_one():
    rng = np.random.default_rng(0)
    base = rng.integers(0, 2, size=(3, 200))
    better = base.copy()
    better[:, :20] = 1  # the same examples, some wrong ones made right: a paired difference
    correct = {"base": base, "better": better}
    draws = bootstrap_draws(correct)
    delta = difference(draws, correct, "better", "base")
    assert delta["ci95"][0] > 0 and math.isclose(delta["mean"], better.mean() - base.mean())
    shares = probability_best(draws)
    assert math.isclose(sum(shares.values()), 1.0) and shares["better"] > 0.95


@pytest.fixture(scope="module")
def tiny_recommendation(tmp_path_factory):
    """One recommendation run on the tiny setup, the test split's reads counted."""
    root = tmp_path_factory.mktemp("recommend")
    settings = tiny_settings(root)
    test_file = settings.test_source
    reads = []
    original = Task.load

    def counting_load(self, split, source=None, limit=None, seed=0):
        if source == test_file:
            reads.append(split)
        return original(self, split, source, limit, seed)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(Task, "load", counting_load)
        result = recommend(settings)
    return settings, result, reads


def test_the_json_contract_and_the_verdict(tiny_recommendation):
    settings, result, _ = tiny_recommendation
    saved = json.loads((Path(settings.out) / RESULT_FILE).read_text())
    assert saved == json.loads(json.dumps(result))
    assert CONTRACT <= set(result)
    assert result["selected_on"] == "dev" and result["metric"] == "accuracy" and result["steps"] == 27
    for split in ("dev", "test"):
        assert set(result[split]) >= {"mean", "ci95", "seeds"} and result[split]["seeds"] == 2
        low, high = result[split]["ci95"]
        assert low <= result[split]["mean"] <= high
    assert set(result["baseline"]) >= {"optimizer", "lr", "schedule", "dev", "test"}
    assert result["baseline"]["optimizer"] == "adamw"
    assert set(result["cost"]) >= {"trial_steps", "grid_trial_steps", "wall_seconds"}
    assert result["cost"]["grid_trial_steps"] == 5 * 27 * 2
    assert set(result["use_it"]) == {"adamlab", "python", "hf_trainer"}
    assert f"--lr {result['lr']:g}" in result["use_it"]["adamlab"]
    assert verdict_line(result).startswith(f"Use {result['optimizer']} (lr {result['lr']:g}")


def test_test_split_is_read_once_after_selection(tiny_recommendation):
    _, _, reads = tiny_recommendation
    assert reads == ["eval"]


def test_halving_promotes_the_best_on_dev_and_counts_every_step_once(tiny_recommendation):
    settings, result, _ = tiny_recommendation
    runs = read_runs(settings.out)
    assert result["search"]["rungs"] == [9, 27]
    first = [r for r in runs if r.stage == "rung-0"]
    second = [r for r in runs if r.stage == "rung-1"]
    assert len(first) == 5 and len(second) == 2
    eligible = {r.trial: r.dev["accuracy"] for r in first if r.reason is None}
    order = [r.trial for r in sorted(first, key=lambda r: [c.lr for c in candidates(settings)].index(r.candidate["lr"]))]
    # A quarter of this tiny grid is below the plan's own cost, so no close call at the cut gets extra room.
    expected = promote(eligible, order, keep=math.ceil(len(eligible) / 3))
    assert sorted(r.trial for r in second) == sorted(expected)
    assert all(r.steps_run == 18 for r in second)  # continued from step 9, not restarted
    assert result["cost"]["trial_steps"] == sum(r.steps_run for r in runs)
    promoted = {r.trial for r in second}
    assert min(eligible[k] for k in promoted) >= max(v for k, v in eligible.items() if k not in promoted)


def test_with_room_in_the_budget_the_close_calls_at_the_cut_continue_and_the_budget_holds(tmp_path):
    # Three Lion rates that all learn the task quickly, so the cut after the first rung falls between close scores;
    # 215 trial-steps: still too few for the grid without halving (216), room beyond the halving plan's 180.
    settings = tiny_settings(tmp_path, lrs={"adamw": [3e-3, 1e-2], "lion": [1e-3, 2e-3, 3e-3]}, budget=None,
                             budget_steps=215)
    result = recommend(settings)
    runs = read_runs(settings.out)
    first = {r.trial: r for r in runs if r.stage == "rung-0"}
    second = {r.trial for r in runs if r.stage == "rung-1"}
    eligible = {key: r.dev["accuracy"] for key, r in first.items() if r.reason is None}
    keep = min(math.ceil(len(eligible) / 3), result["search"]["survivors"][1])
    ranked = sorted(eligible, key=lambda key: -eligible[key])
    cut = eligible[ranked[keep - 1]]
    extras = second - set(ranked[:keep])
    assert set(ranked[:keep]) <= second and extras  # the top third, and on this data at least one close call
    assert all(cut - binomial_se(cut, result["dev_split"]["n_dev"]) <= eligible[key] <= cut for key in extras)
    assert [len(c["continued"]) for c in result["search"]["close_calls"]] == [len(extras)]
    assert result["cost"]["trial_steps"] <= result["cost"]["budget_trial_steps"]


def test_a_diverging_configuration_is_excluded_and_never_recommended(tiny_recommendation):
    _, result, _ = tiny_recommendation
    diverged = [e for e in result["excluded"] if e["config"]["lr"] == DIVERGING_LR]
    assert diverged and diverged[0]["reason"] == "diverged"
    assert result["lr"] != DIVERGING_LR
    assert all(a["lr"] != DIVERGING_LR for a in result["alternatives"])


def test_a_collapsed_configuration_is_excluded(tmp_path, monkeypatch):
    """Force every prediction of one configuration to one class: it is excluded as constant, never picked."""
    settings = tiny_settings(tmp_path, lrs={"adamw": [3e-3], "lion": [1e-3]}, budget=1.0)
    original = recommend_module.run_trial

    def collapsing(config, show_progress=False):
        outcome = original(config, show_progress)
        if config.optimizer == "lion":
            for prediction in outcome.predictions:
                prediction["prediction"] = 1
        return outcome

    monkeypatch.setattr(recommend_module, "run_trial", collapsing)
    result = recommend(settings)
    assert [e["reason"] for e in result["excluded"]] == ["constant predictions"]
    assert result["optimizer"] == "adamw" and result["alternatives"] == []


def test_spec_file_gives_the_same_settings_and_errors_name_the_line(tmp_path):
    spec = tmp_path / "rec.yaml"
    spec.write_text("mode: recommend\nmodel: tiny-llama\ntask: sst2\nsteps: 27\nseeds: 2\n")
    settings = load_recommend_spec(spec, tmp_path / "out")
    assert (settings.model, settings.steps, settings.seeds) == ("tiny-llama", 27, 2)
    spec.write_text("mode: recommend\nmodel: tiny-llama\ntask: sst2\nsteps: 27\nbogus: 1\n")
    with pytest.raises(ValueError, match=r"line 5: unknown key 'bogus'"):
        load_recommend_spec(spec, tmp_path / "out")
    spec.write_text("mode: recommend\nmodel: tiny-llama\ntask: squad\nsteps: 27\n")
    with pytest.raises(ValueError, match="line 3: .*answer choices"):
        load_recommend_spec(spec, tmp_path / "out")



def test_a_recommend_spec_is_read_as_safely_as_a_study_spec(tmp_path):
    """The alias-bomb guard, the UTF-8 check and strict booleans of study specs hold for recommend specs too."""
    spec = tmp_path / "rec.yaml"
    levels = ['a: &a ["x", "x", "x", "x", "x", "x", "x", "x", "x"]']
    levels += [f"{n}: &{n} [{', '.join(['*' + p] * 9)}]" for p, n in zip("abcde", "bcdef")]
    spec.write_text("mode: recommend\n" + "\n".join(levels) + "\n")
    with pytest.raises(ValueError, match="expands to more than 100,000 values"):
        load_recommend_spec(spec, tmp_path / "out")
    spec.write_bytes(b"mode: recommend\nmodel: tiny-llama\ntask: \xff\n")
    with pytest.raises(ValueError, match=":3: not UTF-8"):
        load_recommend_spec(spec, tmp_path / "out")

def test_suggested_centres_come_from_the_resolver_on_the_training_side(tmp_path):
    settings = tiny_settings(tmp_path, lrs={"lion": [1e-3]}, lr_centre="suggest")
    split = carve_dev_split(get_task("sst2"), tmp_path / "data", seed=0, source=settings.train_source)
    centres = recommend_module.suggested_centres(settings, split, tmp_path / "stepsize")
    assert set(centres) == {"adamw"}
    lr, origin = centres["adamw"]
    assert lr > 0 and origin.startswith("adamlab suggest")
    found = candidates(settings, centres)
    assert [c.lr for c in found if c.optimizer == "adamw"] == [float(f"{lr * m:.3g}") for m in (0.1, 1 / 3, 1, 3)]
    assert all(c.lr_origin.startswith("adamlab suggest") for c in found if c.optimizer == "adamw")


def test_the_report_names_the_close_calls_continued_past_a_cut():
    from adamlab.reports.verdict import close_calls

    calls = [{"rung": 1, "step": 48, "continued": ["adamw lr 0.003 cosine"]}]
    assert close_calls(calls) == "; after step 48 also adamw lr 0.003 cosine (within one standard error of the cut)"
    assert close_calls([]) == ""


def test_report_opens_with_the_verdict_and_its_evidence(tiny_recommendation):
    from adamlab.reports.verdict import write_verdict_report

    settings, result, _ = tiny_recommendation
    written = write_verdict_report(settings.out)
    markdown = written.markdown.read_text()
    assert markdown.splitlines()[2] == f"**{verdict_line(result)}**"
    assert "## Evidence" in markdown and "survival.png" in markdown and written.figures[0].is_file()
    assert "diverged" in markdown  # the excluded configuration, with its reason
    page = written.html.read_text()
    assert page.index(verdict_line(result).split(":")[0]) < page.index("Every run")


def test_cli_bad_input_exits_2_with_one_line(tmp_path):
    from typer.testing import CliRunner

    from adamlab.cli import app

    outcome = CliRunner().invoke(app, ["recommend", "--model", "tiny-llama", "--task", "squad", "--steps", "10",
                                       "--out", str(tmp_path / "r")])
    assert outcome.exit_code == 2
    assert "answer choices" in outcome.output and len(outcome.output.strip().splitlines()) == 1
    outcome = CliRunner().invoke(app, ["recommend", "--model", "tiny-llama", "--task", "sst2", "--steps", "10",
                                       "--optimizers", "lion,yogi", "--out", str(tmp_path / "r")])
    assert outcome.exit_code == 2 and "must include adamw" in outcome.output
    assert not (tmp_path / "r").exists()  # nothing written before the input is known good


def test_adamlab_report_on_a_recommendation_folder_writes_the_verdict_report(tiny_recommendation):
    from typer.testing import CliRunner

    from adamlab.cli import app

    settings, _, _ = tiny_recommendation
    outcome = CliRunner().invoke(app, ["report", settings.out])
    assert outcome.exit_code == 0, outcome.output
    assert (Path(settings.out) / "report" / "report.html").is_file()
