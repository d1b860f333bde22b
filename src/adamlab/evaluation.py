"""Evaluate a model on every example of a task: nothing dropped, unparseable outputs counted as wrong.

Three ways to predict, by model head and task:

* ``classifier``: an encoder with a classification head; the prediction is the argmax logit (the single output
  itself on a regression task, STS-B).
* ``score``: a causal LM ranks the task's answer choices (class names, option letters) by the log-likelihood
  of each as the assistant's answer, continuing the exact training prompt.
* ``perplexity``: a language-modelling corpus; the held-out documents are packed exactly as in training and the
  metric is exp of the mean next-token loss over every predicted token.
* ``generate``: batched greedy generation (left padding, KV cache) with an explicit decoding configuration that
  never inherits the checkpoint's ``generation_config.json``, stopped at every end-of-turn token, then parsed by
  the task.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any

import torch

from .encoding import (IGNORE_INDEX, Encoded, collate, encode_classifier, encode_prompt, pack_documents, render_prompt,
                       tokenize)
from .tasks.base import Example, Task

END_OF_TURN_TOKENS = ("<|im_end|>", "<|eot_id|>", "<|end_of_text|>", "<|endoftext|>", "<end_of_turn>", "</s>")


@dataclass
class EvalResult:
    metrics: dict[str, Any]
    predictions: list[dict[str, Any]]
    mode: str
    settings: dict[str, Any] = field(default_factory=dict)  # the effective decoding / scoring configuration
    seconds: float = 0.0


def resolve_mode(task: Task, head: str, mode: str = "auto") -> str:
    if task.kind == "language_modeling":
        if head != "causal_lm":
            raise ValueError(f"task {task.name!r} is language modelling; it needs a causal LM")
        return "perplexity"
    if head == "classifier":
        if task.num_labels is None:
            raise ValueError(f"task {task.name!r} ({task.kind}) needs a causal LM, not a classification head")
        return "classifier"
    if mode == "auto":
        return "score" if task.answer_choices else "generate"
    if mode == "score" and not task.answer_choices:
        raise ValueError(f"task {task.name!r} has no answer choices to score; use generate")
    return mode


def stop_token_ids(model, tokenizer) -> list[int]:
    """Every end-of-turn id: the tokenizer's eos, the checkpoint's eos list, and the known chat markers."""
    ids = set()
    configured = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    for value in (tokenizer.eos_token_id, configured):
        if isinstance(value, int):
            ids.add(value)
        elif isinstance(value, (list, tuple)):
            ids.update(value)
    vocab = tokenizer.get_vocab()
    ids.update(vocab[token] for token in END_OF_TURN_TOKENS if token in vocab)
    return sorted(ids)


def greedy_generation_config(model, tokenizer, max_new_tokens: int):
    from transformers import GenerationConfig

    return GenerationConfig(
        max_new_tokens=max_new_tokens,
        do_sample=False,
        num_beams=1,
        temperature=None,
        top_p=None,
        top_k=None,
        repetition_penalty=1.0,
        eos_token_id=stop_token_ids(model, tokenizer),
        pad_token_id=tokenizer.pad_token_id,
        use_cache=True,
    )


def _cut_at_end_of_turn(text: str) -> str:
    positions = [text.find(token) for token in END_OF_TURN_TOKENS if token in text]
    return text[: min(positions)] if positions else text


@torch.no_grad()
def generate(model, tokenizer, examples: list[Example], max_new_tokens: int, batch_size: int, max_seq_len: int):
    """Greedy answers for ``examples``, in order. Batches group prompts of similar length to limit padding."""
    config = greedy_generation_config(model, tokenizer, max_new_tokens)
    encoded = [encode_prompt(tokenizer, e, max_seq_len) for e in examples]
    order = sorted(range(len(examples)), key=lambda i: len(encoded[i].input_ids))
    answers: list[str] = [""] * len(examples)
    device = next(model.parameters()).device
    for start in range(0, len(order), batch_size):
        rows = order[start : start + batch_size]
        batch = collate([encoded[i] for i in rows], tokenizer.pad_token_id, padding_side="left")
        batch = {k: v.to(device) for k, v in batch.items()}
        output = model.generate(**batch, generation_config=config)
        new_tokens = output[:, batch["input_ids"].shape[1] :]
        for row, tokens in zip(rows, new_tokens):
            text = tokenizer.decode(tokens, skip_special_tokens=False)
            answers[row] = tokenizer.decode(
                tokenizer(_cut_at_end_of_turn(text), add_special_tokens=False)["input_ids"], skip_special_tokens=True
            ).strip()
    return answers, {k: v for k, v in config.to_diff_dict().items() if k != "transformers_version"}


def _choice_continuations(tokenizer, example: Example, choices: tuple[str, ...], max_seq_len: int):
    """Prompt ids and, per choice, the answer's ids as they follow the prompt in training. The template's closing
    tokens, identical for every choice, are dropped so only the answers themselves are compared."""
    prompt = tokenize(tokenizer, render_prompt(tokenizer, example.messages))
    continuations = []
    for choice in choices:
        full = tokenize(tokenizer, render_prompt(tokenizer, example.messages, choice))
        if full[: len(prompt)] != prompt:
            raise ValueError(f"example {example.id}: the prompt is not a prefix of prompt + {choice!r}")
        continuations.append(full[len(prompt):])
    while all(len(c) > 1 for c in continuations) and len({c[-1] for c in continuations}) == 1:
        continuations = [c[:-1] for c in continuations]
    keep = max_seq_len - max(len(c) for c in continuations)
    return prompt[-keep:], continuations


@torch.no_grad()
def score_choices(model, tokenizer, examples: list[Example], choices: tuple[str, ...], batch_size: int,
                  max_seq_len: int) -> list[int]:
    """For each example, the index of the choice with the highest summed log-likelihood (ties: the first)."""

    sequences, spans = [], []
    for example in examples:
        prompt, continuations = _choice_continuations(tokenizer, example, choices, max_seq_len)
        for continuation in continuations:
            sequences.append(Encoded(prompt + continuation, -100, False))
            spans.append((len(prompt), len(continuation)))
    device = next(model.parameters()).device
    scores = torch.empty(len(sequences), dtype=torch.float64)
    for start in range(0, len(sequences), batch_size):
        chunk = sequences[start : start + batch_size]
        batch = collate(chunk, tokenizer.pad_token_id, padding_side="right")
        logits = model(input_ids=batch["input_ids"].to(device), attention_mask=batch["attention_mask"].to(device)).logits
        log_probs = torch.log_softmax(logits.double(), dim=-1)
        for row in range(len(chunk)):
            begin, length = spans[start + row]
            targets = batch["input_ids"][row, begin : begin + length].to(device)
            predicted_by = log_probs[row, begin - 1 : begin - 1 + length]  # position i predicts token i + 1
            scores[start + row] = predicted_by.gather(-1, targets[:, None]).sum()
    return scores.view(len(examples), len(choices)).argmax(dim=1).tolist()


@torch.no_grad()
def classify(model, tokenizer, examples: list[Example], batch_size: int, max_seq_len: int,
             regression: bool = False) -> list[int] | list[float]:
    """The argmax class of each example, or with ``regression`` the head's single output."""
    device = next(model.parameters()).device
    predictions = []
    for start in range(0, len(examples), batch_size):
        chunk = [encode_classifier(tokenizer, e, max_seq_len) for e in examples[start : start + batch_size]]
        batch = collate(chunk, tokenizer.pad_token_id)
        logits = model(input_ids=batch["input_ids"].to(device), attention_mask=batch["attention_mask"].to(device)).logits
        predictions += logits[:, 0].double().tolist() if regression else logits.argmax(dim=-1).tolist()
    return predictions


@torch.no_grad()
def sequence_losses(model, rows: list[Encoded], pad_id: int, batch_size: int) -> list[tuple[float, int]]:
    """(summed next-token loss in float64, number of predicted tokens) of each packed row."""
    device = next(model.parameters()).device
    results = []
    for start in range(0, len(rows), batch_size):
        batch = collate(rows[start : start + batch_size], pad_id)
        logits = model(input_ids=batch["input_ids"].to(device), attention_mask=batch["attention_mask"].to(device)).logits
        targets = batch["labels"][:, 1:].to(device)
        losses = torch.nn.functional.cross_entropy(logits[:, :-1].double().transpose(1, 2), targets,
                                                   ignore_index=IGNORE_INDEX, reduction="none")
        counts = (targets != IGNORE_INDEX).sum(dim=1)
        results += [(loss, int(count)) for loss, count in zip(losses.sum(dim=1).tolist(), counts.tolist())]
    return results


def evaluate(model, tokenizer, head: str, task: Task, examples: list[Example], *, mode: str = "auto",
             batch_size: int = 16, max_seq_len: int = 1024) -> EvalResult:
    """Score ``model`` on all ``examples``; the model is put in eval mode and restored afterwards."""
    mode = resolve_mode(task, head, mode)
    was_training = model.training
    model.eval()
    started = time.perf_counter()
    try:
        settings: dict[str, Any] = {"batch_size": batch_size, "max_seq_len": max_seq_len}
        if mode == "perplexity":
            rows = pack_documents(tokenizer, [e.text for e in examples], max_seq_len)
            raw = predictions = sequence_losses(model, rows, tokenizer.pad_token_id, batch_size)
            settings["sequences"] = len(rows)
        elif mode == "classifier":
            raw = predictions = classify(model, tokenizer, examples, batch_size, max_seq_len,
                                         regression=task.kind == "regression")
        elif mode == "score":
            raw = predictions = score_choices(model, tokenizer, examples, task.answer_choices, batch_size, max_seq_len)
            settings["choices"] = list(task.answer_choices)
        else:
            raw, generation = generate(model, tokenizer, examples, task.max_new_tokens, batch_size, max_seq_len)
            predictions = [task.parse(text) for text in raw]
            settings["generation"] = generation
    finally:
        model.train(was_training)
    metrics = task.score(predictions, examples)
    if mode == "perplexity":  # one record per evaluated sequence: its loss and tokens
        records = [{"id": str(i), "loss": loss, "tokens": count, "perplexity": math.exp(min(loss / count, 700.0)) if count else None}
                   for i, (loss, count) in enumerate(predictions)]
    else:
        records = [{"id": e.id, "output": r, "prediction": p, "references": list(e.references)}
                   for e, r, p in zip(examples, raw, predictions)]
    return EvalResult(metrics, records, mode, settings, time.perf_counter() - started)
