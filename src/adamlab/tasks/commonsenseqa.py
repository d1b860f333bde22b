"""CommonsenseQA, five-way multiple choice, with the corrections of docs/protocols.md §B.6.

The published study dropped the choices from its evaluation prompt and read "The" as answer "E"; here the choices
are always shown, the same prompt serves training and evaluation, and the answer letter is parsed strictly.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from ..metrics import classification_scores
from .base import Example, Task, chat, class_predictions, string_field

LETTERS = ("A", "B", "C", "D", "E")
INSTRUCTION = "Answer with only the letter (A, B, C, D, or E)."

# An upper-case letter as the first non-space character, either as "(A)" or followed by ".", ")", whitespace or
# the end of the output.
_LETTER_ANSWER = re.compile(r"\s*(?:\(([A-E])\)|([A-E])(?![^.)\s]))")


class CommonsenseQATask(Task):
    """The user turn is the question, one "A. choice" line per option, a blank line and the instruction (the
    study's training format, §B.3), with no system message; the target is the answer letter."""

    name = "commonsenseqa"
    kind = "multiple_choice"
    primary_metric = "accuracy"
    answer_choices = LETTERS
    max_new_tokens = 5  # §B.6 #4: room for a leading space or "(A)"
    bundled_files = {"train": "commonsenseqa/train.jsonl", "eval": "commonsenseqa/dev.jsonl"}
    hub_splits = {"train": "train", "eval": "validation"}  # the hub test split has no answers

    def prompt(self, question: str, choices: Sequence[str]) -> tuple[dict[str, str], ...]:
        choice_lines = [f"{letter}. {choice}" for letter, choice in zip(LETTERS, choices, strict=True)]
        return chat(None, "\n".join([question, *choice_lines, "", INSTRUCTION]))

    def example_from_record(self, record: Mapping[str, Any], default_id: str) -> Example:
        question = record["question"]
        if isinstance(question, Mapping):  # official jsonl: {"stem", "choices": [{"label", "text"}, ...]}
            stem = string_field(question, "stem")
            labels = [choice["label"] for choice in question["choices"]]
            choices = [choice["text"] for choice in question["choices"]]
        else:  # hub (tau/commonsense_qa): "question" is the stem, "choices": {"label": [...], "text": [...]}
            stem = string_field(record, "question")
            labels, choices = list(record["choices"]["label"]), list(record["choices"]["text"])
        if labels != list(LETTERS):
            raise ValueError(f"choices must be labelled A-E in order, got {labels}")
        if not all(isinstance(choice, str) and choice.strip() for choice in choices):
            raise ValueError(f"every choice must be a non-empty string, got {choices}")
        answer = record["answerKey"]
        if answer not in LETTERS:
            raise ValueError(f"answerKey must be one of A-E, got {answer!r}")
        return Example(
            id=str(record.get("id", default_id)),
            messages=self.prompt(stem, choices),
            target=answer,
            references=(answer,),
            label=LETTERS.index(answer),
        )

    def parse(self, generated: str) -> int | None:
        """The choice index, or ``None``: lower-case letters, words like "The" and empty outputs are invalid, and
        there is no fallback letter."""
        match = _LETTER_ANSWER.match(generated)
        return LETTERS.index(match.group(1) or match.group(2)) if match else None

    def score(self, predictions: Sequence[int | None], examples: Sequence[Example]) -> dict[str, float]:
        scores = classification_scores(
            class_predictions(predictions),
            [example.label for example in examples],
            num_classes=len(LETTERS),
        )
        return {key: scores[key] for key in ("accuracy", "n_total", "n_invalid")}
