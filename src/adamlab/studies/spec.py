"""A study spec: the YAML file that says which models, tasks, optimizer arms, schedules, learning rates and seeds to
compare, with the tuning budget it declares.

Every error names the file and line it comes from. The YAML is composed first so that each key and value keeps
its position (``Locations``); the spec is then checked key by key, and ``trials.expand_trials`` builds and
validates every trial's ``TrainConfig`` so that a sweep never stops on bad input halfway.

Scalars follow YAML 1.2, not PyYAML's 1.1 defaults: ``2e-4`` is a number and ``no``/``off`` are strings, so
``mixed_precision: no`` means what it says.
"""

from __future__ import annotations

import difflib
import hashlib
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import yaml

from ..models import LoraSettings
from ..optim import create_optimizer
from ..optim.registry import REGISTRY, resolve_name
from ..tasks import get_task
from ..training.lr_source import FIXED, LR_METHODS, OWN, LRSource
from .bundled import resolve_spec

SpecPath = tuple[str | int, ...]  # keys and list indices from the document root, e.g. ("arms", 2, "lr")

TOP_KEYS = ("name", "description", "budget", "models", "tasks", "seeds", "steps", "batch_size", "max_seq_len", "lr",
            "schedules", "lora", "train", "eval", "dds", "arms")
BUDGET_KEYS = ("search_space", "trials_per_arm")
TASK_KEYS = ("name", "options", "steps", "max_seq_len", "train", "eval")
ARM_KEYS = ("name", "optimizer", "hparams", "lr", "schedules")
SCHEDULE_KEYS = ("name", "args", "warmup_steps")
LORA_KEYS = ("r", "alpha", "dropout", "targets")
DDS_KEYS = ("alpha",)

# Spec key -> (TrainConfig field, expected type). Ranges are TrainConfig.validate's job; types are checked here
# because validate trusts them (a string "yes" would pass as a true mask_prompt).
TRAIN_KEYS = {
    "limit": ("train_limit", "int?"),
    "source": ("train_source", "str?"),
    "stream": ("stream", "bool"),  # pre-training: the corpus read as the steps need it (adamlab.training.stream)
    "tokenizer": ("tokenizer", "str?"),  # from-scratch models: replaces the default tokenizer
    "grad_accum": ("grad_accum", "int"),
    "lr_scaling": ("lr_scaling", "str?"),
    "base_batch_size": ("base_batch_size", "int?"),
    "max_grad_norm": ("max_grad_norm", "number?"),
    "warmup_steps": ("warmup_steps", "warmup"),
    "dtype": ("dtype", "str"),
    "mixed_precision": ("mixed_precision", "str"),
    "quantize_4bit": ("quantize_4bit", "bool"),
    "mask_prompt": ("mask_prompt", "bool"),
    "checkpoint_every": ("checkpoint_every", "int"),
    "keep_checkpoints": ("keep_checkpoints", "int"),
}
EVAL_KEYS = {
    "limit": ("eval_limit", "int?"),
    "source": ("eval_source", "str?"),
    "mode": ("eval_mode", "str"),
    "batch_size": ("eval_batch_size", "int"),
    "every": ("eval_every", "int"),
}
SHARED_KEYS = {"steps": ("steps", "int"), "batch_size": ("batch_size", "int"), "max_seq_len": ("max_seq_len", "int")}
TASK_OVERRIDES = ("steps", "max_seq_len")

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")  # the study name is also its default folder name


class SpecError(ValueError):
    """A problem in a study spec, located as ``file:line: message``."""

    def __init__(self, message: str, file: str, line: int | None):
        self.message, self.file, self.line = message, file, line
        super().__init__(f"{file}:{line}: {message}" if line else f"{file}: {message}")


@dataclass(frozen=True)
class Locations:
    """The line of every key and list item of a spec document, for error messages."""

    file: str
    lines: dict[SpecPath, int]

    def line(self, path: SpecPath) -> int:
        """The line of ``path``, or of its nearest ancestor present in the document (a missing key)."""
        while path and path not in self.lines:
            path = path[:-1]
        return self.lines.get(path, 1)

    def error(self, path: SpecPath, message: str) -> SpecError:
        return SpecError(message, self.file, self.line(path))


@dataclass(frozen=True)
class StudyLR:
    """The learning rates an arm tries: fixed ``values``, or ``multipliers`` of the learning rate a method estimates
    (``kind``: ``dds``, the AdamDDS step size, or another method of ``training.lr_source``), resolved per model and
    task when trials are expanded; or none at all (``kind`` ``OWN``: the optimizer computes its own step size)."""

    kind: str  # "fixed", a learning-rate method's name, or OWN
    values: tuple[float, ...] = ()
    multipliers: tuple[float, ...] = ()

    @property
    def count(self) -> int:
        if self.kind == OWN:
            return 1
        return len(self.values) if self.kind == FIXED else len(self.multipliers)

    @property
    def sources(self) -> list[LRSource]:
        if self.kind == FIXED:
            return [LRSource(FIXED, value) for value in self.values]
        return [LRSource(self.kind, multiplier=multiplier) for multiplier in self.multipliers]

    def __str__(self) -> str:
        if self.kind == OWN:
            return "the optimizer's own"
        if self.kind != FIXED:
            return f"{self.kind} " + ", ".join(f"x{m:g}" for m in self.multipliers)
        return ", ".join(f"{v:g}" for v in self.values)


@dataclass(frozen=True)
class StudySchedule:
    name: str
    args: dict[str, Any]
    warmup_steps: int | float | None  # None: the study's train.warmup_steps
    path: SpecPath

    @property
    def label(self) -> str:
        """How reports name it: the schedule and any arguments or warmup of its own."""
        parts = [f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in self.args.items()]
        if self.warmup_steps is not None:
            parts.append(f"warmup={self.warmup_steps:g}")
        return f"{self.name}({', '.join(parts)})" if parts else self.name


@dataclass(frozen=True)
class StudyTask:
    name: str  # the registry's canonical name
    options: dict[str, Any]  # task options (prompt_style, max_new_tokens)
    settings: dict[str, Any]  # TrainConfig fields this task overrides (steps, limits, sources, max_seq_len)
    origins: dict[str, SpecPath]  # TrainConfig field -> where this task set it
    path: SpecPath


@dataclass(frozen=True)
class Arm:
    """One optimizer configuration under comparison, tried at each of its schedules and learning rates."""

    name: str
    optimizer: str  # the registry's canonical name
    hparams: dict[str, Any]  # every hyperparameter but the learning rate
    lr: StudyLR
    schedules: tuple[StudySchedule, ...]
    path: SpecPath
    lr_path: SpecPath  # the arm's own lr, or the study-wide one it inherits

    @property
    def configurations(self) -> int:
        return len(self.schedules) * self.lr.count


@dataclass(frozen=True)
class Budget:
    """The tuning budget, stated as AlgoPerf does: the search space and how many configurations each arm may try
    (seeds repeat a configuration; they are not extra trials)."""

    search_space: str
    trials_per_arm: int

    def to_dict(self) -> dict[str, Any]:
        return {"search_space": self.search_space, "trials_per_arm": self.trials_per_arm}


@dataclass
class StudySpec:
    name: str
    description: str
    budget: Budget
    models: list[str]
    tasks: list[StudyTask]
    seeds: list[int]
    arms: list[Arm]
    settings: dict[str, Any]  # TrainConfig fields shared by every trial
    origins: dict[str, SpecPath]  # TrainConfig field -> where the spec set it
    dds_alpha: dict[str, dict[str, float]]  # published α per model and (canonical) task name
    text: str
    locations: Locations = field(repr=False)

    @property
    def hash(self) -> str:
        return hashlib.sha256(self.text.encode()).hexdigest()

    def error(self, path: SpecPath, message: str) -> SpecError:
        return self.locations.error(path, message)


# ---------------------------------------------------------------------------------------------------- YAML


class _StudyLoader(yaml.SafeLoader):
    pass


_BOOL, _FLOAT = "tag:yaml.org,2002:bool", "tag:yaml.org,2002:float"
_StudyLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag not in (_BOOL, _FLOAT)]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_StudyLoader.add_implicit_resolver(_BOOL, re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF"))
_StudyLoader.add_implicit_resolver(
    _FLOAT,
    re.compile(r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
                  |[-+]?[0-9][0-9_]*[eE][-+]?[0-9]+
                  |[-+]?\.[0-9_]+(?:[eE][-+]?[0-9]+)?
                  |[-+]?\.(?:inf|Inf|INF)
                  |\.(?:nan|NaN|NAN))$""", re.X),
    list("-+0123456789."),
)


# A spec is a few hundred values. Aliases may share a block between arms, but nested aliases can expand a few
# hundred bytes into billions of values ("billion laughs"), which every later walk would expand again.
MAX_EXPANDED_VALUES = 100_000


def _expanded_size(node: yaml.Node, sizes: dict[int, int], open_nodes: set[int], file: str) -> int:
    """The number of values ``node`` stands for with every alias expanded, capped just above the limit. Memoised
    per node, so a shared (aliased) node is counted in constant time however often it is used."""
    if id(node) in sizes:
        return sizes[id(node)]
    if id(node) in open_nodes:
        raise SpecError("an alias refers to a block that contains it (a recursive structure)", file,
                        node.start_mark.line + 1)
    open_nodes.add(id(node))
    children = []
    if isinstance(node, yaml.MappingNode):
        children = [child for pair in node.value for child in pair]
    elif isinstance(node, yaml.SequenceNode):
        children = node.value
    size = 1
    for child in children:
        size = min(size + _expanded_size(child, sizes, open_nodes, file), MAX_EXPANDED_VALUES + 1)
    open_nodes.discard(id(node))
    sizes[id(node)] = size
    return size


def _compose(text: str, file: str) -> tuple[Any, Locations]:
    loader = _StudyLoader(text)
    try:
        node = loader.get_single_node()
        lines: dict[SpecPath, int] = {}
        if node is not None:
            if _expanded_size(node, {}, set(), file) > MAX_EXPANDED_VALUES:
                raise SpecError(f"the YAML expands to more than {MAX_EXPANDED_VALUES:,} values through its aliases "
                                "(nested aliases, as in a 'billion laughs' file); write the blocks out instead",
                                file, None)
            _record_lines(node, (), lines, file)
        data = loader.construct_document(node) if node is not None else None
    except yaml.MarkedYAMLError as error:
        mark = error.problem_mark or error.context_mark
        detail = f"{error.problem} ({error.context})" if error.context else str(error.problem)
        raise SpecError(f"malformed YAML: {detail}", file, mark.line + 1 if mark else None) from None
    except yaml.YAMLError as error:
        raise SpecError(f"malformed YAML: {error}", file, None) from None
    finally:
        loader.dispose()
    return data, Locations(file, lines)


def _record_lines(node: yaml.Node, path: SpecPath, lines: dict[SpecPath, int], file: str) -> None:
    """Map each key to the line it is written on and each list item to where it starts; reject repeated keys,
    which YAML would silently resolve to the last one."""
    lines.setdefault(path, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        first_seen: dict[str, int] = {}
        for key_node, value_node in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key, line = key_node.value, key_node.start_mark.line + 1
            if key in first_seen:
                raise SpecError(f"duplicate key {key!r} (first given on line {first_seen[key]})", file, line)
            first_seen[key] = line
            lines[(*path, key)] = line
            _record_lines(value_node, (*path, key), lines, file)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            _record_lines(item, (*path, index), lines, file)


# ---------------------------------------------------------------------------------------------------- checks


class _Checker:
    """Typed access to the document that raises ``SpecError`` at the offending line."""

    def __init__(self, locations: Locations):
        self.locations = locations

    def fail(self, path: SpecPath, message: str) -> SpecError:
        return self.locations.error(path, message)

    def mapping(self, value: Any, path: SpecPath, allowed: tuple[str, ...] | dict, required: tuple[str, ...] = (),
                what: str = "") -> dict[str, Any]:
        what = what or _describe(path)
        if not isinstance(value, dict):
            raise self.fail(path, f"{what} must be a mapping of {', '.join(allowed)}; got {_type(value)}")
        for key in value:
            if key not in allowed:
                close = difflib.get_close_matches(str(key), list(allowed), n=1, cutoff=0.6)
                hint = f" Did you mean {close[0]!r}?" if close else ""
                raise self.fail((*path, key), f"unknown key {key!r} in {what}.{hint} Valid keys: {', '.join(allowed)}")
        for key in required:
            if key not in value:
                raise self.fail(path, f"{what} is missing the required key {key!r}")
        return value

    def string(self, value: Any, path: SpecPath) -> str:
        if not isinstance(value, str) or not value.strip():
            raise self.fail(path, f"{_describe(path)} must be a non-empty string, got {value!r}")
        return value.strip()

    def list_of(self, value: Any, path: SpecPath, what: str) -> list[Any]:
        if not isinstance(value, list) or not value:
            raise self.fail(path, f"{_describe(path)} must be a non-empty list of {what}, got {value!r}")
        return value

    def typed(self, value: Any, path: SpecPath, kind: str) -> Any:
        base, optional = kind.rstrip("?"), kind.endswith("?")
        if value is None and optional:
            return None
        valid = {
            "int": isinstance(value, int) and not isinstance(value, bool),
            "number": isinstance(value, (int, float)) and not isinstance(value, bool),
            "bool": isinstance(value, bool),
            "str": isinstance(value, str),
            "warmup": isinstance(value, (int, float)) and not isinstance(value, bool),
        }[base]
        if not valid:
            expected = {"int": "an integer", "number": "a number", "bool": "true or false", "str": "a string",
                        "warmup": "a step count or a ratio in (0, 1)"}[base]
            raise self.fail(path, f"{_describe(path)} must be {expected}{' or null' if optional else ''}, "
                                  f"got {value!r}")
        return value

    def settings(self, block: dict[str, Any], path: SpecPath, keys: dict[str, tuple[str, str]],
                 settings: dict[str, Any], origins: dict[str, SpecPath]) -> None:
        """Copy a block's keys into TrainConfig fields, remembering where each was set."""
        for key, value in block.items():
            field_name, kind = keys[key]
            settings[field_name] = self.typed(value, (*path, key), kind)
            origins[field_name] = (*path, key)


def _describe(path: SpecPath) -> str:
    if not path:
        return "the study"
    text = str(path[0])
    for part in path[1:]:
        text += f"[{part}]" if isinstance(part, int) else f".{part}"
    return text


def _type(value: Any) -> str:
    return "nothing" if value is None else type(value).__name__


# ---------------------------------------------------------------------------------------------------- parsing


def read_spec_text(path: str | Path) -> tuple[Path, str]:
    """A spec file or bundled study (``"demo"``) as text; a file that is not UTF-8 is a SpecError naming its line."""
    path = resolve_spec(path)  # a file, or a bundled study by name
    data = path.read_bytes()
    try:
        return path, data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise SpecError(f"not UTF-8 text (byte {error.start})", str(path), data[: error.start].count(b"\n") + 1) from None


def read_spec_document(path: str | Path) -> tuple[Any, Locations]:
    """Any adamlab spec file (a study, a recommendation) read safely: UTF-8, no alias bombs or recursive aliases,
    strict booleans, and the line of every key for error messages."""
    path, text = read_spec_text(path)
    return _compose(text, str(path))


def load_spec(path: str | Path) -> StudySpec:
    """Read and check a study spec file or bundled study (``"demo"``) (structure, names and values; ``expand_trials`` checks every trial)."""
    path, text = read_spec_text(path)
    return parse_spec(text, str(path))


def parse_spec(text: str, file: str = "<study>") -> StudySpec:
    document, locations = _compose(text, file)
    check = _Checker(locations)
    root = check.mapping(document, (), TOP_KEYS, required=("name", "budget", "models", "tasks", "seeds", "arms"),
                         what="the study")

    name = check.string(root["name"], ("name",))
    if not _NAME.fullmatch(name):
        raise check.fail(("name",), f"name {name!r} must be letters, digits, '_', '.' or '-' (it names the folder)")
    description = root.get("description") or ""
    if not isinstance(description, str):
        raise check.fail(("description",), "description must be text")

    budget_block = check.mapping(root["budget"], ("budget",), BUDGET_KEYS, required=BUDGET_KEYS)
    trials_per_arm = check.typed(budget_block["trials_per_arm"], ("budget", "trials_per_arm"), "int")
    if trials_per_arm < 1:
        raise check.fail(("budget", "trials_per_arm"), f"budget.trials_per_arm must be >= 1, got {trials_per_arm}")
    budget = Budget(check.string(budget_block["search_space"], ("budget", "search_space")), trials_per_arm)

    models = [check.string(model, ("models", i))
              for i, model in enumerate(check.list_of(root["models"], ("models",), "model names or folders"))]
    _no_repeats(check, models, ("models",), "model")
    seeds = [check.typed(seed, ("seeds", i), "int")
             for i, seed in enumerate(check.list_of(root["seeds"], ("seeds",), "integer seeds"))]
    _no_repeats(check, seeds, ("seeds",), "seed")

    settings: dict[str, Any] = {}
    origins: dict[str, SpecPath] = {}
    check.settings({k: root[k] for k in SHARED_KEYS if k in root}, (), SHARED_KEYS, settings, origins)
    if "lora" in root:
        settings["lora"] = _lora(check, root["lora"])
        origins["lora"] = ("lora",)
    for block, keys in (("train", TRAIN_KEYS), ("eval", EVAL_KEYS)):
        if block in root:
            check.settings(check.mapping(root[block], (block,), keys), (block,), keys, settings, origins)

    tasks = [_task(check, entry, ("tasks", i))
             for i, entry in enumerate(check.list_of(root["tasks"], ("tasks",), "task names or mappings"))]
    # One entry per task: two prompt variants of a task would share its rows in every report table.
    _no_repeats(check, [t.name for t in tasks], ("tasks",), "task")
    for task in tasks:
        if "steps" not in settings and "steps" not in task.settings:
            raise check.fail(task.path, f"task {task.name!r} has no steps, and the study sets none")

    default_lr = _lr(check, root["lr"], ("lr",)) if "lr" in root else None
    default_schedules = _schedules(check, root["schedules"], ("schedules",)) if "schedules" in root else None
    arm_entries = check.list_of(root["arms"], ("arms",), "optimizer arms")
    arms = [_arm(check, entry, ("arms", i), default_lr, default_schedules) for i, entry in enumerate(arm_entries)]
    _no_repeats(check, [arm.name for arm in arms], ("arms",), "arm name")
    for arm in arms:
        if arm.configurations > budget.trials_per_arm:
            raise check.fail(arm.path, f"arm {arm.name!r} tries {arm.configurations} configurations "
                                       f"({len(arm.schedules)} schedules x {arm.lr.count} learning rates), more than "
                                       f"budget.trials_per_arm = {budget.trials_per_arm}")

    dds_alpha = _dds_alpha(check, root["dds"], models, tasks) if "dds" in root else {}
    return StudySpec(name, description.strip(), budget, models, tasks, seeds, arms, settings, origins, dds_alpha, text,
                     locations)


def _no_repeats(check: _Checker, values: list, path: SpecPath, what: str) -> None:
    for index, value in enumerate(values):
        if value in values[:index]:
            raise check.fail((*path, index), f"{what} {value!r} is listed twice")


def _lora(check: _Checker, value: Any) -> LoraSettings | None:
    if value is None or value == "none":
        return None
    block = check.mapping(value, ("lora",), LORA_KEYS, what="lora (or `none` for full fine-tuning)")
    targets = block.get("targets")
    if targets is not None:
        targets = tuple(check.string(t, ("lora", "targets", i))
                        for i, t in enumerate(check.list_of(targets, ("lora", "targets"), "module names")))
    for key, kind in (("r", "int"), ("alpha", "number"), ("dropout", "number")):
        if key in block:
            check.typed(block[key], ("lora", key), kind)
    try:
        return LoraSettings(**{**block, "targets": targets})
    except ValueError as error:
        raise check.fail(("lora",), str(error)) from None


def _task(check: _Checker, entry: Any, path: SpecPath) -> StudyTask:
    if isinstance(entry, str):
        entry = {"name": entry}
        name_path = path
    else:
        check.mapping(entry, path, TASK_KEYS, required=("name",), what=f"task entry {path[-1]}")
        name_path = (*path, "name")
    name = check.string(entry["name"], name_path)
    options = entry.get("options") or {}
    if not isinstance(options, dict):
        raise check.fail((*path, "options"), f"task options must be a mapping, got {options!r}")
    try:
        canonical = get_task(name).name
    except ValueError as error:
        raise check.fail(name_path, str(error)) from None
    try:
        get_task(name, **options)
    except (ValueError, TypeError) as error:
        raise check.fail((*path, "options"), f"task {canonical!r}: {error}") from None
    settings: dict[str, Any] = {}
    origins: dict[str, SpecPath] = {"task": name_path, "task_args": (*path, "options")}
    check.settings({k: entry[k] for k in TASK_OVERRIDES if k in entry}, path, SHARED_KEYS, settings, origins)
    for block, keys in (("train", TRAIN_KEYS), ("eval", EVAL_KEYS)):
        if block in entry:
            block_path = (*path, block)
            check.settings(check.mapping(entry[block], block_path, keys), block_path, keys, settings, origins)
    return StudyTask(canonical, options, settings, origins, path)


def _lr(check: _Checker, value: Any, path: SpecPath) -> StudyLR:
    if isinstance(value, str):
        try:
            sources = LRSource.parse_list(value)
        except ValueError as error:
            if value.split()[:1] and value.split()[0] in LR_METHODS:  # a known method, badly written multiples
                raise check.fail(path, str(error)) from None
            raise check.fail(path, f"lr must be a number, a list of numbers or 'dds x0.5, x1, x2' (methods: "
                                   f"{', '.join(LR_METHODS)}); got {value!r}") from None
        if not sources[0].estimated:
            return StudyLR(FIXED, values=(_positive(check, sources[0].value, path, "a learning rate"),))
        multipliers = [source.multiplier for source in sources]
        _no_repeats(check, multipliers, path, f"{sources[0].method} multiple")
        return StudyLR(sources[0].method, multipliers=tuple(multipliers))
    items = list(enumerate(value)) if isinstance(value, list) else [(None, value)]
    if not items:
        raise check.fail(path, "lr must list at least one learning rate")
    rates = []
    for index, item in items:
        item_path = path if index is None else (*path, index)
        rates.append(float(_positive(check, check.typed(item, item_path, "number"), item_path, "a learning rate")))
    _no_repeats(check, rates, path, "learning rate")
    return StudyLR(FIXED, values=tuple(rates))


def _positive(check: _Checker, value: float, path: SpecPath, what: str) -> float:
    if not (math.isfinite(value) and value > 0):
        raise check.fail(path, f"{what} must be a finite number > 0, got {value!r}")
    return value


def _schedules(check: _Checker, value: Any, path: SpecPath) -> tuple[StudySchedule, ...]:
    entries = value if isinstance(value, list) else [value]
    if not entries:
        raise check.fail(path, "schedules must list at least one schedule")
    schedules = []
    for index, entry in enumerate(entries):
        entry_path = (*path, index) if isinstance(value, list) else path
        if isinstance(entry, str):
            entry = {"name": entry}
        check.mapping(entry, entry_path, SCHEDULE_KEYS, required=("name",), what="a schedule")
        args = entry.get("args") or {}
        if not isinstance(args, dict):
            raise check.fail((*entry_path, "args"), f"schedule args must be a mapping, got {args!r}")
        warmup = entry.get("warmup_steps")
        if warmup is not None:
            check.typed(warmup, (*entry_path, "warmup_steps"), "warmup")
        schedules.append(StudySchedule(check.string(entry["name"], entry_path), args, warmup, entry_path))
    _no_repeats(check, [s.label for s in schedules], path, "schedule")
    return tuple(schedules)


def _arm(check: _Checker, entry: Any, path: SpecPath, default_lr: StudyLR | None,
         default_schedules: tuple[StudySchedule, ...] | None) -> Arm:
    label = repr(entry["name"]) if isinstance(entry, dict) and "name" in entry else path[-1]
    check.mapping(entry, path, ARM_KEYS, required=("name", "optimizer"), what=f"arm {label}")
    name = check.string(entry["name"], (*path, "name"))
    try:
        optimizer = resolve_name(check.string(entry["optimizer"], (*path, "optimizer")))
    except ValueError as error:
        raise check.fail((*path, "optimizer"), str(error)) from None
    hparams = entry.get("hparams") or {}
    if not isinstance(hparams, dict):
        raise check.fail((*path, "hparams"), f"hparams must be a mapping, got {hparams!r}")
    # An optimizer whose name implies a learning-rate source (adam_dds) takes multiples of that source only.
    implied = REGISTRY[optimizer].lr_source if optimizer in REGISTRY else None
    # An optimizer in a mode that computes its own step size (adafactor_hf relative_step) takes no lr at all.
    own_lr = optimizer in REGISTRY and REGISTRY[optimizer].computes_own_lr(hparams)
    if own_lr and "lr" in entry:
        raise check.fail((*path, "lr"), f"arm {name!r}: {optimizer} with {hparams} computes its own step size: "
                                        "leave lr out")
    if own_lr:
        lr, lr_path = StudyLR(OWN), (*path, "hparams")
    elif "lr" in entry:
        lr, lr_path = _lr(check, entry["lr"], (*path, "lr")), (*path, "lr")
        if implied is not None and lr.kind != implied:
            raise check.fail(lr_path, f"arm {name!r}: {optimizer} takes its learning rate from {implied}: write "
                                      f"lr: {implied} x0.5, x1 (multiples of it), or leave lr out")
    elif implied is not None and (default_lr is None or default_lr.kind != implied):
        lr, lr_path = StudyLR(implied, multipliers=(1.0,)), (*path, "optimizer")
    elif default_lr is not None:
        lr, lr_path = default_lr, ("lr",)
    else:
        raise check.fail(path, f"arm {name!r} has no lr, and the study sets none")
    # Every hyperparameter check the optimizer has, on a throwaway parameter, at the line that sets them.
    try:
        probe_lr = {} if own_lr else {"lr": lr.values[0] if lr.kind == FIXED else 1e-3}
        create_optimizer(optimizer, [torch.nn.Parameter(torch.zeros(1))], **probe_lr, **hparams)
    except (ValueError, TypeError, ImportError) as error:
        where = (*path, "hparams") if hparams else (*path, "optimizer")
        raise check.fail(where, f"arm {name!r}: {error}") from None
    if "schedules" in entry:
        schedules = _schedules(check, entry["schedules"], (*path, "schedules"))
    else:
        schedules = default_schedules or (StudySchedule("constant", {}, None, path),)
    return Arm(name, optimizer, hparams, lr, schedules, path, lr_path)


def _dds_alpha(check: _Checker, value: Any, models: list[str], tasks: list[StudyTask]) -> dict[str, dict[str, float]]:
    block = check.mapping(value, ("dds",), DDS_KEYS)
    table = block.get("alpha") or {}
    check.mapping(table, ("dds", "alpha"), tuple(models), what="dds.alpha (published α per model)")
    task_names = tuple(task.name for task in tasks)
    alphas: dict[str, dict[str, float]] = {}
    for model, per_task in table.items():
        check.mapping(per_task, ("dds", "alpha", model), task_names, what=f"dds.alpha[{model}]")
        alphas[model] = {task: _positive(check, check.typed(a, ("dds", "alpha", model, task), "number"),
                                         ("dds", "alpha", model, task), "α") for task, a in per_task.items()}
    return alphas
