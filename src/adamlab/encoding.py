"""From task examples to model inputs, shared by training and evaluation: one prompt template for both, prompt
masking with the prefix check, and padding."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch

from .models import PINNED_DATE
from .tasks.base import Example

IGNORE_INDEX = -100


class PromptMaskError(ValueError):
    """The tokenised prompt is not a prefix of the tokenised prompt + answer, so masking would be wrong."""


def render_prompt(tokenizer, messages: Sequence[dict], answer: str | None = None) -> str:
    """The chat-template text of ``messages`` ending where the assistant's answer starts, or with ``answer``
    included as the assistant turn. Templates that insert a date get a pinned one; tokenizers without a chat
    template get a plain "role: content" layout."""
    if answer is not None:
        messages = [*messages, {"role": "assistant", "content": answer}]
    if getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template(
            list(messages), tokenize=False, add_generation_prompt=answer is None, date_string=PINNED_DATE
        )
    text = "".join(f"{m['role']}: {m['content']}\n\n" for m in messages)
    if answer is None:
        return text + "assistant: "
    return text.removesuffix("\n\n") + (tokenizer.eos_token or "")


def tokenize(tokenizer, text: str) -> list[int]:
    # The chat template already carries the special tokens (BOS included), so none are added twice.
    return tokenizer(text, add_special_tokens=False)["input_ids"]


@dataclass(frozen=True)
class Encoded:
    input_ids: list[int]
    labels: list[int] | int | float  # per-token labels (causal LM), a class index (classifier) or a score (regression)
    truncated: bool


def encode_causal(tokenizer, example: Example, max_seq_len: int, mask_prompt: bool = True) -> Encoded:
    prompt = tokenize(tokenizer, render_prompt(tokenizer, example.messages))
    full = tokenize(tokenizer, render_prompt(tokenizer, example.messages, example.target))
    if full[: len(prompt)] != prompt:
        raise PromptMaskError(
            f"example {example.id}: the tokenised prompt is not a prefix of prompt + answer, so the prompt cannot be "
            "masked exactly (check the chat template's assistant turn)"
        )
    labels = [IGNORE_INDEX] * len(prompt) + full[len(prompt):] if mask_prompt else list(full)
    truncated = len(full) > max_seq_len
    if truncated:  # drop the start of the prompt: the answer is what the loss needs
        full, labels = full[-max_seq_len:], labels[-max_seq_len:]
    return Encoded(full, labels, truncated)


def encode_prompt(tokenizer, example: Example, max_seq_len: int) -> Encoded:
    """The evaluation input: the same prompt as in training, ending where the answer starts."""
    prompt = tokenize(tokenizer, render_prompt(tokenizer, example.messages))
    return Encoded(prompt[-max_seq_len:], IGNORE_INDEX, len(prompt) > max_seq_len)


def encode_classifier(tokenizer, example: Example, max_seq_len: int) -> Encoded:
    """A classification (or regression) head's input: the text, or a sentence pair in the tokenizer's own pair
    layout (``[CLS] a [SEP] b [SEP]``, ``<s> a </s></s> b </s>``)."""
    if example.text is None or example.label is None:
        raise ValueError(f"example {example.id} has no text/label for a classification head")
    ids = tokenizer(example.text, example.text_pair, truncation=False)["input_ids"]
    truncated = len(ids) > max_seq_len
    if truncated:  # keep the closing special token ([SEP]) in place
        ids = ids[: max_seq_len - 1] + ids[-1:]
    return Encoded(ids, example.label, truncated)


def collate(batch: Sequence[Encoded], pad_id: int, padding_side: str = "right") -> dict[str, torch.Tensor]:
    width = max(len(e.input_ids) for e in batch)
    input_ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
    attention = torch.zeros((len(batch), width), dtype=torch.long)
    token_labels = isinstance(batch[0].labels, list)
    labels = torch.full((len(batch), width), IGNORE_INDEX, dtype=torch.long) if token_labels else None
    for row, e in enumerate(batch):
        span = slice(0, len(e.input_ids)) if padding_side == "right" else slice(width - len(e.input_ids), width)
        input_ids[row, span] = torch.tensor(e.input_ids)
        attention[row, span] = 1
        if token_labels:
            labels[row, span] = torch.tensor(e.labels)
    out = {"input_ids": input_ids, "attention_mask": attention}
    if token_labels:
        out["labels"] = labels
    elif batch[0].labels != IGNORE_INDEX:
        regression = isinstance(batch[0].labels, float)
        out["labels"] = torch.tensor([e.labels for e in batch], dtype=torch.float32 if regression else torch.long)
    return out


def _check_eos(tokenizer) -> None:
    if tokenizer.eos_token_id is None:
        raise ValueError("packing documents needs a tokenizer with an end-of-sequence token")


def token_stream(tokenizer, documents: Sequence[str]) -> list[int]:
    """The documents' tokens end to end, each document followed by the end-of-sequence token, so the model learns
    where documents stop and one never runs into the next unmarked. No BOS or other special tokens are added."""
    _check_eos(tokenizer)
    stream: list[int] = []
    for ids in tokenizer(list(documents), add_special_tokens=False)["input_ids"]:
        stream += ids
        stream.append(tokenizer.eos_token_id)
    return stream


def pack_stream(stream: Sequence[int], seq_len: int) -> list[Encoded]:
    """Fixed-length training sequences over a token stream, nanoGPT's (x, y) = (t[i:i+T], t[i+1:i+T+1]) written as
    one row of T + 1 tokens whose labels are its own ids (the loss shifts them): consecutive rows overlap by exactly
    one token, so every token after the first is a prediction target exactly once, none lost, none repeated. The
    last row is shorter when the stream does not divide evenly; its tokens count all the same."""
    if seq_len < 1:
        raise ValueError(f"seq_len must be >= 1, got {seq_len}")
    rows = []
    for start in range(0, max(len(stream) - 1, 0), seq_len):
        ids = list(stream[start : start + seq_len + 1])
        rows.append(Encoded(ids, list(ids), False))
    return rows


def pack_documents(tokenizer, documents: Sequence[str], seq_len: int) -> list[Encoded]:
    """``pack_stream(token_stream(...))``: the documents as rows of ``seq_len`` next-token predictions."""
    return pack_stream(token_stream(tokenizer, documents), seq_len)


class StreamPacker:
    """``pack_stream`` one row at a time over documents read only when a row needs them, for corpora too large to
    tokenise before training starts. Over one pass of documents it yields exactly ``pack_documents``'s rows (each
    document tokenised alone, as ``token_stream`` tokenises them, then followed by the end-of-sequence token).

    ``tokens`` is the stream from the next row's first token on: at most one row plus the rest of the last document
    read, so memory does not grow with the corpus. It is the packer's whole state, which a checkpoint keeps."""

    def __init__(self, tokenizer, seq_len: int, tokens: Sequence[int] = ()):
        if seq_len < 1:
            raise ValueError(f"seq_len must be >= 1, got {seq_len}")
        _check_eos(tokenizer)
        self.tokenizer, self.seq_len = tokenizer, seq_len
        self.tokens = tokens

    @property
    def tokens(self) -> list[int]:
        return self._buffer[self._start:]

    @tokens.setter
    def tokens(self, tokens: Sequence[int]) -> None:
        # The next row starts at _start: advancing an index instead of deleting from the front of the list keeps a
        # book-length document linear to pack.
        self._buffer, self._start = list(tokens), 0

    def next_row(self, documents: Iterator[str]) -> Encoded | None:
        """The next row, reading documents from ``documents`` until it is full; ``None`` once they are exhausted and
        no row is left (the state is then empty, ready for the next pass)."""
        while len(self._buffer) - self._start <= self.seq_len:
            text = next(documents, None)
            if text is None:
                break
            self.tokens = [*self.tokens, *tokenize(self.tokenizer, text), self.tokenizer.eos_token_id]
        if len(self._buffer) - self._start < 2:  # a lone last token predicts nothing: pack_stream makes no row of it
            self.tokens = []
            return None
        ids = self._buffer[self._start : self._start + self.seq_len + 1]
        self._start += self.seq_len  # the row's last token starts the next row: the one-token overlap
        return Encoded(ids, list(ids), False)
