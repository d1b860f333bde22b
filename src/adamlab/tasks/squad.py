"""SQuAD v1.1 extractive QA as generation, docs/protocols.md §A.4, scored with the official v1.1 semantics (§A.9)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from ..metrics import squad_scores
from .base import DataError, Example, Records, Task, chat, string_field

SYSTEM_PROMPT = (
    "You answer questions about a passage. Reply with the shortest span of the passage that answers the "
    "question, copied exactly as it appears, and nothing else."
)

# A paraphrase of SYSTEM_PROMPT_SQUAD in the AdamDDS study's data.py (the original string is not available).
ADAMDDS_SYSTEM_PROMPT = (
    "You are a precise extractive question-answering assistant. Read the context and extract the answer "
    "directly from it, as a short span copied exactly. If the answer is not in the context, output an empty "
    "string. Output nothing else."
)


class SquadTask(Task):
    """SQuAD v1.1: the target is the first reference, scoring takes the max over all of them.

    ``max_new_tokens`` is 48: the longest answer in the bundled samples is 25 words (about 40 tokens) and
    generation stops at the end of turn anyway. The AdamDDS preset passes 100 (§A.10).
    ``prompt_style="adamdds"`` reproduces that study's user message, "Context-" + context + "Question-" +
    question with no separator (§A.4), under a paraphrased system message.
    """

    name = "squad"
    kind = "extractive_qa"
    primary_metric = "f1"
    prompt_styles = ("default", "adamdds")
    max_new_tokens = 48
    bundled_files = {"train": "squad_v1.1/train.jsonl", "eval": "squad_v1.1/dev.jsonl"}
    hub_splits = {"train": "train", "eval": "validation"}

    def prompt(self, context: str, question: str) -> tuple[dict[str, str], ...]:
        if self.prompt_style == "adamdds":
            return chat(ADAMDDS_SYSTEM_PROMPT, "Context-" + context + "Question-" + question)
        return chat(SYSTEM_PROMPT, f"Context:\n{context}\n\nQuestion: {question}")

    def example_from_record(self, record: Mapping[str, Any], default_id: str) -> Example:
        answers = record["answers"]["text"]
        if isinstance(answers, str) or not answers or not all(isinstance(answer, str) for answer in answers):
            raise ValueError(f"answers.text must be a non-empty list of strings, got {answers!r}")
        return Example(
            id=str(record.get("id", default_id)),
            messages=self.prompt(string_field(record, "context"), string_field(record, "question")),
            target=answers[0],
            references=tuple(answers),
        )

    def parse(self, generated: str) -> str | None:
        """The answer span: the first line, stripped; ``None`` when it is empty."""
        return generated.strip().split("\n", 1)[0].strip() or None

    def score(self, predictions: Sequence[str | None], examples: Sequence[Example]) -> dict[str, float]:
        """Official v1.1 exact match and F1 as fractions in [0, 1]; an invalid (empty) answer scores 0."""
        scores = squad_scores(
            ["" if prediction is None else prediction for prediction in predictions],
            [example.references for example in examples],
        )
        return {**scores, "n_total": len(examples), "n_invalid": sum(p is None for p in predictions)}

    def _records_from_document(self, document: Any, name: str) -> Records:
        """Also accepts the official nested file (``train-v1.1.json`` / ``dev-v1.1.json``), flattened to the hub
        layout."""
        if not (isinstance(document, dict) and "data" in document):
            return super()._records_from_document(document, name)
        try:
            records = [
                {
                    "id": qa["id"],
                    "context": paragraph["context"],
                    "question": qa["question"],
                    "answers": {"text": [answer["text"] for answer in qa["answers"]]},
                }
                for article in document["data"]
                for paragraph in article["paragraphs"]
                for qa in paragraph["qas"]
            ]
        except (KeyError, TypeError) as error:
            raise DataError(f"{name}: not in the official SQuAD layout (missing {error})") from error
        return records, lambda index: f"{name}, question id {records[index]['id']}"
