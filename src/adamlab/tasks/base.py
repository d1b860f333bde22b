"""What every benchmark task provides: examples as chat prompts plus targets, a strict parser and official scoring.

The harness (tokenisation, loss masking, generation) sees only this interface. Each task builds its prompt in one
method, used for both the training example and the evaluation input, so the two cannot drift apart (docs/protocols.md
§G.4). Parsers never guess: an output they cannot read is ``None``, which scoring counts as wrong and reports as
``n_invalid`` (§G.1-2).
"""

from __future__ import annotations

import json
import random
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, ClassVar

from ..extras import require
from ..metrics import INVALID, classification_scores

SPLITS = ("train", "eval")

Records = tuple[Sequence[Mapping[str, Any]], Callable[[int], str]]
"""Raw records, and for each index where the record came from ("file, line 12") for error messages."""


@dataclass(frozen=True)
class Example:
    id: str
    messages: tuple[dict[str, str], ...]  # the prompt: optional {"role": "system", ...} then {"role": "user", ...}
    target: str  # the assistant turn used as the training target
    references: tuple[str, ...]  # every gold answer for scoring (SQuAD: all references)
    label: int | float | None = None  # class / choice index (classification, multiple choice); a score (regression)
    text: str | None = None  # raw input for encoder heads (ag_news, sst2, the first sentence of a GLUE pair)
    text_pair: str | None = None  # the second sentence of a sentence-pair task, encoded as the tokenizer's pair


class DataError(ValueError):
    """A data file or record that cannot be used; the message says where (file and line, or hub row)."""


def jsonl_record(line: str, name: object, line_number: int) -> dict[str, Any]:
    """One line of a JSONL file as its record (a JSON object), or a DataError naming the file and line."""
    try:
        record = json.loads(line)
    except json.JSONDecodeError as error:
        raise DataError(f"{name}, line {line_number}: not valid JSON ({error.msg})") from None
    if not isinstance(record, dict):
        raise DataError(f"{name}, line {line_number}: expected a JSON object, got {type(record).__name__}")
    return record


def chat(system: str | None, user: str) -> tuple[dict[str, str], ...]:
    """Chat messages for a prompt: the system message when there is one, then the user turn."""
    user_turn = {"role": "user", "content": user}
    return ({"role": "system", "content": system}, user_turn) if system else (user_turn,)


def string_field(record: Mapping[str, Any], key: str) -> str:
    """A required text field; an empty one would train and score on nothing."""
    value = record[key]
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"field {key!r} must be a non-empty string, got {value!r}")
    return value


def class_index(value: Any, num_classes: int) -> int:
    """A gold label, rejected unless it is a class index (unlabelled hub test splits use -1)."""
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < num_classes:
        raise ValueError(f"label {value!r} is not a class index 0..{num_classes - 1}")
    return value


def class_predictions(predictions: Sequence[int | None]) -> list[int]:
    """Parsed class predictions with ``None`` (unparseable) as the sentinel class, which is always wrong."""
    return [INVALID if prediction is None else prediction for prediction in predictions]


class Task(ABC):
    """A benchmark task. Subclasses set the class attributes, build their prompt in a single ``prompt`` method and
    implement ``example_from_record``, ``parse`` and ``score``.

    ``answer_choices[i]`` is the exact string the model answers with for label ``i`` (class verbalizer or option
    letter); it is empty for generative tasks. ``parse`` returns that index for classification and multiple
    choice, the answer string for QA and math, and ``None`` when the output cannot be read.
    """

    name: ClassVar[str]
    kind: ClassVar[str]  # "classification" | "multiple_choice" | "extractive_qa" | "math" | "regression" | ...
    primary_metric: ClassVar[str]  # the key of ``score``'s result a comparison ranks by
    prompt_styles: ClassVar[tuple[str, ...]] = ("default",)
    bundled_files: ClassVar[Mapping[str, str]]  # split -> file under adamlab/tasks/data
    hub_splits: ClassVar[Mapping[str, str]]  # split -> split name on the Hugging Face Hub
    hub_configs: ClassVar[Mapping[str, str]] = {}  # hub dataset id -> the config it needs ("openai/gsm8k": "main")
    answer_choices: tuple[str, ...] = ()
    max_new_tokens: int

    def __init__(self, prompt_style: str = "default", max_new_tokens: int | None = None) -> None:
        if prompt_style not in self.prompt_styles:
            valid = ", ".join(self.prompt_styles)
            raise ValueError(f"{self.name}: unknown prompt_style {prompt_style!r}; valid: {valid}")
        if max_new_tokens is not None:
            if max_new_tokens < 1:
                raise ValueError(f"max_new_tokens must be positive, got {max_new_tokens}")
            self.max_new_tokens = max_new_tokens
        self.prompt_style = prompt_style

    @property
    def num_labels(self) -> int | None:
        """Outputs of an encoder head for this task: one per class, one for a regression score, ``None`` for tasks
        only a causal LM can do (multiple choice, generation, language modelling)."""
        if self.kind == "regression":
            return 1
        return len(self.answer_choices) if self.kind == "classification" else None

    # ------------------------------------------------------------------------------------------ per task

    @abstractmethod
    def example_from_record(self, record: Mapping[str, Any], default_id: str) -> Example:
        """Map one record, in the bundled schema or the hub schema, to an Example (``KeyError``/``ValueError``
        for a bad record). ``default_id`` is for records that carry no id of their own."""

    @abstractmethod
    def parse(self, generated: str) -> int | str | None:
        """The answer in a model's generated text, or ``None`` when it is not a valid answer."""

    @abstractmethod
    def score(self, predictions: Sequence[int | str | None], examples: Sequence[Example]) -> dict[str, float]:
        """Metrics over all examples from ``parse`` outputs, plus ``n_total`` and ``n_invalid``."""

    # ------------------------------------------------------------------------------------------ loading

    def load(self, split: str, source: str | None = None, limit: int | None = None, seed: int = 0) -> list[Example]:
        """Examples of ``split`` ("train" or "eval").

        ``source``: ``None`` for the sample bundled with adamlab; a path ending in ``.jsonl``/``.json`` for a local
        file (then ``split`` only prefixes the ids of records without one, ``"{split}-{row}"``); anything else is a
        Hugging Face dataset id, read with ``datasets.load_dataset`` (the task's hub split and config).
        ``limit``: a random subset of that size drawn with ``seed``, kept in source order; the whole split when it
        has no more records than that.
        """
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        if limit is not None and limit < 1:
            raise ValueError(f"limit must be positive, got {limit}")
        records, where = self._read(split, source)
        indices: Sequence[int] = range(len(records))
        if limit is not None and limit < len(records):
            indices = sorted(random.Random(seed).sample(indices, limit))
        examples = []
        for index in indices:
            try:
                examples.append(self.example_from_record(records[index], default_id=f"{split}-{index}"))
            except KeyError as error:
                raise DataError(f"{where(index)}: {self.name} record lacks field {error}") from error
            except (TypeError, ValueError) as error:
                raise DataError(f"{where(index)}: bad {self.name} record: {error}") from error
        return examples

    def _read(self, split: str, source: str | None) -> Records:
        if source is None:
            if split not in self.bundled_files:
                raise DataError(f"{self.name}: adamlab bundles no {split} data for this task; give a local JSONL file "
                                f"or a Hugging Face dataset id ({', '.join(self.hub_configs) or 'its hub id'})")
            file = resources.files(__package__).joinpath("data", *self.bundled_files[split].split("/"))
            return self._parse_text(file.read_text(encoding="utf-8"), str(file), json_document=False)
        if source.endswith((".jsonl", ".json")):
            path = Path(source)
            if not path.is_file():
                raise FileNotFoundError(f"{self.name}: no data file at {source}")
            data = path.read_bytes()
            try:
                text = data.decode("utf-8")
            except UnicodeDecodeError as error:
                line = data[: error.start].count(b"\n") + 1
                raise DataError(f"{source}, line {line}: not UTF-8 text (byte {error.start})") from None
            return self._parse_text(text, source, json_document=source.endswith(".json"))
        return self._read_hub(source, split)

    def _parse_text(self, text: str, name: str, json_document: bool) -> Records:
        """JSON Lines, or for a ``.json`` file a single JSON document (falling back to JSON Lines, which is what
        ``datasets.Dataset.to_json`` writes under that suffix)."""
        if json_document:
            try:
                document = json.loads(text)
            except json.JSONDecodeError as error:
                if error.msg != "Extra data":
                    raise DataError(f"{name}, line {error.lineno}: not valid JSON ({error.msg})") from error
            else:
                return self._records_from_document(document, name)
        records, line_numbers = [], []
        for line_number, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            records.append(jsonl_record(line, name, line_number))
            line_numbers.append(line_number)
        if not records:  # caught here, before a model is loaded or a run folder written
            raise DataError(f"{name} holds no records")
        return records, lambda index: f"{name}, line {line_numbers[index]}"

    def _records_from_document(self, document: Any, name: str) -> Records:
        """Records of a whole-file JSON document: a list of records. Tasks with an official nested layout extend it."""
        if not isinstance(document, list) or not all(isinstance(record, dict) for record in document):
            raise DataError(f"{name}: expected JSON Lines or a JSON array of {self.name} records")
        return document, lambda index: f"{name}, record {index + 1}"

    def _read_hub(self, dataset_id: str, split: str) -> Records:
        require("datasets", "hub", f"loading {dataset_id!r} from the Hugging Face Hub")
        import datasets  # optional (the hub extra), so imported only here
        hub_split = self.hub_splits[split]
        try:
            dataset = datasets.load_dataset(dataset_id, self.hub_configs.get(dataset_id), split=hub_split)
        except OSError as error:  # offline (ConnectionError), an unknown id (DatasetNotFoundError)
            reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            raise DataError(f"cannot load {dataset_id!r} ({hub_split} split) from the Hugging Face Hub: {reason}") \
                from None
        return dataset, lambda index: f"{dataset_id} ({hub_split} split), row {index}"


class ClassificationTask(Task):
    """A task whose answer is one of ``answer_choices``; scored with accuracy and F1 over the true classes."""

    kind = "classification"
    primary_metric = "accuracy"

    def score(self, predictions: Sequence[int | None], examples: Sequence[Example]) -> dict[str, float]:
        return classification_scores(
            class_predictions(predictions),
            [example.label for example in examples],
            num_classes=len(self.answer_choices),
        )
