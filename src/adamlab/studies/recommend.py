"""``recommend``: which optimizer, learning rate and schedule to fine-tune with, chosen on a dev split by successive
halving, with confidence intervals, and checked once on the test split.

The protocol (docs/recommend.md has the reasoning):

1. Carve a dev split from the training data (``devsplit``); trials train on the rest and are evaluated on dev.
2. Candidates: optimizers x schedules x learning rates, the rates log-spaced around a centre per optimizer family,
   each recording where it came from.
3. Successive halving with continuation: every candidate trains to the first rung and is evaluated on dev; the top
   ceil(n / eta) of those not excluded by the guards continue from their checkpoint to the next rung, and so on to
   the full horizon. Trials within one standard error of the last one kept (the dev set cannot order them) continue
   too, best first, as far as the budget has room. The schedule always spans the full horizon
   (``TrainConfig.stop_at`` pauses a run, it does not shorten it), so a promoted trial ends bit-identical to an
   uninterrupted run and no step is paid twice.
4. Finalists (the best at the last rung) and the baseline (AdamW at its own best learning rate) are run with more
   seeds; their dev scores get two-level bootstrap intervals, paired differences to the baseline and P(best).
5. The winner is the best finalist on dev, unless its lead over a more standard option is within noise (a tie):
   then the standard one is named. Only then is the test split read, once, for the winner and the baseline.

Every run of every rung is recorded in ``DIR/recommend.sqlite`` as it finishes, so a recommendation killed at any
point continues where it stopped when run again, without redoing finished rungs.

Why the promotion rule is written here rather than taken from Optuna's ``SuccessiveHalvingPruner``: that pruner is
asynchronous (ASHA). It decides each trial against the values other trials reported *before* its own
``should_prune`` call, so driving it rung by rung prunes nothing early on and its result depends on call order
(nine trials reported at one rung and asked in turn: none pruned). The synchronous rule (rank everything at the
rung, keep the top ceil(n / eta) and the close calls the budget pays for) is a few lines; Ray Tune's synchronous
``HyperBandScheduler`` runs several brackets (not one halving) and would need every trial rewritten as a Tune
trainable with Tune's own checkpointing, replacing adamlab's executors.
"""

from __future__ import annotations

import json
import math
import sqlite3
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from ..evaluation import evaluate
from ..models import LoraSettings, load_model
from ..optim.registry import REGISTRY, resolve_name
from ..tasks import get_task
from ..tasks.base import Example, Task
from ..training import TrainConfig
from ..training.lr_source import LRSource, format_lr, resolve_lr
from .confidence import bootstrap_draws, binomial_se, difference, interval, probability_best
from .devsplit import DevSplit, carve_dev_split
from .executors import get_executor, run_trial
from .guards import exclusion_reason, majority_baseline
from .spec import read_spec_document
from .store import TrialOutcome
from .trials import trial_key

RESULT_FILE = "recommendation.json"
RUNS_FILE = "recommend.sqlite"
BASELINE = "adamw"
DEFAULT_OPTIMIZERS = ("adamw", "adabelief", "lion", "yogi", "sgd")
LR_MULTIPLES = (1 / 10, 1 / 3, 1.0, 3.0)  # around the centre, log-spaced
# The more standard an optimizer, the earlier here: in a tie it is the one named.
STANDARD_ORDER = ("adamw", "adam", "sgd")
LR_CENTRES = ("family", "suggest")

# Family centres for LoRA fine-tuning when adamlab has no suggestion for the optimizer: (lr, why).
ADAM_CENTRE = 1e-3
FAMILY_CENTRES: dict[str, tuple[float, str]] = {
    "lion": (ADAM_CENTRE / 3, "Lion: sign updates are larger, so 3-10x below AdamW (Chen et al. 2023)"),
    "sgd": (30 * ADAM_CENTRE, "SGD with momentum 0.9: 10-100x AdamW's rate"),
    "yogi": (10 * ADAM_CENTRE, "Yogi: its eps of 1e-3 damps small gradients, so 10x AdamW's rate"),
    "adagrad": (10 * ADAM_CENTRE, "Adagrad: its accumulated denominator shrinks steps, so 10x AdamW's rate"),
}
# adafactor_hf is searched in its lr-free mode (relative_step: step size min(1e-2, 1/sqrt(t))), as T5 runs it, but
# without scale_parameter (the step times each parameter's RMS, floored at 1e-3: LoRA's B starts at zero, so its
# steps would shrink 1000-fold) or warmup_init (a ramp of 1e-6 per step, ~10^4 steps, past recommend's horizons).
FAMILY_ARGS: dict[str, dict[str, Any]] = {"sgd": {"momentum": 0.9}, "adafactor_hf": {"relative_step": True}}
OWN_LR_ORIGIN = "optimizer's own"  # a candidate whose optimizer computes its own step size: lr None, no grid


class NothingToRecommend(RuntimeError):
    """Every configuration that reached the end was excluded by the guards."""


@dataclass(frozen=True, eq=False)  # compared by identity: a recommendation builds its candidates once
class Candidate:
    optimizer: str
    lr: float | None  # None: the optimizer computes its own step size
    schedule: str
    lr_origin: str
    optimizer_args: dict[str, Any] = field(default_factory=dict)

    @property
    def label(self) -> str:
        return f"{self.optimizer} lr {format_lr(self.lr, '.3g')} {self.schedule}"

    def to_dict(self) -> dict[str, Any]:
        return {"optimizer": self.optimizer, "lr": self.lr, "schedule": self.schedule, "lr_origin": self.lr_origin,
                "hparams": dict(self.optimizer_args)}


@dataclass
class RecommendSettings:
    """What to recommend for. ``train_args`` go to every trial's ``TrainConfig`` (batch_size, max_seq_len, lora,
    warmup_steps, eval_batch_size, checkpoint_every, ...)."""

    model: str
    task: str
    steps: int
    out: str
    optimizers: list[str] = field(default_factory=lambda: list(DEFAULT_OPTIMIZERS))
    schedules: list[str] = field(default_factory=lambda: ["cosine"])
    lrs: dict[str, list[float]] = field(default_factory=dict)  # explicit candidates for some optimizers
    lr_centre: str = "family"  # or "suggest": centre each optimizer's candidates on adamlab's suggestion
    budget: float | None = 0.25  # share of the grid's trial-steps; None with budget_steps
    budget_steps: int | None = None
    seeds: int = 3  # each finalist's and the baseline's seeds
    finalists: int = 2
    eta: int = 3
    min_rung_steps: int = 10
    dev_fraction: float = 0.1
    seed: int = 0
    task_args: dict[str, Any] = field(default_factory=dict)
    train_source: str | None = None
    test_source: str | None = None
    test_limit: int | None = None
    train_args: dict[str, Any] = field(default_factory=dict)
    executor: str = "local"
    workers: int | None = None
    address: str | None = None

    def validate(self) -> None:
        task = get_task(self.task, **self.task_args)
        if not task.answer_choices:
            raise ValueError(f"recommend ranks by accuracy, so it needs a task with answer choices; {task.name!r} has "
                             "none (classification or multiple-choice tasks: ag_news, sst2, commonsenseqa)")
        for name in ("steps", "seeds", "finalists", "min_rung_steps"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be an int >= 1, got {value!r}")
        if isinstance(self.eta, bool) or not isinstance(self.eta, int) or self.eta < 2:
            raise ValueError(f"eta must be an int >= 2, got {self.eta!r}")
        if (self.budget is None) == (self.budget_steps is None):
            raise ValueError("give exactly one of budget (a share of the grid) and budget_steps")
        if self.budget is not None and not 0 < self.budget <= 1:
            raise ValueError(f"budget must be a share of the grid in (0, 1], got {self.budget!r}")
        if self.budget_steps is not None and self.budget_steps < 1:
            raise ValueError(f"budget_steps must be >= 1, got {self.budget_steps!r}")
        if self.lr_centre not in LR_CENTRES:
            raise ValueError(f"lr_centre must be one of {', '.join(LR_CENTRES)}; got {self.lr_centre!r}")
        if not self.optimizers or not self.schedules:
            raise ValueError("give at least one optimizer and one schedule")
        unknown = sorted(set(self.lrs) - set(self.optimizers))
        if unknown:
            raise ValueError(f"learning rates given for optimizers not searched: {', '.join(unknown)}")
        own = sorted(name for name in self.lrs if computes_own_lr(name))
        if own:
            raise ValueError(f"{', '.join(own)} computes its own step size here ({OWN_LR_ORIGIN}): give it no "
                             "learning rates")
        if BASELINE not in [resolve_name(name) for name in self.optimizers]:
            raise ValueError(f"the optimizers must include {BASELINE}: it is the baseline every verdict compares to")
        for candidate in candidates(self):
            self.trial_config(candidate, self.seed, "").validate()

    def trial_config(self, candidate: Candidate, seed: int, out: str, stop_at: int | None = None,
                     train_source: str | None = None, dev_source: str | None = None) -> TrainConfig:
        args = dict(self.train_args)
        if candidate.lr is None:  # the optimizer schedules its own step size: no warmup, and no lr to scale
            for name in ("warmup_steps", "lr_scaling", "base_batch_size"):
                args.pop(name, None)
        if isinstance(args.get("lora"), dict):
            args["lora"] = LoraSettings(**args["lora"])
        return TrainConfig(model=self.model, task=self.task, out=out, task_args=self.task_args,
                           optimizer=candidate.optimizer, lr=candidate.lr, optimizer_args=candidate.optimizer_args,
                           schedule=candidate.schedule, steps=self.steps, stop_at=stop_at, seed=seed,
                           train_source=train_source or self.train_source, eval_source=dev_source, **args)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def lr_centre(optimizer: str) -> tuple[float, str]:
    """The centre of an optimizer's learning-rate candidates and where it comes from."""
    name = resolve_name(optimizer)
    if name in FAMILY_CENTRES:
        lr, why = FAMILY_CENTRES[name]
        return lr, f"family default {lr:.3g} ({why})"
    return ADAM_CENTRE, f"family default {ADAM_CENTRE:g} (Adam-type optimizer, LoRA fine-tuning)"


def computes_own_lr(optimizer: str) -> bool:
    """Whether recommend searches ``optimizer`` in a mode that computes its own step size (the registry decides,
    for its FAMILY_ARGS): it is then one candidate with no learning rate to search."""
    entry = REGISTRY.get(resolve_name(optimizer))
    return entry is not None and entry.computes_own_lr(FAMILY_ARGS.get(resolve_name(optimizer), {}))


def candidates(settings: RecommendSettings, centres: dict[str, tuple[float, str]] | None = None) -> list[Candidate]:
    """Every configuration searched, the baseline's first (so a tie in rank keeps the standard option).
    ``centres``: per optimizer, a centre other than the family default (adamlab's suggestion) and its origin."""
    ordered = sorted(settings.optimizers, key=lambda name: resolve_name(name) != BASELINE)
    found = []
    for optimizer in ordered:
        args = FAMILY_ARGS.get(resolve_name(optimizer), {})
        if computes_own_lr(optimizer):  # one candidate, on the constant schedule its own step size runs under
            found.append(Candidate(optimizer, None, "constant", OWN_LR_ORIGIN, dict(args)))
            continue
        if optimizer in settings.lrs:
            rates = [(float(lr), "given") for lr in settings.lrs[optimizer]]
        else:
            centre, origin = (centres or {}).get(optimizer) or lr_centre(optimizer)
            rates = [(float(f"{centre * m:.3g}"), f"{origin} x {m:.3g}") for m in LR_MULTIPLES]
        for schedule in settings.schedules:
            found += [Candidate(optimizer, lr, schedule, origin, dict(args)) for lr, origin in rates]
    return found


def suggested_centres(settings: RecommendSettings, split: DevSplit, folder: Path) -> dict[str, tuple[float, str]]:
    """adamlab's suggested learning rate for each optimizer without explicit candidates, estimated on the training
    side of the split (never on dev) through the learning-rate resolver, cached in ``folder``."""
    centres = {}
    for optimizer in settings.optimizers:
        if optimizer in settings.lrs or computes_own_lr(optimizer):
            continue
        family_lr, _ = lr_centre(optimizer)
        probe = Candidate(optimizer, family_lr, settings.schedules[0], "", FAMILY_ARGS.get(resolve_name(optimizer), {}))
        config = settings.trial_config(probe, settings.seed, "", train_source=split.train_file)
        lr, resolution = resolve_lr(config, LRSource("suggest"), cache=folder / f"{resolve_name(optimizer)}.json")
        centres[optimizer] = (float(f"{lr:.3g}"), f"adamlab suggest ({resolution.method}) {lr:.3g}")
    return centres


# ---------------------------------------------------------------------------------------------- the rung plan


@dataclass(frozen=True)
class RungPlan:
    steps: list[int]  # the step each rung ends at; the last is the full horizon
    survivors: list[int]  # configurations that train to each rung
    projected_trial_steps: int
    grid_trial_steps: int
    budget_met: bool


def plan_rungs(n: int, horizon: int, eta: int, seeds: int, finalists: int, min_rung: int,
               budget_steps: int) -> RungPlan:
    """The fewest halving rounds whose projected cost fits ``budget_steps``; where none does, as many rounds as
    the minimum rung length and the number of finalists allow. Rungs end at r0 * eta^k (r0 = horizon // eta^K),
    the last at the horizon. Projected cost counts every step once (promoted trials continue), the finalists' extra
    seeds, and the baseline run to the horizon on every seed in case it was stopped at the first rung."""
    grid = n * horizon * seeds
    options = []
    rounds = 0
    while True:
        first = horizon // eta**rounds
        survivors = [n]
        for _ in range(rounds):
            survivors.append(math.ceil(survivors[-1] / eta))
        if rounds and (first < min_rung or survivors[-1] < min(finalists, n) or survivors[-2] == survivors[-1]):
            break
        steps = [first * eta**k for k in range(rounds)] + [horizon]
        search = sum(count * (end - start) for count, start, end in zip(survivors, [0, *steps[:-1]], steps))
        kept = min(finalists, survivors[-1])
        cost = search + kept * (seeds - 1) * horizon + seeds * horizon - steps[0]
        options.append(RungPlan(steps, survivors, cost, grid, cost <= budget_steps))
        rounds += 1
    fitting = [plan for plan in options if plan.budget_met]
    return fitting[0] if fitting else options[-1]


def promote(scores: dict[str, float], order: Sequence[str], keep: int, n_eval: int | None = None,
            room: int = 0) -> list[str]:
    """Synchronous successive halving: the top ``keep`` of the ``scores`` (keys: trials not excluded), ties broken by
    ``order`` (the candidate order, baseline first); then, best first and at most ``room`` of them, the trials whose
    score is within one standard error (``n_eval`` examples) of the last one kept. A cut between scores the dev set
    cannot tell apart is a coin toss, and the configuration it drops may be the one that rises most by the end."""
    position = {key: index for index, key in enumerate(order)}
    ranked = sorted(scores, key=lambda key: (-scores[key], position[key]))
    kept = ranked[:keep]
    if not kept or not n_eval or room < 1:
        return kept
    cut = scores[kept[-1]]
    close = [key for key in ranked[keep:] if scores[key] >= cut - binomial_se(cut, n_eval)]
    return kept + close[:room]


def room_for_close_calls(plan: RungPlan, rung: int, spent: int, keep: int, baseline_reach: int, seeds: int,
                         finalists: int, budget_steps: int) -> int:
    """How many trials beyond the ``keep`` best the budget lets continue from rung ``rung`` to the next one: the
    steps left after the rest of the plan counted at its most expensive (the planned survivors of the later rungs,
    the finalists' other seeds, the baseline trained from ``baseline_reach`` to the horizon on every seed), over the
    steps one more trial costs to reach the next rung. Later rungs keep their planned counts, so an extra trial
    costs only this segment."""
    horizon = plan.steps[-1]
    segment = plan.steps[rung + 1] - plan.steps[rung]
    later = sum(count * (end - start) for count, start, end in
                zip(plan.survivors[rung + 2:], plan.steps[rung + 1:-1], plan.steps[rung + 2:]))
    confirm = min(finalists, plan.survivors[-1]) * (seeds - 1) * horizon + seeds * horizon - baseline_reach
    return max(budget_steps - (spent + keep * segment + later + confirm), 0) // segment


# ---------------------------------------------------------------------------------------------- the run record


RUNS_SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    trial TEXT NOT NULL,                -- the trial key (TrainConfig identity hash: seed included, stop_at not)
    step INTEGER NOT NULL,              -- where this run stopped: a rung's end, or the horizon
    stage TEXT NOT NULL,                -- rung-<k> | confirm (a finalist's or the baseline's other seeds)
    candidate TEXT NOT NULL,            -- JSON: optimizer, lr, schedule, lr_origin, hparams
    seed INTEGER NOT NULL,
    status TEXT NOT NULL,               -- paused | done | diverged | failed
    steps_run INTEGER NOT NULL,         -- optimizer steps this run added (its cost)
    dev TEXT,                           -- JSON: the dev metrics at this step
    correct TEXT,                       -- JSON: 0/1 per dev example, in dev order
    reason TEXT,                        -- why it is excluded from selection, or NULL
    wall_seconds REAL,
    recorded TEXT NOT NULL,
    PRIMARY KEY (trial, step)
);
"""


@dataclass(frozen=True)
class RunRecord:
    trial: str
    step: int
    stage: str
    candidate: dict[str, Any]
    seed: int
    status: str
    steps_run: int
    dev: dict[str, Any]
    correct: list[int]
    reason: str | None
    wall_seconds: float
    recorded: str


class RunLog:
    """Every run of a recommendation, written as each one finishes (one SQLite transaction each)."""

    def __init__(self, path: Path):
        self.db = sqlite3.connect(path, timeout=60.0, isolation_level=None)
        self.db.row_factory = sqlite3.Row
        self.db.execute("PRAGMA journal_mode = WAL")
        self.db.executescript(RUNS_SCHEMA)

    def close(self) -> None:
        self.db.close()

    def get(self, trial: str, step: int) -> RunRecord | None:
        row = self.db.execute("SELECT * FROM runs WHERE trial = ? AND step = ?", (trial, step)).fetchone()
        return None if row is None else _record(row)

    def latest_step(self, trial: str) -> int:
        row = self.db.execute("SELECT MAX(step) FROM runs WHERE trial = ? AND status = 'paused'", (trial,)).fetchone()
        return row[0] or 0

    def add(self, record: RunRecord) -> None:
        self.db.execute(
            "INSERT OR REPLACE INTO runs VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (record.trial, record.step, record.stage, json.dumps(record.candidate), record.seed, record.status,
             record.steps_run, json.dumps(record.dev), json.dumps(record.correct), record.reason,
             record.wall_seconds, record.recorded))

    def all(self) -> list[RunRecord]:
        return [_record(row) for row in self.db.execute("SELECT * FROM runs ORDER BY recorded, trial, step")]


def _record(row: sqlite3.Row) -> RunRecord:
    return RunRecord(row["trial"], row["step"], row["stage"], json.loads(row["candidate"]), row["seed"],
                     row["status"], row["steps_run"], json.loads(row["dev"] or "{}"), json.loads(row["correct"] or "[]"),
                     row["reason"], row["wall_seconds"], row["recorded"])


def read_runs(out: str | Path) -> list[RunRecord]:
    """Every run recorded in a recommendation folder (for reports)."""
    log = RunLog(Path(out) / RUNS_FILE)
    try:
        return log.all()
    finally:
        log.close()


# ---------------------------------------------------------------------------------------------- running


class _Runner:
    """Runs a batch of trial configs on the chosen executor and hands each outcome back as it arrives."""

    def __init__(self, settings: RecommendSettings):
        self.settings = settings
        self.pool = None
        if settings.executor != "local" or (settings.workers or 1) > 1:
            self.pool = get_executor(settings.executor, workers=settings.workers, address=settings.address)

    def run(self, configs: list[TrainConfig], done: Callable[[TrainConfig, TrialOutcome], None]) -> None:
        if self.pool is None:  # one at a time in this process
            for config in configs:
                done(config, run_trial(config))
            return
        slots = self.pool.open()
        running: dict[Any, TrainConfig] = {}
        queue = list(configs)
        while queue or running:
            while queue and len(running) < slots:
                config = queue.pop(0)
                running[self.pool.start(config)] = config
            for handle in self.pool.wait(list(running)):
                done(running.pop(handle), self.pool.result(handle))

    def close(self) -> None:
        if self.pool is not None:
            self.pool.close()


def correctness(task: Task, predictions: list[dict[str, Any]], examples: Sequence[Example]) -> list[int]:
    """1 where a prediction is the gold answer, per example, in order; unparseable predictions are wrong."""
    by_id = {str(p["id"]): p for p in predictions}
    marks = []
    for example in examples:
        predicted = by_id.get(str(example.id), {}).get("prediction")
        marks.append(int(predicted is not None and predicted == example.label))
    return marks


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


def recommend(settings: RecommendSettings, *, log: Callable[[str], None] = lambda message: None) -> dict[str, Any]:
    """Run the whole protocol into ``settings.out`` and return the recommendation (also written as
    ``recommendation.json`` there). Run it again on the same folder to continue after an interruption."""
    started = time.perf_counter()
    settings.validate()
    out = Path(settings.out)
    out.mkdir(parents=True, exist_ok=True)
    saved_settings = out / "settings.json"
    if saved_settings.exists() and json.loads(saved_settings.read_text()) != json.loads(json.dumps(settings.to_dict())):
        previous = json.loads(saved_settings.read_text())
        differing = sorted(k for k, v in settings.to_dict().items() if previous.get(k) != json.loads(json.dumps(v)))
        if set(differing) - {"executor", "workers", "address"}:
            raise ValueError(f"{out} holds a recommendation with other settings (differs in {', '.join(differing)}); "
                             "use another --out or delete it")
    saved_settings.write_text(json.dumps(settings.to_dict(), indent=2))

    task = get_task(settings.task, **settings.task_args)
    split = carve_dev_split(task, out / "data", seed=settings.seed, fraction=settings.dev_fraction,
                            source=settings.train_source)
    dev_examples = task.load("eval", split.dev_file)
    baseline_score = majority_baseline([e.label for e in dev_examples])
    centres = suggested_centres(settings, split, out / "stepsize") if settings.lr_centre == "suggest" else None
    pool = candidates(settings, centres)
    budget_steps = settings.budget_steps or int(settings.budget * len(pool) * settings.steps * settings.seeds)
    plan = plan_rungs(len(pool), settings.steps, settings.eta, settings.seeds, settings.finalists,
                      settings.min_rung_steps, budget_steps)
    log(f"{len(pool)} configurations, rungs at steps {plan.steps} (survivors {plan.survivors}); dev split "
        f"{split.n_dev} examples, majority baseline {baseline_score:.3f}")

    def key_of(candidate: Candidate, seed: int) -> str:
        return trial_key(settings.trial_config(candidate, seed, "", train_source=split.train_file,
                                               dev_source=split.dev_file))

    runs = RunLog(out / RUNS_FILE)
    runner = _Runner(settings)
    try:
        def run_stage(stage: str, jobs: list[tuple[Candidate, int]], stop: int) -> dict[str, RunRecord]:
            """Train each (candidate, seed) to ``stop`` (continuing from where it paused) unless already recorded."""
            records, configs, meta, flags = {}, [], {}, {}
            for candidate, seed in jobs:
                key = key_of(candidate, seed)
                recorded = runs.get(key, stop)
                if recorded is not None:
                    records[key] = recorded
                    continue
                config = settings.trial_config(candidate, seed, str(out / "trials" / key),
                                               None if stop == settings.steps else stop, split.train_file,
                                               split.dev_file)
                config.checkpoint_every = min(config.checkpoint_every, stop)
                configs.append(config)
                meta[config.out] = (key, candidate, seed, runs.latest_step(key))

            def finished(config: TrainConfig, outcome: TrialOutcome) -> None:
                key, candidate, seed, start = meta[config.out]
                metrics = (outcome.record or {}).get("metrics", {})
                score = metrics.get("accuracy")
                predicted = [p.get("prediction") for p in outcome.predictions]
                reason = exclusion_reason(outcome.status, predicted, score, baseline_score, outcome.error)
                if stop < settings.steps and outcome.status == "paused" and reason is not None:
                    # Early rungs only drop runs that broke: a run can sit at the majority class for its first
                    # steps and recover, and the ranking already sends it down. The guards apply in full at the end.
                    flags[key] = reason
                    metrics = {**metrics, "flagged": reason}  # shown in the report, not used to select
                    reason = None
                record = RunRecord(key, stop, stage, candidate.to_dict(), seed, outcome.status,
                                   max(outcome.steps_completed - start, 0), metrics,
                                   correctness(task, outcome.predictions, dev_examples) if predicted else [],
                                   reason, outcome.wall_seconds, _now())
                runs.add(record)
                records[key] = record
                shown = f"{score:.3f}" if isinstance(score, float) else outcome.status
                note = f" (excluded: {reason})" if reason else f" (flagged: {flags[key]})" if key in flags else ""
                log(f"  {stage} {candidate.label} seed {seed}: dev accuracy {shown}{note}")

            runner.run(configs, finished)
            return records

        # Successive halving on the study seed.
        adamw = [c for c in pool if resolve_name(c.optimizer) == BASELINE]
        alive = pool
        reached: dict[Candidate, RunRecord] = {}
        close_calls: list[dict[str, Any]] = []  # trials continued beyond the top 1/eta, per rung
        for rung, stop in enumerate(plan.steps):
            records = run_stage(f"rung-{rung}", [(c, settings.seed) for c in alive], stop)
            for candidate in alive:
                reached[candidate] = records[key_of(candidate, settings.seed)]
            eligible = {c: reached[c].dev["accuracy"] for c in alive if reached[c].reason is None}
            if rung < len(plan.steps) - 1:
                keep = min(math.ceil(len(eligible) / settings.eta), plan.survivors[rung + 1])
                kept = promote(eligible, pool, keep)
                # How far the baseline's first seed will have trained: its confirmation pays the rest.
                reach = max((plan.steps[rung + 1] if c in kept else reached[c].step if reached[c].reason is None
                             else 0) for c in adamw)
                room = room_for_close_calls(plan, rung, sum(r.steps_run for r in runs.all()), keep, reach,
                                            settings.seeds, settings.finalists, budget_steps)
                alive = promote(eligible, pool, keep, split.n_dev, room)
                if len(alive) > keep:
                    close_calls.append({"rung": rung, "step": stop, "continued": [c.label for c in alive[keep:]]})
                    log(f"  also continuing, within one standard error of the cut: "
                        f"{', '.join(c.label for c in alive[keep:])}")
                alive.sort(key=pool.index)
        final_scores = {c: reached[c].dev["accuracy"] for c in alive if reached[c].reason is None}
        finalists = sorted(final_scores, key=lambda c: (-final_scores[c], pool.index(c)))[: settings.finalists]

        # The baseline: AdamW at its own best learning rate, judged where it got furthest.
        baseline = max(adamw, key=lambda c: (reached[c].reason is None, reached[c].step,
                                             reached[c].dev.get("accuracy") or 0.0, -pool.index(c)))
        confirm = finalists + ([baseline] if baseline not in finalists else [])
        seeds = [settings.seed + i for i in range(settings.seeds)]
        run_stage("confirm", [(c, s) for c in confirm for s in seeds], settings.steps)
        full = {c: [runs.get(key_of(c, s), settings.steps) for s in seeds] for c in confirm}

        # Guards over every seed; then confidence on dev for what remains.
        excluded = []
        for candidate, record in reached.items():
            if record.reason is not None:
                excluded.append({"config": candidate.to_dict(), "reason": record.reason, "step": record.step,
                                 "seed": record.seed})
        usable = {}
        for candidate in confirm:
            reasons = [r.reason for r in full[candidate] if r is not None and r.reason is not None]
            finished_seeds = sum(r is not None and r.reason is None for r in full[candidate])
            if reasons or finished_seeds < settings.seeds:
                reason = reasons[0] if reasons else f"only {finished_seeds} of {settings.seeds} seeds finished"
                if all(e["config"] != candidate.to_dict() for e in excluded):
                    excluded.append({"config": candidate.to_dict(), "reason": reason, "step": settings.steps,
                                     "seed": None})
                continue
            usable[candidate] = np.array([r.correct for r in full[candidate]])
        if not usable:
            raise NothingToRecommend("the finalists and the baseline were all excluded by the guards: nothing can be "
                               "recommended "
                               f"(see {out / RUNS_FILE}); try other learning rates or more steps")
        names = {c: c.label for c in usable}
        correct = {names[c]: m for c, m in usable.items()}
        draws = bootstrap_draws(correct, seed=settings.seed)
        p_best = probability_best(draws)
        # The baseline competes too: a finalist whose lead over AdamW is within noise is a tie, and AdamW is named.
        ranked = sorted(usable, key=lambda c: (-usable[c].mean(), pool.index(c)))
        winner, tied = _pick(ranked, draws, correct, names)
        has_baseline = baseline in usable

        # The test split: read once, now, for the winner and the baseline only.
        test_examples = task.load("eval", settings.test_source, settings.test_limit)
        tested = {}
        for candidate in [winner] + ([baseline] if has_baseline and baseline != winner else []):
            tested[candidate] = np.array([score_on_examples(out / "trials" / key_of(candidate, s), task,
                                                            test_examples) for s in seeds])
        test_draws = bootstrap_draws({names[c]: m for c, m in tested.items()}, seed=settings.seed)
    finally:
        runner.close()
        all_runs = runs.all()
        runs.close()

    def dev_summary(candidate: Candidate) -> dict[str, Any]:
        return interval(correct[names[candidate]], draws[names[candidate]]).to_dict()

    def test_summary(candidate: Candidate) -> dict[str, Any]:
        summary = interval(tested[candidate], test_draws[names[candidate]]).to_dict()
        return {**summary, "n_examples": len(test_examples), "se": binomial_se(summary["mean"], len(test_examples))}

    trial_steps = sum(r.steps_run for r in all_runs)
    recommendation = {
        "model": settings.model, "task": task.name, "metric": "accuracy", "selected_on": "dev",
        "optimizer": winner.optimizer, "hparams": winner.optimizer_args, "lr": winner.lr,
        "lr_origin": winner.lr_origin, "schedule": winner.schedule, "steps": settings.steps,
        "dev": {**dev_summary(winner), "n_examples": split.n_dev},
        "test": test_summary(winner),
        "baseline": ({"optimizer": baseline.optimizer, "lr": baseline.lr, "schedule": baseline.schedule,
                      "dev": dev_summary(baseline), "test": test_summary(baseline)} if has_baseline
                     else {"optimizer": baseline.optimizer, "lr": baseline.lr, "schedule": baseline.schedule,
                           "excluded": True}),
        "p_best": p_best[names[winner]],
        "delta_vs_baseline": (difference(draws, correct, names[winner], names[baseline]) if has_baseline
                              else None),
        "tie": [c.label for c in tied],
        "cost": {"trial_steps": trial_steps, "grid_trial_steps": plan.grid_trial_steps,
                 "share_of_grid": trial_steps / plan.grid_trial_steps,
                 "wall_seconds": time.perf_counter() - started,  # this invocation's; a resumed one is shorter
                 "trial_seconds": sum(r.wall_seconds or 0.0 for r in all_runs),  # every run, over all invocations
                 "budget_trial_steps": budget_steps,
                 "budget_met": trial_steps <= budget_steps},
        "alternatives": [{**c.to_dict(), "dev": dev_summary(c), "p_best": p_best[names[c]],
                          "delta_vs_baseline": (difference(draws, correct, names[c], names[baseline])
                                                if has_baseline else None)}
                         for c in sorted(usable, key=lambda c: -usable[c].mean()) if c != winner],
        "excluded": excluded,
        "search": {"configurations": len(pool), "eta": settings.eta, "rungs": plan.steps,
                   "survivors": plan.survivors, "close_calls": close_calls,
                   "finalists": [c.label for c in finalists],
                   "candidates": [c.to_dict() for c in pool]},
        "dev_split": split.to_dict(),
        "majority_baseline": {"dev": baseline_score, "se": binomial_se(baseline_score, split.n_dev),
                              "test": majority_baseline([e.label for e in test_examples])},
        "use_it": use_it(settings, winner),
    }
    temporary = out / (RESULT_FILE + ".tmp")
    temporary.write_text(json.dumps(recommendation, indent=2))
    temporary.replace(out / RESULT_FILE)
    return recommendation


def _pick(ranked: list[Candidate], draws, correct, names) -> tuple[Candidate, list[Candidate]]:
    """The best confirmed configuration on dev (finalists and baseline), unless a more standard one is tied with
    it (the interval of their difference contains 0): then the most standard of the tied ones. Returns the pick and
    who it is tied with."""
    best = ranked[0]
    tied = [c for c in ranked[1:] if difference(draws, correct, names[best], names[c])["ci95"][0] <= 0]
    if not tied:
        return best, []

    def standard(candidate: Candidate) -> int:
        name = resolve_name(candidate.optimizer)
        return STANDARD_ORDER.index(name) if name in STANDARD_ORDER else len(STANDARD_ORDER)

    group = [best, *tied]
    pick = min(group, key=lambda c: (standard(c), ranked.index(c)))
    return pick, [c for c in group if c != pick]


def score_on_examples(run: Path, task: Task, examples: list[Example]) -> list[int]:
    """Load a finished run's trained weights and mark each of ``examples`` right (1) or wrong (0)."""
    config = TrainConfig.from_dict(json.loads((run / "config.json").read_text()))
    # The seed rebuilds the parts the run did not train and did not save: a tiny model's random base weights.
    loaded = load_model(config.model, num_labels=task.num_labels, dtype=config.dtype,
                        seed=config.seed)
    if (run / "adapter").is_dir():
        from peft import PeftModel  # peft is imported only where adapters are loaded: it is slow to import

        with warnings.catch_warnings():  # peft reads an attribute transformers deprecated; nothing to change here
            warnings.filterwarnings("ignore", message="`is_gradient_checkpointing` is deprecated", category=FutureWarning)
            model = PeftModel.from_pretrained(loaded.model, run / "adapter")
    else:
        model = type(loaded.model).from_pretrained(run / "model")
    result = evaluate(model, loaded.tokenizer, loaded.head, task, examples, mode=config.eval_mode,
                      batch_size=config.eval_batch_size, max_seq_len=config.max_seq_len)
    return correctness(task, result.predictions, examples)


def use_it(settings: RecommendSettings, winner: Candidate) -> dict[str, str]:
    """How to train with the recommendation: the adamlab command, the Python call, Hugging Face Trainer
    arguments."""
    opts = "".join(f" --opt {k}={v}" for k, v in winner.optimizer_args.items())
    hparams = "".join(f", {k}={v!r}" for k, v in winner.optimizer_args.items())
    hf_names = {"adamw": "adamw_torch", "lion": "lion_32bit", "adafactor": "adafactor", "sgd": "sgd"}
    scheduler = {"cosine": "cosine", "constant": "constant", "linear": "linear"}.get(winner.schedule, winner.schedule)
    name = resolve_name(winner.optimizer)
    if winner.lr is None:  # the optimizer computes its own step size: no lr, and its own scheduler reports it
        scheduler_class = REGISTRY[name].own_lr_scheduler.split(":")[1]
        hf = (f"Trainer(..., optimizers=(optimizer := create_optimizer({winner.optimizer!r}, model{hparams}), "
              f"{scheduler_class}(optimizer)), args=TrainingArguments(max_steps={settings.steps}))")
    elif name in hf_names:
        hf = (f"TrainingArguments(optim={hf_names[name]!r}, learning_rate={winner.lr:g}, "
              f"lr_scheduler_type={scheduler!r}, max_steps={settings.steps})")
    else:
        hf = (f"Trainer(..., optimizers=(create_optimizer({winner.optimizer!r}, model, lr={winner.lr:g}{hparams}), "
              f"None), args=TrainingArguments(lr_scheduler_type={scheduler!r}, max_steps={settings.steps}))")
    lr_option = "" if winner.lr is None else f" --lr {winner.lr:g}"
    lr_arg = "" if winner.lr is None else f", lr={winner.lr:g}"
    return {
        "adamlab": (f"adamlab train --model {settings.model} --task {settings.task} --optimizer {winner.optimizer}"
                    f"{lr_option}{opts} --schedule {winner.schedule} --steps {settings.steps} --out runs/best"),
        "python": f"create_optimizer({winner.optimizer!r}, model{lr_arg}{hparams})",
        "hf_trainer": hf,
    }


def verdict_line(recommendation: dict[str, Any]) -> str:
    """The one line a person can act on."""
    r = recommendation
    dev, test, cost = r["dev"], r["test"], r["cost"]
    line = (f"Use {r['optimizer']} (lr {format_lr(r['lr'])}, {r['schedule']}): dev {r['metric']} {dev['mean']:.3f} "
            f"[{dev['ci95'][0]:.3f}, {dev['ci95'][1]:.3f}]")
    delta = r.get("delta_vs_baseline")
    if delta is not None and r["optimizer"] != r["baseline"]["optimizer"]:
        line += (f", {100 * delta['mean']:+.1f} points over AdamW (lr {r['baseline']['lr']:g}) "
                 f"[{100 * delta['ci95'][0]:+.1f}, {100 * delta['ci95'][1]:+.1f}]")
    if r.get("tie"):
        line += f"; tied with {', '.join(r['tie'])} (within noise: the more standard option is named)"
    line += (f"; test {test['mean']:.3f} [{test['ci95'][0]:.3f}, {test['ci95'][1]:.3f}]. Cost: "
             f"{100 * cost['share_of_grid']:.0f}% of the full grid ({cost['trial_steps']:,} of "
             f"{cost['grid_trial_steps']:,} trial-steps).")
    return line


# ---------------------------------------------------------------------------------------------- study specs


SPEC_KEYS = {f.name for f in RecommendSettings.__dataclass_fields__.values()} - {"out", "executor", "workers",
                                                                                  "address"}


def load_recommend_spec(path: str | Path, out: str | Path) -> RecommendSettings:
    """A recommendation from a YAML spec with ``mode: recommend`` and the keys of ``RecommendSettings``; an error
    names the file and the key's line."""
    data, locations = read_spec_document(path)  # UTF-8, alias bombs refused, lines kept
    path = locations.file
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a mapping of settings")
    lines = {key[0]: line for key, line in locations.lines.items() if len(key) == 1}
    if data.get("mode") != "recommend":
        raise ValueError(f"{path}, line {lines.get('mode', 1)}: a recommendation spec needs `mode: recommend`")
    data = {k: v for k, v in data.items() if k not in ("mode", "name", "description")}
    unknown = sorted(set(data) - SPEC_KEYS)
    if unknown:
        raise ValueError(f"{path}, line {lines[unknown[0]]}: unknown key {unknown[0]!r}; valid keys: "
                         f"{', '.join(sorted(SPEC_KEYS))}")
    for key in ("model", "task", "steps"):
        if key not in data:
            raise ValueError(f"{path}: missing key {key!r}")
    settings = RecommendSettings(out=str(out), **data)
    try:
        settings.validate()
    except (ValueError, TypeError, LookupError) as error:
        named = [key for key in data if key in str(error)]
        line = lines[named[0]] if named else 1
        raise ValueError(f"{path}, line {line}: {error}") from None
    return settings
