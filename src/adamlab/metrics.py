"""Evaluation metrics, written to match the official definitions exactly (docs/protocols.md §G.7, §A.9, §E).

* SQuAD v1.1: the semantics of the official ``evaluate-v1.1.py`` (normalisation that *deletes* ASCII
  punctuation, max over all references, F1 = 0 without a common token), reported as fractions in [0, 1].
* Classification: accuracy and F1 over the true classes only, with invalid predictions kept as a sentinel
  class ``-1`` that is always wrong (the published AG News evaluation dropped them instead).
* GSM8K: final-number extraction and numeric comparison.
* GLUE: Matthews correlation (CoLA) and Pearson / Spearman correlation (STS-B), as GLUE's scorer computes them
  (scikit-learn's ``matthews_corrcoef``, scipy's ``pearsonr`` / ``spearmanr``).

Every function averages over all the examples it is given: nothing is dropped.
"""

from __future__ import annotations

import math
import re
import string
from collections import Counter
from collections.abc import Sequence
from decimal import Decimal, InvalidOperation

INVALID = -1
"""The sentinel class of a classification prediction that could not be parsed."""

# ---------------------------------------------------------------------------------------------- SQuAD v1.1

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCTUATION = frozenset(string.punctuation)


def normalize_answer(text: str) -> str:
    """The official v1.1 normalisation, in its order: lower-case, delete ASCII punctuation, articles -> space,
    collapse whitespace. Deleting (not spacing) punctuation is what makes "U.S." equal "us"."""
    text = "".join(char for char in text.lower() if char not in _PUNCTUATION)
    return " ".join(_ARTICLES.sub(" ", text).split())


def squad_exact_match(prediction: str, reference: str) -> float:
    return float(normalize_answer(prediction) == normalize_answer(reference))


def squad_f1(prediction: str, reference: str) -> float:
    """Bag-of-tokens F1 of v1.1: 0 when no token is shared, so an empty prediction scores 0 (no v2.0 special case)."""
    prediction_tokens = normalize_answer(prediction).split()
    reference_tokens = normalize_answer(reference).split()
    num_same = sum((Counter(prediction_tokens) & Counter(reference_tokens)).values())
    if num_same == 0:
        return 0.0
    precision = num_same / len(prediction_tokens)
    recall = num_same / len(reference_tokens)
    return 2 * precision * recall / (precision + recall)


def squad_scores(predictions: Sequence[str], references: Sequence[Sequence[str]]) -> dict[str, float]:
    """Exact match and F1 as fractions, each the per-question max over all references, averaged over all questions."""
    _check_same_length(predictions, references)
    exact_match = f1 = 0.0
    for prediction, answers in zip(predictions, references):
        if not answers:
            raise ValueError("every question needs at least one reference answer")
        exact_match += max(squad_exact_match(prediction, answer) for answer in answers)
        f1 += max(squad_f1(prediction, answer) for answer in answers)
    return {"exact_match": exact_match / len(predictions), "f1": f1 / len(predictions)}


# ---------------------------------------------------------------------------------------------- classification


def f1_per_class(predictions: Sequence[int], labels: Sequence[int], num_classes: int) -> list[float]:
    """F1 of each true class 0..num_classes-1; 0 where it is undefined (sklearn's ``zero_division=0``)."""
    _check_classes(predictions, labels, num_classes)
    scores = []
    for cls in range(num_classes):
        true_positives = sum(p == cls and y == cls for p, y in zip(predictions, labels))
        predicted = sum(p == cls for p in predictions)
        actual = sum(y == cls for y in labels)
        denominator = predicted + actual  # = 2 TP + FP + FN
        scores.append(2 * true_positives / denominator if denominator else 0.0)
    return scores


def classification_scores(predictions: Sequence[int], labels: Sequence[int], num_classes: int) -> dict[str, float]:
    """Accuracy, macro-F1 and support-weighted F1 over the true classes, plus ``n_total`` and ``n_invalid``.

    Invalid predictions (``INVALID`` = -1) stay in the denominator and count as wrong. F1 averages only the true
    classes, so the sentinel never becomes a class of its own, which is what ``f1_score`` without ``labels=``
    did in the published AG News evaluation.
    """
    per_class = f1_per_class(predictions, labels, num_classes)
    support = Counter(labels)
    return {
        "accuracy": sum(p == y for p, y in zip(predictions, labels)) / len(labels),
        "macro_f1": sum(per_class) / num_classes,
        "weighted_f1": sum(score * support[cls] for cls, score in enumerate(per_class)) / len(labels),
        "n_total": len(labels),
        "n_invalid": sum(p == INVALID for p in predictions),
    }


def matthews_correlation(predictions: Sequence[int], labels: Sequence[int]) -> float:
    """Matthews correlation coefficient over every class that occurs (Gorodkin's multi-class form, which is the
    binary MCC when there are two), 0 where it is undefined; the semantics of sklearn's ``matthews_corrcoef``.
    An invalid prediction (-1) is a class of its own, never equal to a label, so it always counts against.

    Written out (a dozen lines) because scikit-learn is not a runtime dependency; the tests compare it with sklearn.
    """
    _check_same_length(predictions, labels)
    n = len(labels)
    correct = sum(p == y for p, y in zip(predictions, labels))
    predicted, actual = Counter(predictions), Counter(labels)
    classes = predicted.keys() | actual.keys()
    covariance = correct * n - sum(predicted[c] * actual[c] for c in classes)
    predicted_spread = n * n - sum(count * count for count in predicted.values())
    actual_spread = n * n - sum(count * count for count in actual.values())
    if predicted_spread == 0 or actual_spread == 0:
        return 0.0
    return covariance / math.sqrt(predicted_spread * actual_spread)


def _check_classes(predictions: Sequence[int], labels: Sequence[int], num_classes: int) -> None:
    _check_same_length(predictions, labels)
    if any(not 0 <= y < num_classes for y in labels):
        raise ValueError(f"labels must be class indices 0..{num_classes - 1}")
    if any(not INVALID <= p < num_classes for p in predictions):
        raise ValueError(f"predictions must be class indices 0..{num_classes - 1} or {INVALID} (invalid)")


# ---------------------------------------------------------------------------------------------- language modelling


def perplexity_scores(loss_sums: Sequence[float], token_counts: Sequence[int]) -> dict[str, float]:
    """Mean next-token loss (nats) over every predicted token of every sequence, and perplexity = exp(that mean):
    a token-weighted mean, so long and short sequences count by their tokens, not once each."""
    _check_same_length(loss_sums, token_counts)
    tokens = sum(token_counts)
    if tokens < 1:
        raise ValueError("no tokens to score")
    loss = math.fsum(loss_sums) / tokens
    return {"loss": loss, "perplexity": math.exp(loss) if loss < 700 else math.inf, "n_tokens": tokens}


# ---------------------------------------------------------------------------------------------- correlation (STS-B)


def pearson_correlation(predictions: Sequence[float], references: Sequence[float]) -> float:
    """Pearson's r in float64; ``nan`` when either side is constant (as scipy, which also warns). Written out
    because scipy is not a runtime dependency; the tests compare it with ``scipy.stats.pearsonr``."""
    _check_same_length(predictions, references)
    n = len(references)
    mean_p, mean_r = math.fsum(predictions) / n, math.fsum(references) / n
    dp = [p - mean_p for p in predictions]
    dr = [r - mean_r for r in references]
    denominator = math.sqrt(math.fsum(a * a for a in dp) * math.fsum(b * b for b in dr))
    if denominator == 0:
        return math.nan
    return max(-1.0, min(1.0, math.fsum(a * b for a, b in zip(dp, dr)) / denominator))


def average_ranks(values: Sequence[float]) -> list[float]:
    """1-based ranks with ties given the mean of the ranks they span (scipy's ``rankdata(method="average")``)."""
    order = sorted(range(len(values)), key=values.__getitem__)
    ranks = [0.0] * len(values)
    start = 0
    while start < len(order):
        end = start
        while end + 1 < len(order) and values[order[end + 1]] == values[order[start]]:
            end += 1
        for position in range(start, end + 1):
            ranks[order[position]] = (start + end) / 2 + 1
        start = end + 1
    return ranks


def spearman_correlation(predictions: Sequence[float], references: Sequence[float]) -> float:
    """Spearman's rho: Pearson's r of the average ranks (``scipy.stats.spearmanr``)."""
    _check_same_length(predictions, references)
    return pearson_correlation(average_ranks(predictions), average_ranks(references))


def _check_same_length(predictions: Sequence, references: Sequence) -> None:
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions for {len(references)} examples")
    if not predictions:
        raise ValueError("no examples to score")


# ---------------------------------------------------------------------------------------------- GSM8K

# "1,234.5", "-3", "42": thousands commas only in groups of three, and a minus sign only where it cannot be the
# subtraction in "5-3".
_NUMBER = re.compile(r"(?:(?<!\w)-)?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?")


def gsm8k_reference_answer(solution: str) -> str:
    """The final answer of a GSM8K reference solution: the number after ``####``, commas removed."""
    if "####" not in solution:
        raise ValueError(f"GSM8K solution has no '####' final answer: {solution[-80:]!r}")
    return solution.rpartition("####")[2].strip().replace(",", "")


def extract_final_number(text: str) -> str | None:
    """The number after the last ``####`` if one follows it, else the last number in ``text``; commas removed.

    ``None`` when the text holds no number at all (an invalid prediction, scored as wrong).
    """
    _, marker, after = text.rpartition("####")
    after_marker = _NUMBER.search(after) if marker else None
    if after_marker:
        return after_marker.group().replace(",", "")
    numbers = _NUMBER.findall(text)
    return numbers[-1].replace(",", "") if numbers else None


def numbers_match(prediction: str | None, reference: str | None) -> bool:
    """Numeric equality after removing commas, so "1,000" == "1000" and "8.0" == "8" (and "7.50" == "7.5")."""
    if prediction is None or reference is None:
        return False
    try:
        return Decimal(prediction.replace(",", "").strip()) == Decimal(reference.replace(",", "").strip())
    except InvalidOperation:
        return False


def final_number_accuracy(predictions: Sequence[str | None], references: Sequence[str]) -> float:
    """The fraction of predictions (``None`` = invalid, wrong) whose number equals the reference numerically."""
    _check_same_length(predictions, references)
    return sum(numbers_match(p, reference) for p, reference in zip(predictions, references)) / len(references)
