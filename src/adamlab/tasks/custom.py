"""The user's own data as a task, with no Python: ``--task path/to/data.jsonl`` or ``--task path/to/task.yaml``.

A task YAML declares the type and where the fields are (paths are relative to the YAML file)::

    type: classification          # classification | multiple_choice | generation | language_modeling
    train: train.jsonl
    eval: dev.jsonl               # optional: without it, a seeded held-out slice of train (eval_size records)
    text_field: text              # classification: the input (and text_pair_field for a sentence pair)
    label_field: label            #   a label name, or an index into labels
    labels: [negative, positive]  #   optional when the labels are names: the sorted names found in train
    system: You classify reviews. # optional system message
    template: "Review: {text}"    # optional user turn, with {field} placeholders filled from the record

Multiple choice: ``question_field``, ``choices_field`` (a list of strings, the same number in every record),
``answer_field`` (an index, a letter, or the text of a choice). Generation: ``prompt_field``, ``answer_field`` (a
string, or a list of acceptable answers) and ``metric``: ``squad`` (exact match and token F1 after SQuAD's
normalisation) or ``exact_match``. Language modelling: ``text_field``; the documents are packed into fixed-length
sequences (see :mod:`adamlab.tasks.corpus`).

A bare ``.jsonl`` file needs no YAML when its fields say what it is: ``text`` + ``label`` (classification),
``question`` + ``choices`` + ``answer`` (multiple choice), ``prompt`` + ``answer`` (generation), ``text`` alone
(language modelling); its eval split is a seeded held-out slice.
"""

from __future__ import annotations

import json
import random
import re
import string
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from ..metrics import INVALID, classification_scores, normalize_answer, squad_scores
from .base import DataError, Example, Records, Task, chat, string_field
from .corpus import CorpusTask

TYPES = ("classification", "multiple_choice", "generation", "language_modeling")
GENERATION_METRICS = ("squad", "exact_match")
LETTERS = string.ascii_uppercase
DEFAULT_EVAL_SIZE = 200  # held out of train when no eval file is given (at most a fifth of it)
SPLIT_SEED = 0

_KEYS = {
    "common": {"type", "name", "train", "eval", "eval_size", "system", "template", "max_new_tokens"},
    "classification": {"text_field", "text_pair_field", "label_field", "labels"},
    "multiple_choice": {"question_field", "choices_field", "answer_field"},
    "generation": {"prompt_field", "answer_field", "metric"},
    "language_modeling": {"text_field"},
}
_FIELDS_BY_TYPE = (  # how a bare JSONL file's first record declares its type
    ("multiple_choice", {"question", "choices", "answer"}),
    ("classification", {"text", "label"}),
    ("generation", {"prompt", "answer"}),
    ("language_modeling", {"text"}),
)
_PLACEHOLDER = re.compile(r"{(\w+)}")


def is_task_file(name: str) -> bool:
    return name.endswith((".yaml", ".yml", ".jsonl", ".json"))


def load_task_file(path: str, **options) -> Task:
    """The task a user's YAML or JSONL file declares; ``ValueError`` naming the file for a bad declaration."""
    file = Path(path).expanduser()
    if not file.is_file():
        raise FileNotFoundError(f"task file {path} does not exist")
    if file.suffix in (".yaml", ".yml"):
        try:
            spec = yaml.safe_load(file.read_text(encoding="utf-8"))
        except yaml.YAMLError as error:
            mark = getattr(error, "problem_mark", None)
            where = f", line {mark.line + 1}" if mark else ""
            raise DataError(f"{path}{where}: not valid YAML ({getattr(error, 'problem', error)})") from None
        if not isinstance(spec, dict):
            raise DataError(f"{path}: a task file is a mapping with at least 'type' and 'train'")
        base = file.parent
    else:
        spec = {"type": _type_from_fields(file), "train": file.name}
        base = file.parent
    spec = {**spec, **options}
    kind = spec.get("type")
    if kind not in TYPES:
        raise ValueError(f"{path}: type must be one of {', '.join(TYPES)}; got {kind!r}")
    unknown = set(spec) - _KEYS["common"] - _KEYS[kind]
    if unknown:
        valid = ", ".join(sorted(_KEYS["common"] | _KEYS[kind]))
        raise ValueError(f"{path}: unknown key(s) {', '.join(sorted(unknown))} for a {kind} task; valid: {valid}")
    if "train" not in spec:
        raise ValueError(f"{path}: 'train' (the training data file) is required")
    files = {split: _data_file(base, spec[split], path, split) for split in ("train", "eval") if split in spec}
    if kind == "language_modeling":
        return CorpusTask(name=path, files=files, text_field=spec.get("text_field", "text"),
                          eval_documents=spec.get("eval_size"))
    return UserTask(path, kind, spec, files)


def _data_file(base: Path, value: Any, path: str, split: str) -> Path:
    if not isinstance(value, str):
        raise ValueError(f"{path}: {split} must be a file name, got {value!r}")
    data = (base / value).expanduser()
    if not data.is_file():
        raise FileNotFoundError(f"{path}: {split} data file {data} does not exist")
    return data


def _type_from_fields(file: Path) -> str:
    """The type a data file's first record implies (JSON Lines, or a JSON array of records)."""
    text = file.read_text(encoding="utf-8")
    try:
        document = json.loads(text) if file.suffix == ".json" and text.lstrip().startswith("[") else None
        record = document[0] if document else json.loads(next((line for line in text.splitlines() if line.strip()), ""))
    except json.JSONDecodeError as error:
        raise DataError(f"{file}, line {error.lineno}: not valid JSON ({error.msg})") from None
    fields = set(record) if isinstance(record, dict) else set()
    for kind, needed in _FIELDS_BY_TYPE:
        if needed <= fields:
            return kind
    raise DataError(f"{file}, line 1: cannot tell the task type from the fields {sorted(fields)}; use text+label, "
                    "question+choices+answer, prompt+answer or text, or declare the type in a task YAML")


class UserTask(Task):
    """A classification, multiple-choice or generation task read from the user's files as declared."""

    prompt_styles = ("default",)

    def __init__(self, name: str, kind: str, spec: Mapping[str, Any], files: Mapping[str, Path]) -> None:
        self.name, self.kind, self.spec, self.files = name, kind, dict(spec), dict(files)
        self.bundled_files = {}
        self.hub_splits = {"train": "train", "eval": "validation"}  # for --train-data / --eval-data hub ids
        self.system = spec.get("system")
        self.template = spec.get("template")
        if self.template is not None and not isinstance(self.template, str):
            raise ValueError(f"{name}: template must be a string with {{field}} placeholders")
        self.eval_size = spec.get("eval_size", DEFAULT_EVAL_SIZE)
        if isinstance(self.eval_size, bool) or not isinstance(self.eval_size, int) or self.eval_size < 1:
            raise ValueError(f"{name}: eval_size must be an int >= 1, got {self.eval_size!r}")
        if kind == "classification":
            self.text_field = spec.get("text_field", "text")
            self.text_pair_field = spec.get("text_pair_field")
            self.label_field = spec.get("label_field", "label")
            self.answer_choices = tuple(spec["labels"]) if "labels" in spec else self._label_names()
            if len(self.answer_choices) < 2 or not all(isinstance(x, str) and x.strip() for x in self.answer_choices):
                raise ValueError(f"{name}: labels must be at least two non-empty names, got {list(self.answer_choices)}")
            self.primary_metric, default_tokens = "accuracy", 8
        elif kind == "multiple_choice":
            self.question_field = spec.get("question_field", "question")
            self.choices_field = spec.get("choices_field", "choices")
            self.answer_field = spec.get("answer_field", "answer")
            self.answer_choices = tuple(LETTERS[: self._num_choices()])
            self.primary_metric, default_tokens = "accuracy", 5
        else:
            self.prompt_field = spec.get("prompt_field", "prompt")
            self.answer_field = spec.get("answer_field", "answer")
            self.metric = spec.get("metric", "squad")
            if self.metric not in GENERATION_METRICS:
                raise ValueError(f"{name}: metric must be one of {', '.join(GENERATION_METRICS)}, got {self.metric!r}")
            self.answer_choices = ()
            self.primary_metric, default_tokens = ("f1" if self.metric == "squad" else "exact_match"), 32
        super().__init__("default", spec.get("max_new_tokens", default_tokens))

    # ------------------------------------------------------------------------------------------ reading

    def _read(self, split: str, source: str | None) -> Records:
        """The declared file of ``split``; without an eval file, a seeded held-out slice of train (disjoint)."""
        if source is not None:
            return super()._read(split, source)
        if "eval" in self.files:  # both splits declared
            return self._read_file(self.files[split])
        records, where = self._read_file(self.files["train"])
        size = min(self.eval_size, len(records) // 5)
        if size < 1:
            raise DataError(f"{self.files['train']}: too few records ({len(records)}) to hold out an eval split; "
                            "give an eval file")
        held_out = set(random.Random(SPLIT_SEED).sample(range(len(records)), size))
        keep = [i for i in range(len(records)) if (i in held_out) == (split == "eval")]
        return [records[i] for i in keep], lambda index: where(keep[index])

    def _read_file(self, file: Path) -> Records:
        return self._parse_text(file.read_text(encoding="utf-8"), str(file), json_document=file.suffix == ".json")

    def _label_names(self) -> tuple[str, ...]:
        """The label names used in the train file, sorted, when the labels are written as names."""
        records, where = self._read_file(self.files["train"])
        names = set()
        for index, record in enumerate(records):
            if self.label_field not in record:
                raise DataError(f"{where(index)}: {self.name} record lacks field {self.label_field!r}")
            value = record[self.label_field]
            if not isinstance(value, str):
                raise DataError(f"{where(index)}: label {value!r} is not a name; list the label names under 'labels' "
                                "in a task YAML to use indices")
            names.add(value)
        return tuple(sorted(names))

    def _num_choices(self) -> int:
        records, where = self._read_file(self.files["train"])
        if not records:
            raise DataError(f"{self.files['train']}: no records")
        choices = records[0].get(self.choices_field)
        if not isinstance(choices, list) or len(choices) < 2:
            raise DataError(f"{where(0)}: {self.choices_field!r} must be a list of at least two choices")
        return len(choices)

    # ------------------------------------------------------------------------------------------ examples

    def user_turn(self, record: Mapping[str, Any], default: str) -> str:
        if self.template is None:
            return default
        missing = [key for key in _PLACEHOLDER.findall(self.template) if key not in record]
        if missing:
            raise KeyError(missing[0])
        return self.template.format_map({key: record[key] for key in _PLACEHOLDER.findall(self.template)})

    def example_from_record(self, record: Mapping[str, Any], default_id: str) -> Example:
        example_id = str(record.get("id", default_id))
        if self.kind == "classification":
            text = string_field(record, self.text_field)
            pair = string_field(record, self.text_pair_field) if self.text_pair_field else None
            label = self._label_index(record[self.label_field])
            default = text if pair is None else f"{text}\n{pair}"
            system = self.system or f"Classify the text. Reply with exactly one of: {', '.join(self.answer_choices)}."
            answer = self.answer_choices[label]
            return Example(example_id, chat(system, self.user_turn(record, default)), answer, (answer,), label, text,
                           pair)
        if self.kind == "multiple_choice":
            question = string_field(record, self.question_field)
            choices = record[self.choices_field]
            if not isinstance(choices, list) or len(choices) != len(self.answer_choices):
                raise ValueError(f"{self.choices_field!r} must list {len(self.answer_choices)} choices, got {choices!r}")
            if not all(isinstance(choice, str) and choice.strip() for choice in choices):
                raise ValueError(f"every choice must be a non-empty string, got {choices!r}")
            label = self._choice_index(record[self.answer_field], choices)
            lines = [f"{letter}. {choice}" for letter, choice in zip(self.answer_choices, choices)]
            letters = ", ".join(self.answer_choices)
            default = "\n".join([question, *lines, "", f"Answer with only the letter ({letters})."])
            answer = self.answer_choices[label]
            return Example(example_id, chat(self.system, self.user_turn(record, default)), answer, (answer,), label)
        prompt = string_field(record, self.prompt_field)
        answers = record[self.answer_field]
        answers = [answers] if isinstance(answers, str) else answers
        if not isinstance(answers, list) or not answers or not all(isinstance(a, str) and a.strip() for a in answers):
            raise ValueError(f"{self.answer_field!r} must be a non-empty string or a list of them, got {answers!r}")
        return Example(example_id, chat(self.system, self.user_turn(record, prompt)), answers[0], tuple(answers))

    def _label_index(self, value: Any) -> int:
        if isinstance(value, str) and value in self.answer_choices:
            return self.answer_choices.index(value)
        if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < len(self.answer_choices):
            return value
        raise ValueError(f"label {value!r} is not one of {list(self.answer_choices)} or an index into them")

    def _choice_index(self, value: Any, choices: Sequence[str]) -> int:
        if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < len(choices):
            return value
        if isinstance(value, str) and value in self.answer_choices:
            return self.answer_choices.index(value)
        if isinstance(value, str) and value in choices:
            return choices.index(value)
        raise ValueError(f"answer {value!r} is not a choice index, letter or choice text")

    # ------------------------------------------------------------------------------------------ parsing, scoring

    def parse(self, generated: str) -> int | str | None:
        """Classification: the whole answer is one label name (any case), then only whitespace or punctuation.
        Multiple choice: a choice letter first, alone or as "(B)" / "B." / "B)". Generation: the answer text."""
        if self.kind == "generation":
            return generated.strip()
        if self.kind == "multiple_choice":
            match = re.match(rf"\s*(?:\(([{self.answer_choices[0]}-{self.answer_choices[-1]}])\)|"
                             rf"([{self.answer_choices[0]}-{self.answer_choices[-1]}])(?![^.)\s]))", generated)
            return self.answer_choices.index(match.group(1) or match.group(2)) if match else None
        answer = generated.strip().rstrip(string.punctuation + string.whitespace).lower()
        names = [name.lower() for name in self.answer_choices]
        return names.index(answer) if answer in names else None

    def score(self, predictions: Sequence[int | str | None], examples: Sequence[Example]) -> dict[str, float]:
        if self.kind == "generation":
            texts = ["" if p is None else p for p in predictions]
            scores = squad_scores(texts, [e.references for e in examples])
            if self.metric == "exact_match":
                scores = {"exact_match": scores["exact_match"]}
            invalid = sum(not normalize_answer(text) for text in texts)
            return {**scores, "n_total": len(examples), "n_invalid": invalid}
        classes = [INVALID if p is None else p for p in predictions]
        scores = classification_scores(classes, [e.label for e in examples], num_classes=len(self.answer_choices))
        if self.kind == "multiple_choice":
            return {key: scores[key] for key in ("accuracy", "n_total", "n_invalid")}
        return scores
