"""AG News topic classification (4 classes), docs/protocols.md §A.4 with the corrected evaluation of §A.9."""

from __future__ import annotations

import re
import string
from collections.abc import Mapping
from typing import Any

from .base import ClassificationTask, Example, chat, class_index, string_field

CLASS_NAMES = ("World", "Sports", "Business", "Sci/Tech")  # label ids 0..3, as in the dataset

SYSTEM_PROMPT = (
    "You are a news topic classifier. Read the news article and reply with its topic, exactly one of: "
    "World, Sports, Business, Sci/Tech. Reply with the topic name only."
)

# A paraphrase of SYSTEM_PROMPT_AG in the AdamDDS study's data.py (the original string, with its typos, is not
# available), keeping its structure: leading and trailing newline, digit answers, "no other token".
ADAMDDS_SYSTEM_PROMPT = (
    "\nYou are a text classifier. You will be given a sentence and must classify it as World, Sports, Business "
    "or Sci/Tech, outputting 0, 1, 2 or 3 respectively. Your output must be strictly one of 0, 1, 2, 3 and no "
    "other token.\n"
)
ADAMDDS_USER_SUFFIX = " Classify the sentence"  # appended to the text, leading space included

_PUNCTUATION_OR_SPACE = f"[\\s{re.escape(string.punctuation)}]*"
_CLASS_NAME_ANSWER = re.compile(rf"\s*({'|'.join(map(re.escape, CLASS_NAMES))}){_PUNCTUATION_OR_SPACE}", re.IGNORECASE)
_DIGIT_ANSWER = re.compile(r"\s*([0-3])\s*")


class AgNewsTask(ClassificationTask):
    """AG News as generation: the model answers with the class name.

    ``prompt_style="adamdds"`` reproduces the structure of the AdamDDS study's prompt (§A.4): the paraphrased
    system message, the text followed by " Classify the sentence", and a single digit 0-3 as the answer, read with
    the strict digit rule of §A.9 #1. Its system message is a paraphrase, so tokenisation is not byte-identical to
    the original.
    """

    name = "ag_news"
    prompt_styles = ("default", "adamdds")
    max_new_tokens = 10  # §A.10; "Sci/Tech" is the longest answer at a few tokens
    bundled_files = {"train": "ag_news/train.jsonl", "eval": "ag_news/test.jsonl"}
    hub_splits = {"train": "train", "eval": "test"}

    def __init__(self, prompt_style: str = "default", max_new_tokens: int | None = None) -> None:
        super().__init__(prompt_style, max_new_tokens)
        self.answer_choices = ("0", "1", "2", "3") if prompt_style == "adamdds" else CLASS_NAMES

    def prompt(self, text: str) -> tuple[dict[str, str], ...]:
        if self.prompt_style == "adamdds":
            return chat(ADAMDDS_SYSTEM_PROMPT, text + ADAMDDS_USER_SUFFIX)
        return chat(SYSTEM_PROMPT, text)

    def example_from_record(self, record: Mapping[str, Any], default_id: str) -> Example:
        text = string_field(record, "text")
        label = class_index(record["label"], len(CLASS_NAMES))
        answer = self.answer_choices[label]
        return Example(
            id=str(record.get("id", default_id)),
            messages=self.prompt(text),
            target=answer,
            references=(answer,),
            label=label,
            text=text,
        )

    def parse(self, generated: str) -> int | None:
        """Strict: the whole answer is one class name (any case) followed only by whitespace or punctuation; in the
        adamdds style, one digit 0-3 followed only by whitespace. Anything else is invalid."""
        if self.prompt_style == "adamdds":
            match = _DIGIT_ANSWER.fullmatch(generated)
            return int(match.group(1)) if match else None
        match = _CLASS_NAME_ANSWER.fullmatch(generated)
        if not match:
            return None
        return [name.lower() for name in CLASS_NAMES].index(match.group(1).lower())
