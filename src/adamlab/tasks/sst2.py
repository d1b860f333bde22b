"""GLUE SST-2 binary sentiment, docs/protocols.md §E (as generation) and §C.3 (``text`` for encoder classifiers)."""

from __future__ import annotations

import string
from collections.abc import Mapping, Sequence
from typing import Any

from ..metrics import f1_per_class
from .base import ClassificationTask, Example, chat, class_index, class_predictions, string_field

LABEL_NAMES = ("negative", "positive")  # GLUE: 0 negative, 1 positive

SYSTEM_PROMPT = (
    "You are a sentiment classifier. Read the sentence from a movie review and reply with one word: "
    "positive or negative."
)


class SST2Task(ClassificationTask):
    """The answer is "positive" or "negative"; ``text`` is the sentence verbatim, for encoder classification heads."""

    name = "sst2"
    answer_choices = LABEL_NAMES
    max_new_tokens = 3
    bundled_files = {"train": "sst2/train.jsonl", "eval": "sst2/validation.jsonl"}
    hub_splits = {"train": "train", "eval": "validation"}  # GLUE's test labels are hidden (-1)
    hub_configs = {"glue": "sst2", "nyu-mll/glue": "sst2"}

    def prompt(self, sentence: str) -> tuple[dict[str, str], ...]:
        return chat(SYSTEM_PROMPT, sentence.strip())  # GLUE leaves a trailing space on train sentences

    def example_from_record(self, record: Mapping[str, Any], default_id: str) -> Example:
        sentence = string_field(record, "sentence")
        label = class_index(record["label"], len(LABEL_NAMES))
        return Example(
            id=str(record.get("idx", default_id)),
            messages=self.prompt(sentence),
            target=LABEL_NAMES[label],
            references=(LABEL_NAMES[label],),
            label=label,
            text=sentence,
        )

    def parse(self, generated: str) -> int | None:
        """The first word, case-insensitive and without surrounding punctuation ("Positive." is valid); any other
        first word is invalid."""
        words = generated.split()
        if not words:
            return None
        first_word = words[0].strip(string.punctuation).lower()
        return LABEL_NAMES.index(first_word) if first_word in LABEL_NAMES else None

    def score(self, predictions: Sequence[int | None], examples: Sequence[Example]) -> dict[str, float]:
        """Accuracy, macro/weighted F1, and ``f1``: the F1 of the positive class (sklearn's binary default)."""
        scores = super().score(predictions, examples)
        positive_f1 = f1_per_class(
            class_predictions(predictions),
            [example.label for example in examples],
            num_classes=len(LABEL_NAMES),
        )[1]
        return {**scores, "f1": positive_f1}
