import random

import pytest

from adamlab.metrics import (
    INVALID,
    classification_scores,
    extract_final_number,
    f1_per_class,
    final_number_accuracy,
    gsm8k_reference_answer,
    matthews_correlation,
    normalize_answer,
    numbers_match,
    pearson_correlation,
    spearman_correlation,
    squad_exact_match,
    squad_f1,
    squad_scores,
)

# ---------------------------------------------------------------------------------------------- SQuAD v1.1


@pytest.mark.parametrize(
    ("text", "normalised"),
    [
        ("U.S.", "us"),  # punctuation is deleted, not replaced by a space (the published mistake gave "u s")
        ("The Beatles", "beatles"),
        ("a cat and an owl", "cat and owl"),
        ("theatre anthem", "theatre anthem"),  # articles only as whole words
        ("don't-stop", "dontstop"),
        ("  Denver\tBroncos\n", "denver broncos"),
        ("Barack\u00a0Obama\u3000Jr", "barack obama jr"),  # unicode whitespace collapses too
        ("31–24", "31–24"),  # only ASCII punctuation is deleted; the en dash stays
        ("the.the", "thethe"),  # punctuation goes first, so "the" is no longer a word
        ("THE", ""),
        ("", ""),
    ],
)
def test_normalize_answer_follows_the_official_script(text, normalised):
    assert normalize_answer(text) == normalised


def test_exact_match_and_f1_per_pair():
    assert squad_exact_match("the U.S.", "US") == 1.0
    assert squad_exact_match("Denver Broncos", "Broncos") == 0.0
    # 1 common token of 2 predicted / 1 gold: precision 1/2, recall 1, F1 2/3
    assert squad_f1("Denver Broncos", "Broncos") == pytest.approx(2 / 3)
    # Counter intersection: "x y y" and "y y z" share two y's -> P = R = 2/3
    assert squad_f1("x y y", "y y z") == pytest.approx(2 / 3)


def test_empty_prediction_scores_zero_f1():
    assert squad_f1("", "Broncos") == 0.0
    assert squad_f1("the", "Broncos") == 0.0  # normalises to nothing
    assert squad_scores([""], [["Broncos"]]) == {"exact_match": 0.0, "f1": 0.0}


def test_scores_take_the_max_over_all_references_and_average_over_all_questions():
    predictions = ["Denver Broncos", "Carolina", "nothing like it"]
    references = [["Broncos", "the Denver Broncos"], ["Panthers", "Carolina Panthers"], ["Levi's Stadium"]]
    scores = squad_scores(predictions, references)
    # question 1: EM 1 via the second reference; question 2: F1 2/3 via the second; question 3: 0
    assert scores["exact_match"] == pytest.approx(1 / 3)
    assert scores["f1"] == pytest.approx((1 + 2 / 3 + 0) / 3)


def test_squad_scores_reject_mismatched_or_empty_inputs():
    with pytest.raises(ValueError, match="2 predictions for 1"):
        squad_scores(["a", "b"], [["a"]])
    with pytest.raises(ValueError, match="no examples"):
        squad_scores([], [])
    with pytest.raises(ValueError, match="reference"):
        squad_scores(["a"], [[]])


# ---------------------------------------------------------------------------------------------- classification


def test_classification_scores_by_hand():
    # labels 0 0 1 2; predictions 0 invalid 1 1 -> class F1s: 0: 2/3, 1: 2/3, 2: 0
    scores = classification_scores([0, INVALID, 1, 1], [0, 0, 1, 2], num_classes=3)
    assert scores["accuracy"] == 0.5
    assert scores["macro_f1"] == pytest.approx((2 / 3 + 2 / 3 + 0) / 3)
    assert scores["weighted_f1"] == pytest.approx((2 * 2 / 3 + 2 / 3 + 0) / 4)
    assert (scores["n_total"], scores["n_invalid"]) == (4, 1)


def test_invalid_predictions_are_wrong_and_never_dropped():
    scores = classification_scores([INVALID] * 3 + [1], [0, 1, 2, 1], num_classes=3)
    assert scores["accuracy"] == 0.25
    assert (scores["n_total"], scores["n_invalid"]) == (4, 3)


def test_classification_scores_reject_out_of_range_classes():
    with pytest.raises(ValueError, match="predictions"):
        classification_scores([4], [0], num_classes=4)
    with pytest.raises(ValueError, match="labels"):
        classification_scores([0], [INVALID], num_classes=4)
    with pytest.raises(ValueError, match="2 predictions for 1"):
        classification_scores([0, 1], [0], num_classes=2)


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("num_classes", [2, 4, 5])
def test_classification_scores_equal_sklearn_restricted_to_true_classes(seed, num_classes):
    metrics = pytest.importorskip("sklearn.metrics")
    rng = random.Random(seed)
    n = rng.randint(1, 40)
    labels = [rng.randrange(num_classes - 1) for _ in range(n)]  # the last class has no support
    predictions = [rng.randrange(INVALID, num_classes) for _ in range(n)]
    classes = list(range(num_classes))
    ours = classification_scores(predictions, labels, num_classes)
    assert ours["accuracy"] == pytest.approx(metrics.accuracy_score(labels, predictions))
    for average in ("macro", "weighted"):
        expected = metrics.f1_score(labels, predictions, labels=classes, average=average, zero_division=0)
        assert ours[f"{average}_f1"] == pytest.approx(expected)
    expected_per_class = metrics.f1_score(labels, predictions, labels=classes, average=None, zero_division=0)
    assert f1_per_class(predictions, labels, num_classes) == pytest.approx(list(expected_per_class))


# ---------------------------------------------------------------------------------------------- GSM8K


def test_gsm8k_reference_answer():
    assert gsm8k_reference_answer("5 x $1.50 = $7.5.\n#### 8") == "8"
    assert gsm8k_reference_answer("so 1,450,000 in all\n#### 1,450,000") == "1450000"
    with pytest.raises(ValueError, match="####"):
        gsm8k_reference_answer("no final answer")


@pytest.mark.parametrize(
    ("text", "number"),
    [
        ("3 + 4 = 7\n#### 7", "7"),
        ("#### 1 is wrong\n#### $1,200.", "1200"),  # the last marker wins; $ and the full stop are ignored
        ("She has 5 apples, then 12.", "12"),  # no marker: the last number
        ("#### 18 apples, 3 left", "18"),  # the number right after the marker, not the last one
        ("so 18 apples\n####", "18"),  # nothing after the marker: the last number
        ("The change is -3 degrees", "-3"),
        ("12-3 = 9", "9"),  # a minus between digits is subtraction, not a sign
        ("It costs 2.50 dollars", "2.50"),
        ("no number here", None),
        ("", None),
    ],
)
def test_extract_final_number(text, number):
    assert extract_final_number(text) == number


@pytest.mark.parametrize(
    ("a", "b", "equal"),
    [
        ("1,000", "1000", True),
        ("8.0", "8", True),
        ("7.50", "7.5", True),
        ("-3", "3", False),
        ("12", "13", False),
        (None, "3", False),
        ("abc", "3", False),
    ],
)
def test_numbers_match(a, b, equal):
    assert numbers_match(a, b) is equal


def test_final_number_accuracy_counts_invalid_as_wrong():
    assert final_number_accuracy(["8", None, "1,000"], ["8", "3", "1000"]) == pytest.approx(2 / 3)


# ---------------------------------------------------------------------------------------------- GLUE correlations


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("num_classes", [2, 3])
def test_matthews_correlation_equals_sklearn_with_invalid_predictions(seed, num_classes):
    metrics = pytest.importorskip("sklearn.metrics")
    rng = random.Random(seed)
    labels = [rng.randrange(num_classes) for _ in range(200)]
    predictions = [y if rng.random() < 0.6 else rng.randrange(-1, num_classes) for y in labels]
    assert matthews_correlation(predictions, labels) == pytest.approx(
        metrics.matthews_corrcoef(labels, predictions), abs=1e-12)


def test_matthews_correlation_edge_cases():
    assert matthews_correlation([1, 0, 1, 0], [1, 0, 1, 0]) == 1.0
    assert matthews_correlation([0, 1, 0, 1], [1, 0, 1, 0]) == -1.0
    assert matthews_correlation([1, 1, 1, 1], [1, 0, 1, 0]) == 0.0  # one predicted class: undefined, 0 as sklearn
    with pytest.raises(ValueError):
        matthews_correlation([1], [1, 0])


@pytest.mark.parametrize("seed", range(5))
def test_pearson_and_spearman_equal_scipy_with_ties(seed):
    stats = pytest.importorskip("scipy.stats")
    rng = random.Random(seed)
    gold = [round(rng.uniform(0, 5), 1) for _ in range(300)]  # many ties, as STS-B's scores
    predicted = [min(5.0, max(0.0, round(y + rng.gauss(0, 1.2), 1))) for y in gold]
    assert pearson_correlation(predicted, gold) == pytest.approx(stats.pearsonr(predicted, gold)[0], abs=1e-12)
    assert spearman_correlation(predicted, gold) == pytest.approx(stats.spearmanr(predicted, gold)[0], abs=1e-12)


def test_correlation_of_a_constant_is_nan():
    assert pearson_correlation([2.0, 2.0, 2.0], [1.0, 2.0, 3.0]) != pearson_correlation([2.0, 2.0, 2.0], [1.0, 2.0, 3.0])
    assert spearman_correlation([3.0, 1.0, 2.0], [30.0, 10.0, 20.0]) == 1.0
