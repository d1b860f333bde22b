import pytest

from adamlab.tasks import get_task


@pytest.fixture(scope="module")
def task():
    return get_task("sst-2")


def test_example_keeps_the_raw_sentence_for_encoders(task):
    example = task.load("eval")[0]
    assert example.text == "it 's a charming and often affecting journey . "
    assert example.messages[-1]["content"] == "it 's a charming and often affecting journey ."
    assert (example.id, example.label, example.target) == ("0", 1, "positive")
    assert task.answer_choices == ("negative", "positive")
    assert task.max_new_tokens == 3


@pytest.mark.parametrize(
    ("output", "label"),
    [
        ("positive", 1),
        ("Negative", 0),
        (" POSITIVE.\n", 1),
        ("positive sentiment", 1),
        ("The review is positive", None),
        ("pos", None),
        ("neutral", None),
        ("", None),
    ],
)
def test_parse_reads_the_first_word(task, output, label):
    assert task.parse(output) == label


def test_score_matches_sklearn(task):
    metrics = pytest.importorskip("sklearn.metrics")
    examples = task.load("eval", limit=40, seed=2)
    labels = [example.label for example in examples]
    predictions = [None if i % 7 == 0 else (label if i % 3 else 1 - label) for i, label in enumerate(labels)]
    as_classes = [-1 if p is None else p for p in predictions]
    scores = task.score(predictions, examples)
    assert scores["accuracy"] == pytest.approx(metrics.accuracy_score(labels, as_classes))
    assert scores["f1"] == pytest.approx(metrics.f1_score(labels, as_classes, labels=[1], average="macro"))
    assert scores["weighted_f1"] == pytest.approx(
        metrics.f1_score(labels, as_classes, labels=[0, 1], average="weighted", zero_division=0)
    )
    assert (scores["n_total"], scores["n_invalid"]) == (40, sum(p is None for p in predictions))


@pytest.mark.parametrize(("dataset_id", "config"), [("nyu-mll/glue", "sst2"), ("stanfordnlp/sst2", None)])
def test_hub_schema_and_config(task, hub, dataset_id, config):
    calls = hub([{"sentence": "a gorgeous film ", "label": 1, "idx": 7}])
    [example] = task.load("eval", source=dataset_id)
    assert calls == [(dataset_id, config, "validation")]
    assert (example.id, example.target, example.text) == ("7", "positive", "a gorgeous film ")
