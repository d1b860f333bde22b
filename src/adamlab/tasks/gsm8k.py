"""GSM8K grade-school math, docs/protocols.md §E: train on full solutions, score the final number."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from ..metrics import extract_final_number, final_number_accuracy, gsm8k_reference_answer
from .base import Example, Task, chat, string_field

SYSTEM_PROMPT = (
    "Solve the math word problem. Reason step by step, then give the final answer on the last line "
    "in the form '#### <number>'."
)


class GSM8KTask(Task):
    """The target is the whole reference solution (its ``<<calc>>`` annotations and ``#### answer`` line
    included), so a fine-tuned model learns to end with the ``####`` line that ``parse`` looks for."""

    name = "gsm8k"
    kind = "math"
    primary_metric = "accuracy"
    max_new_tokens = 512  # the longest sampled solution is under 900 characters
    bundled_files = {"train": "gsm8k/train.jsonl", "eval": "gsm8k/test.jsonl"}
    hub_splits = {"train": "train", "eval": "test"}
    hub_configs = {"openai/gsm8k": "main", "gsm8k": "main"}

    def prompt(self, question: str) -> tuple[dict[str, str], ...]:
        return chat(SYSTEM_PROMPT, question)

    def example_from_record(self, record: Mapping[str, Any], default_id: str) -> Example:
        solution = string_field(record, "answer")
        return Example(
            id=str(record.get("id", default_id)),
            messages=self.prompt(string_field(record, "question")),
            target=solution,
            references=(gsm8k_reference_answer(solution),),
        )

    def parse(self, generated: str) -> str | None:
        """The number after the last ``####`` if any, else the last number; ``None`` when there is none."""
        return extract_final_number(generated)

    def score(self, predictions: Sequence[str | None], examples: Sequence[Example]) -> dict[str, float]:
        """Accuracy: the final number equals the reference numerically; invalid predictions are wrong."""
        return {
            "accuracy": final_number_accuracy(predictions, [example.references[0] for example in examples]),
            "n_total": len(examples),
            "n_invalid": sum(p is None for p in predictions),
        }
