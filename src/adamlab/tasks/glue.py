"""The GLUE benchmark next to SST-2: CoLA, MRPC, QQP, STS-B, MNLI (matched and mismatched), QNLI and RTE.

Task names are the Hugging Face ``glue`` config names. Each task serves both model kinds from one record:

* encoders get ``text`` (and ``text_pair`` for sentence pairs) for a classification head, or a one-output
  regression head on STS-B;
* causal LMs get a chat prompt and answer with a word (``yes``/``no``, or the MNLI relation), read back by a strict
  first-word parser; on STS-B they answer with the similarity score, a number from 0 to 5.

Scores are GLUE's: accuracy everywhere, F1 of the positive class on MRPC and QQP, Matthews correlation on CoLA,
Pearson and Spearman correlation on STS-B.

Bundled samples (``data/glue``, sources in its READMEs) lack some official splits. QNLI ships only its validation
set and QQP only a train sample, so offline each is cut in two: a seeded held-out slice of ``CARVED_EVAL_SIZE``
records is the eval split, the rest the train split, never overlapping. MNLI ships nothing: pass local files or
``nyu-mll/glue``.
"""

from __future__ import annotations

import random
import re
import string
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

from ..metrics import f1_per_class, matthews_correlation, pearson_correlation, spearman_correlation
from .base import ClassificationTask, Example, Records, Task, chat, class_index, class_predictions, string_field

HUB_ID = "nyu-mll/glue"
CARVED_EVAL_SIZE = 1000  # the held-out slice of a bundled file that is the only split of its task
CARVE_SEED = 0
STSB_RANGE = (0.0, 5.0)

_NUMBER_ANSWER = re.compile(r"\s*(\d+(?:\.\d+)?)")


def first_word(generated: str) -> str | None:
    """The first word, lower-case and without surrounding punctuation, or ``None`` for an empty output."""
    words = generated.split()
    return words[0].strip(string.punctuation).lower() if words else None


class GlueTask(Task):
    """What every GLUE task shares: reading the bundled sample (and carving a missing split), the hub config, and a
    prompt made of an instruction and one or two labelled text fields."""

    text_fields: ClassVar[tuple[str, ...]]  # the record's input fields, in order (one, or a sentence pair)
    field_titles: ClassVar[tuple[str, ...]]  # how the prompt names them ("Premise", "Hypothesis")
    instruction: ClassVar[str]
    hub_config: ClassVar[str]  # the task's config of the hub's glue dataset
    hub_splits = {"train": "train", "eval": "validation"}  # GLUE's test labels are hidden (-1)

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if "hub_config" in cls.__dict__:
            cls.hub_configs = {HUB_ID: cls.hub_config, "glue": cls.hub_config}

    def prompt(self, texts: Sequence[str]) -> tuple[dict[str, str], ...]:
        if len(texts) == 1:
            return chat(self.instruction, texts[0].strip())
        return chat(self.instruction, "\n".join(f"{title}: {text.strip()}" for title, text in
                                                zip(self.field_titles, texts, strict=True)))

    def inputs(self, record: Mapping[str, Any]) -> list[str]:
        return [string_field(record, name) for name in self.text_fields]

    def record_id(self, record: Mapping[str, Any], default_id: str) -> str:
        return str(record.get("idx", record.get("id", default_id)))

    def _read(self, split: str, source: str | None) -> Records:
        if source is not None or "all" not in self.bundled_files:
            return super()._read(split, source)
        records, where = super()._read("all", None)
        held_out = set(random.Random(CARVE_SEED).sample(range(len(records)), CARVED_EVAL_SIZE))
        keep = [i for i in range(len(records)) if (i in held_out) == (split == "eval")]
        return [records[i] for i in keep], lambda index: where(keep[index])


class GlueClassificationTask(GlueTask, ClassificationTask):
    """A GLUE classification task; ``answer_choices[label]`` is the word a causal LM answers with."""

    max_new_tokens = 3
    positive_f1: ClassVar[bool] = False  # MRPC, QQP: GLUE also reports the F1 of class 1

    def example_from_record(self, record: Mapping[str, Any], default_id: str) -> Example:
        texts = self.inputs(record)
        label = class_index(record["label"], len(self.answer_choices))
        answer = self.answer_choices[label]
        return Example(
            id=self.record_id(record, default_id),
            messages=self.prompt(texts),
            target=answer,
            references=(answer,),
            label=label,
            text=texts[0],
            text_pair=texts[1] if len(texts) > 1 else None,
        )

    def parse(self, generated: str) -> int | None:
        """The first word ("Yes." is valid); any other first word is invalid."""
        word = first_word(generated)
        return self.answer_choices.index(word) if word in self.answer_choices else None

    def score(self, predictions: Sequence[int | None], examples: Sequence[Example]) -> dict[str, float]:
        scores = super().score(predictions, examples)
        if self.positive_f1:
            labels = [example.label for example in examples]
            scores["f1"] = f1_per_class(class_predictions(predictions), labels, len(self.answer_choices))[1]
        return scores


class ColaTask(GlueClassificationTask):
    name = hub_config = "cola"
    primary_metric = "matthews_correlation"
    answer_choices = ("no", "yes")  # 0 unacceptable, 1 acceptable
    text_fields = ("sentence",)
    field_titles = ("Sentence",)
    instruction = "Is the following sentence grammatically acceptable English? Reply with one word: yes or no."
    bundled_files = {"train": "glue/cola/train.jsonl", "eval": "glue/cola/validation.jsonl"}

    def score(self, predictions: Sequence[int | None], examples: Sequence[Example]) -> dict[str, float]:
        labels = [example.label for example in examples]
        return {**super().score(predictions, examples),
                "matthews_correlation": matthews_correlation(class_predictions(predictions), labels)}


class MrpcTask(GlueClassificationTask):
    name = hub_config = "mrpc"
    answer_choices = ("no", "yes")  # 0 not_equivalent, 1 equivalent
    positive_f1 = True
    text_fields = ("sentence1", "sentence2")
    field_titles = ("Sentence 1", "Sentence 2")
    instruction = "Do the two sentences say the same thing? Reply with one word: yes or no."
    bundled_files = {"train": "glue/mrpc/train.jsonl", "eval": "glue/mrpc/validation.jsonl"}


class QqpTask(GlueClassificationTask):
    name = hub_config = "qqp"
    answer_choices = ("no", "yes")  # 0 not_duplicate, 1 duplicate
    positive_f1 = True
    text_fields = ("question1", "question2")
    field_titles = ("Question 1", "Question 2")
    instruction = "Do the two questions ask the same thing? Reply with one word: yes or no."
    bundled_files = {"all": "glue/qqp/train.jsonl"}  # a train sample only: both splits are carved from it


class RteTask(GlueClassificationTask):
    name = hub_config = "rte"
    answer_choices = ("yes", "no")  # 0 entailment, 1 not_entailment
    text_fields = ("sentence1", "sentence2")
    field_titles = ("Premise", "Hypothesis")
    instruction = "Does the premise entail the hypothesis? Reply with one word: yes or no."
    bundled_files = {"train": "glue/rte/train.jsonl", "eval": "glue/rte/validation.jsonl"}


class QnliTask(GlueClassificationTask):
    name = hub_config = "qnli"
    answer_choices = ("yes", "no")  # 0 entailment, 1 not_entailment
    text_fields = ("question", "sentence")
    field_titles = ("Question", "Sentence")
    instruction = "Does the sentence contain the answer to the question? Reply with one word: yes or no."
    bundled_files = {"all": "glue/qnli/validation.jsonl"}  # the validation set only: both splits are carved from it


class MnliTask(GlueClassificationTask):
    """MNLI evaluated on ``validation_matched`` (same genres as training); ``mnli_mismatched`` on the other genres."""

    name = hub_config = "mnli"
    answer_choices = ("entailment", "neutral", "contradiction")  # GLUE's label order
    max_new_tokens = 4
    text_fields = ("premise", "hypothesis")
    field_titles = ("Premise", "Hypothesis")
    instruction = ("Does the premise entail the hypothesis, contradict it, or neither? Reply with one word: "
                   "entailment, contradiction or neutral.")
    bundled_files = {}  # MNLI is too large for the bundled samples
    hub_splits = {"train": "train", "eval": "validation_matched"}


class MnliMismatchedTask(MnliTask):
    name = "mnli_mismatched"
    hub_splits = {"train": "train", "eval": "validation_mismatched"}


class StsbTask(GlueTask):
    """Semantic similarity as a score in [0, 5]: a one-output regression head on encoders, a number in the answer of
    a causal LM.

    Correlation has no "wrong" value for an unreadable answer, so an invalid prediction is scored as the end of the
    scale farthest from the gold score: it can only lower the correlation, never help it.
    """

    name = hub_config = "stsb"
    kind = "regression"
    primary_metric = "pearson"
    max_new_tokens = 6
    text_fields = ("sentence1", "sentence2")
    field_titles = ("Sentence 1", "Sentence 2")
    instruction = ("Rate how similar in meaning the two sentences are, from 0 (unrelated) to 5 (the same meaning). "
                   "Reply with the number only.")
    bundled_files = {"train": "glue/stsb/train.jsonl", "eval": "glue/stsb/validation.jsonl"}

    def example_from_record(self, record: Mapping[str, Any], default_id: str) -> Example:
        texts = self.inputs(record)
        score = record["label"]
        if isinstance(score, bool) or not isinstance(score, (int, float)) or not STSB_RANGE[0] <= score <= STSB_RANGE[1]:
            raise ValueError(f"label {score!r} is not a similarity score in [0, 5]")
        answer = format(round(float(score), 3), "g")  # 4.75 -> "4.75", 5.0 -> "5"
        return Example(
            id=self.record_id(record, default_id),
            messages=self.prompt(texts),
            target=answer,
            references=(answer,),
            label=float(score),
            text=texts[0],
            text_pair=texts[1],
        )

    def parse(self, generated: str) -> float | None:
        """A number in [0, 5] at the start, followed by nothing but whitespace or punctuation ("3.8." is valid,
        "3.8 out of 5" and "7" are not)."""
        match = _NUMBER_ANSWER.match(generated)
        if not match or generated[match.end():].strip(string.punctuation + string.whitespace):
            return None
        value = float(match.group(1))
        return value if STSB_RANGE[0] <= value <= STSB_RANGE[1] else None

    def score(self, predictions: Sequence[float | None], examples: Sequence[Example]) -> dict[str, float]:
        """Pearson and Spearman correlation (GLUE's ``pearson``, ``spearmanr``) over every example."""
        gold = [example.label for example in examples]
        low, high = STSB_RANGE
        filled = [(low if y > (low + high) / 2 else high) if p is None else p for p, y in zip(predictions, gold)]
        return {
            "pearson": pearson_correlation(filled, gold),
            "spearmanr": spearman_correlation(filled, gold),
            "n_total": len(gold),
            "n_invalid": sum(p is None for p in predictions),
        }


GLUE_TASKS: tuple[type[Task], ...] = (ColaTask, MrpcTask, QqpTask, StsbTask, MnliTask, MnliMismatchedTask, QnliTask,
                                       RteTask)
