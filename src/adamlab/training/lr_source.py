"""Where a run's learning rate comes from: one resolver for ``train``, ``adamlab lr``, studies and recommend.

A learning-rate source is written as

* a number: that learning rate (``3e-4``);
* ``<method>`` or ``<method> x<multiplier>``: ``multiplier`` times the learning rate the method estimates for this
  run (``dds x0.5``, ``range-test``, ``suggest x2``). A study may list several multiples of one estimate:
  ``dds x0.5, x1, x2``.

Methods (``LR_METHODS``), each run on the trial's own model, LoRA initialisation, training data and loss:

* ``dds``: the AdamDDS step size alpha = sqrt(2 L0 / (K T)), T = the run's steps (``adamlab.stepsize``);
* ``range-test``: Smith's learning-rate range test with the run's optimizer, the steepest descent point;
* ``suggest``: adamlab's suggestion for the run's optimizer, a fraction of its edge-of-stability bound;
* ``aeos``, ``dds-one``, ``dds-warm``, ``range-test-min10``: the other estimators the suggestion was chosen among
  (``adamlab.stepsize.suggest``, docs/lr_suggestion.md).

Adding a method is one call at import time, the registration point:

    register_lr_method(LRMethod("aeos", "Adam's adaptive edge of stability bound", estimate_fn, lr_of=...))

where ``estimate_fn(config, inputs, progress, **options)`` returns the estimate's JSON record and ``lr_of(record)``
reads the learning rate at multiplier 1 from it. ``suggest`` may be registered again to point at a better
estimator (``replace=True``).

An estimate is made once and cached as JSON: in a run folder as ``stepsize.json`` (``dds``) or
``stepsize-<method>.json``, in a study folder as ``stepsize/<key>.json`` (``dds``) or ``stepsize/<key>.<method>.json``,
where key is the estimation configuration's trial key. A resumed run or sweep reads it back instead of estimating
again, and ``pending_estimates`` tells, without loading any model, which estimates are still to be made.
"""

from __future__ import annotations

import contextlib
import difflib
import json
import math
import os
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from ..models import SCRATCH_MODELS
from ..optim import create_optimizer
from ..stepsize import lr_range_test
from ..stepsize.suggest import SUGGESTION_METHODS, MethodSettings, suggest_lr
from .config import TrainConfig
from .estimates import estimate_for_inputs
from .losses import loss_targets, training_loss
from .setup import TrialInputs, prepare_trial

FIXED = "fixed"
OWN = "optimizer"  # the optimizer computes its own step size (TrainConfig.computes_own_lr): the run takes no lr
OWN_LR_LABEL = "own"  # how tables and lines show the lr of a run whose optimizer computes its own step size
ProgressFn = Callable[[int, int | None], None]  # (done, total) of the estimate's own steps


@dataclass(frozen=True)
class LRMethod:
    """A way to estimate a run's learning rate: ``estimate(config, inputs, progress, **options)`` returns the
    estimate's JSON record; ``lr_of(record)`` is the learning rate at multiplier 1."""

    name: str
    summary: str
    estimate: Callable[..., dict[str, Any]]
    lr_of: Callable[[dict[str, Any]], float]

    def run_file(self) -> str:
        """The cache file's name in a run folder."""
        return "stepsize.json" if self.name == "dds" else f"stepsize-{self.name}.json"

    def study_file(self, key: str) -> str:
        """The cache file's name in a study's ``stepsize`` folder, for an estimation configuration's key."""
        return f"{key}.json" if self.name == "dds" else f"{key}.{self.name}.json"


LR_METHODS: dict[str, LRMethod] = {}


def register_lr_method(method: LRMethod, *, replace: bool = False) -> None:
    """Make ``method`` a learning-rate source by its name (the registration point for new estimators)."""
    if method.name in LR_METHODS and not replace:
        raise ValueError(f"learning-rate method {method.name!r} is already registered")
    if not re.fullmatch(r"[a-z][a-z0-9_-]*", method.name) or method.name == FIXED:
        raise ValueError(f"a learning-rate method needs a lower-case name other than {FIXED!r}, got {method.name!r}")
    LR_METHODS[method.name] = method


def lr_method(name: str) -> LRMethod:
    if name not in LR_METHODS:
        close = difflib.get_close_matches(name, LR_METHODS, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise ValueError(f"unknown learning-rate method {name!r}.{hint} Valid: a number, {', '.join(LR_METHODS)}")
    return LR_METHODS[name]


_MULTIPLE = re.compile(r"x\s*([0-9.eE+-]+)")


@dataclass(frozen=True)
class LRSource:
    """A learning rate (``method="fixed"``, ``value``) or ``multiplier`` x a method's estimate."""

    method: str = FIXED
    value: float | None = None
    multiplier: float = 1.0

    def __post_init__(self):
        if self.method == FIXED:
            if isinstance(self.value, bool) or not isinstance(self.value, (int, float)) or not self.value >= 0 \
                    or not math.isfinite(self.value):
                raise ValueError(f"a learning rate must be a finite number >= 0, got {self.value!r}")
        else:
            lr_method(self.method)
            if isinstance(self.multiplier, bool) or not isinstance(self.multiplier, (int, float)) \
                    or not self.multiplier > 0 or not math.isfinite(self.multiplier):
                raise ValueError(f"a {self.method} multiple must be a finite number > 0, got {self.multiplier!r}")

    @property
    def estimated(self) -> bool:
        return self.method != FIXED

    @classmethod
    def parse(cls, text: str | float) -> LRSource:
        """``3e-4``, ``"dds"``, ``"dds x0.5"``, ``"range-test"``, ``"suggest x2"``."""
        sources = cls.parse_list(text)
        if len(sources) != 1:
            raise ValueError(f"expected one learning rate, got {len(sources)} in {text!r}")
        return sources[0]

    @classmethod
    def parse_list(cls, text: str | float | list) -> list[LRSource]:
        """One or more sources: a number, a list of numbers, or ``"<method> x0.5, x1, x2"`` (or ``"<method>"``)."""
        if isinstance(text, list):
            return [source for item in text for source in cls.parse_list(item)]
        if isinstance(text, (int, float)) and not isinstance(text, bool):
            return [cls(FIXED, float(text))]
        if not isinstance(text, str) or not text.strip():
            raise ValueError(f"a learning rate is a number or '<method> x<multiple>', got {text!r}")
        try:
            return [cls(FIXED, float(text))]
        except ValueError:
            pass
        method, _, multiples = text.strip().partition(" ")
        method = lr_method(method).name
        if not multiples.strip():
            return [cls(method)]
        parts = [_MULTIPLE.fullmatch(part.strip()) for part in multiples.split(",")]
        if not all(parts):
            raise ValueError(f"{method} multiples are written x0.5, x1, x2; got {text!r}")
        return [cls(method, multiplier=float(part.group(1))) for part in parts]

    def __str__(self) -> str:
        if not self.estimated:
            return f"{self.value:g}"
        return self.method if self.multiplier == 1 else f"{self.method} x{self.multiplier:g}"


@dataclass
class LRResolution:
    """How a run's learning rate was obtained: the source, the method's estimate (the lr at multiplier 1), the lr,
    what the estimate cost this time (0 when read back) and whether it was read back from ``path``."""

    source: str
    method: str
    multiplier: float
    estimate: float | None
    lr: float | None  # None: the optimizer computes its own step size
    cost_seconds: float
    cached: bool
    path: str | None
    record: dict[str, Any] | None  # the estimate's own JSON record (its diagnostics)
    # A fixed lr's batch-size scaling (TrainConfig.lr_scaling): rule, base and run batch sizes, the factor applied.
    batch_scaling: dict[str, Any] | None = None
    warning: str | None = None  # set by stability_warning: the lr is above where training became unstable

    def to_dict(self) -> dict[str, Any]:
        """The summary a run's result.json keeps (the full record is in the cache file)."""
        return {k: v for k, v in asdict(self).items() if k != "record"}


def format_lr(lr: float | None, spec: str = "g") -> str:
    """A learning rate as text; lr None (the optimizer computes its own step size) reads ``own``."""
    return OWN_LR_LABEL if lr is None else format(lr, spec)


def source_of(config: TrainConfig) -> LRSource:
    """The learning-rate source a run's configuration declares: ``adam_dds`` is Adam at ``multiplier`` x the dds
    estimate; any other optimizer takes ``config.lr``."""
    if config.lr_source is None:
        return LRSource(FIXED, config.lr)
    _, args = config.split_optimizer_args()
    return LRSource(config.lr_source, multiplier=args.get("multiplier", 1.0))


def resolve_lr(
    config: TrainConfig,
    source: LRSource | None = None,
    *,
    cache: str | Path | None = None,
    inputs: TrialInputs | None = None,
    show_progress: bool = False,
    options: dict[str, Any] | None = None,
) -> tuple[float | None, LRResolution]:
    """The learning rate of the run ``config`` plans, from ``source`` (default: the one the config declares).

    ``cache``: the JSON file an estimate is read from when it exists and written to otherwise (atomically); by
    default the run folder's file when the config has an ``out`` folder. For a run's ``adam_dds``, an
    ``estimate=<file>`` in its optimizer_args is that file. ``inputs``: the prepared trial, when the caller has
    it (otherwise it is prepared from ``config``). ``options`` go to the method's estimator.

    A run whose optimizer computes its own step size (``config.computes_own_lr``) resolves to lr None."""
    if source is None and config.computes_own_lr:
        return None, LRResolution(OWN, OWN, 1.0, None, None, 0.0, False, None, None)
    source = source or source_of(config)
    if not source.estimated:
        if config.lr_scaling is None:
            return source.value, LRResolution(str(source), FIXED, 1.0, None, source.value, 0.0, False, None, None)
        factor = config.lr_batch_factor
        scaling = {"rule": config.lr_scaling, "base_batch_size": config.base_batch_size,
                   "batch_size": config.batch_size, "factor": factor, "unscaled_lr": source.value}
        lr = source.value * factor
        return lr, LRResolution(str(source), FIXED, 1.0, None, lr, 0.0, False, None, None, scaling)
    method = lr_method(source.method)
    _, args = config.split_optimizer_args()
    given = args.get("estimate") if config.lr_source == source.method else None
    if cache is None and given is not None:
        cache = given
    elif cache is None and config.out:
        cache = config.out_dir / method.run_file()
    cache = Path(cache) if cache is not None else None

    if cache is not None and cache.is_file():
        record, cost, cached = _read_record(cache), 0.0, True
    elif given is not None:
        raise FileNotFoundError(f"no step-size estimate at {given}")
    else:
        if config.stream:  # its rows are read as the steps run: none are in memory to estimate on
            raise ValueError(f"the {method.name} learning rate is estimated on training examples in memory, and this "
                             f"run streams its corpus (stream=true): give a fixed lr or a saved estimate")
        inputs = inputs or prepare_trial(config)
        started = time.perf_counter()
        with estimate_progress(show_progress, f"{method.name} learning rate for {config.model} on {config.task}") \
                as progress:
            record = method.estimate(config, inputs, progress, **(options or {}))
        cost, cached = time.perf_counter() - started, False
        if cache is not None:
            _write_atomically(cache, record)
    base = float(method.lr_of(record))
    lr = base * source.multiplier
    return lr, LRResolution(str(source), method.name, source.multiplier, base, lr, cost, cached,
                            None if cache is None else str(cache), record)


def stability_warning(config: TrainConfig, lr: float, resolution: LRResolution, *, cache: str | Path | None = None,
                      inputs: TrialInputs | None = None, show_progress: bool = False) -> str | None:
    """One line when an estimated ``lr`` is above the point where training was measured to become unstable: the
    estimate's own (eta_max of ``aeos``/``suggest``, the range test's divergence point) or, for the AdamDDS
    family, which sees no instability itself, the AEoS bound of the run's optimizer (``cache``: where that bound
    is kept; by default next to the run's estimate). A fixed lr is the user's choice and is not checked."""
    if resolution.method == FIXED:
        return None
    limit, by = instability_point(resolution.record)
    if limit is None and resolution.method.startswith("dds"):
        _, bound = resolve_lr(config, LRSource("aeos"), cache=cache, inputs=inputs, show_progress=show_progress)
        limit, by = instability_point(bound.record)
    return instability_message(lr, resolution.source, limit, by, config.optimizer)


def instability_message(lr: float, source: str, limit: float | None, by: str, optimizer: str) -> str | None:
    """The one-line warning for ``lr`` (from ``source``) above ``limit``; None when it is not above."""
    if limit is None or not lr > limit:
        return None
    return (f"warning: lr {lr:.3g} ({source}) is {lr / limit:.1f}x the {limit:.3g} where {by} measured "
            f"{optimizer} training to become unstable; expect divergence or collapse")


def instability_point(record: dict[str, Any] | None) -> tuple[float | None, str]:
    """The lr above which an estimate's record saw training become unstable, and the method that saw it."""
    if not record:
        return None, ""
    if "diagnostics" in record:  # adamlab.stepsize.suggest records
        return record["diagnostics"].get("unstable_above"), record["method"]
    if record.get("method") == "range_test" and record.get("stopped_early"):
        return record["lrs"][-1], "the range test"
    return None, ""


def pending_estimate(source: LRSource, cache: str | Path | None) -> bool:
    """Whether resolving ``source`` would have to run an estimate (nothing cached yet). Loads no model."""
    if not source.estimated:
        return False
    return cache is None or not Path(cache).is_file()


def _read_record(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise ValueError(f"{path} is not a learning-rate estimate record ({error})") from None


def _write_atomically(path: Path, record: dict[str, Any]) -> None:
    """A whole record or none: a second process (or a resumed run) never reads half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f"{path.name}.{os.getpid()}.tmp")  # each process of a data-parallel run its own
    temporary.write_text(json.dumps(record, indent=2))
    temporary.replace(path)


@contextlib.contextmanager
def estimate_progress(enabled: bool, description: str) -> Iterator[ProgressFn]:
    """A progress bar for an estimate (its batches or steps), on stderr so piped output stays clean."""
    bar = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                   console=Console(stderr=True), disable=not enabled, transient=True)
    with bar:
        task = bar.add_task(description, total=None)
        yield lambda done, total: bar.update(task, completed=done, total=total)


# ----------------------------------------------------------------------------------------------------- methods


def _dds_estimate(config: TrainConfig, inputs: TrialInputs, progress: ProgressFn | None, **options: Any) -> dict:
    """The AdamDDS estimate for the planned run (``estimates.estimate_for_inputs``)."""
    return estimate_for_inputs(config, inputs, progress=progress, **options).to_dict()


def _range_test_estimate(config: TrainConfig, inputs: TrialInputs, progress: ProgressFn | None,
                         **options: Any) -> dict:
    """Smith's range test with the run's optimizer and hyperparameters, at its batch size and seed."""
    loaded = inputs.loaded
    device = next(loaded.model.parameters()).device
    hparams, _ = config.split_optimizer_args()
    settings = {"optimizer": config.optimizer, "optimizer_kwargs": hparams, "batch_size": config.batch_size,
                "seed": config.seed, **options}
    return lr_range_test(loaded.model, training_loss(loaded.head, loaded.tokenizer.pad_token_id, device),
                         inputs.encoded, progress=progress, **settings).to_dict()


register_lr_method(LRMethod("dds", "the AdamDDS step size sqrt(2 L0 / (K T)) at the run's horizon", _dds_estimate,
                            lr_of=lambda record: record["alpha"]))
register_lr_method(LRMethod("range-test", "Smith's range test: the steepest descent point", _range_test_estimate,
                            lr_of=lambda record: record["suggested_lr"]))
register_lr_method(LRMethod("range-test-min10", "Smith's range test: a tenth of the lr at the minimum loss",
                            partial(_range_test_estimate, rule="min_div_10"),
                            lr_of=lambda record: record["suggested_lr"]))
register_lr_method(LRMethod("dds-one", "the AdamDDS step size with T = 1 (the authors' LLM code)",
                            partial(_dds_estimate, horizon="one"), lr_of=lambda record: record["alpha"]))


def run_start(model: str) -> str:
    """Where a run of ``model`` starts, which sets ``suggest``'s share of the edge (``SUGGEST_FRACTIONS``): a
    randomly initialised model (the from-scratch sizes) trains at a larger share than a fine-tune."""
    return "from-scratch" if model in SCRATCH_MODELS else "fine-tune"


def _suggestion_estimate(method: str) -> Callable[..., dict]:
    """A method of ``adamlab.stepsize.suggest`` on the run's optimizer (its hyperparameters), batch size, seed and
    horizon; ``options`` set its ``MethodSettings``."""

    def estimate(config: TrainConfig, inputs: TrialInputs, progress: ProgressFn | None, **options: Any) -> dict:
        loaded = inputs.loaded
        device = next(loaded.model.parameters()).device
        hparams, _ = config.split_optimizer_args()
        settings = MethodSettings(**{"batch_size": config.batch_size, "seed": config.seed,
                                     "start": run_start(config.model), **options})
        suggestion = suggest_lr(method, loaded.model, training_loss(loaded.head, loaded.tokenizer.pad_token_id, device),
                                inputs.encoded, lambda params, lr: create_optimizer(config.optimizer, params, lr=lr,
                                                                                    **hparams),
                                optimizer=config.optimizer, horizon=config.steps, settings=settings,
                                targets_fn=loss_targets, progress=progress)
        return suggestion.to_dict()

    return estimate


for _name in ("suggest", "aeos", "dds-warm"):
    register_lr_method(LRMethod(_name, SUGGESTION_METHODS[_name], _suggestion_estimate(_name),
                                lr_of=lambda record: record["lr"]))
