"""GLUE: the hub's config names, sentence pairs for encoders and causal LMs, the carved offline splits, and GLUE's
scores checked against scikit-learn / scipy."""

import random

import pytest

from adamlab.encoding import collate, encode_classifier
from adamlab.tasks import DataError, Task, get_task
from adamlab.tasks.glue import CARVED_EVAL_SIZE

from .helpers import write_jsonl

PAIR_FIELDS = {
    "mrpc": ("sentence1", "sentence2"),
    "qqp": ("question1", "question2"),
    "rte": ("sentence1", "sentence2"),
    "qnli": ("question", "sentence"),
    "mnli": ("premise", "hypothesis"),
    "stsb": ("sentence1", "sentence2"),
}


@pytest.mark.parametrize("name", ["cola", "mrpc", "qqp", "stsb", "mnli", "mnli_mismatched", "qnli", "rte"])
def test_hub_configs_and_splits(name, hub):
    task = get_task(name)
    fields = PAIR_FIELDS.get(name.removesuffix("_mismatched"), ("sentence",))
    record = {field: f"text of {field}" for field in fields} | {"label": 1, "idx": 3}
    calls = hub([record])
    [example] = task.load("eval", source="nyu-mll/glue")
    config = "mnli" if name.startswith("mnli") else name
    split = {"mnli": "validation_matched", "mnli_mismatched": "validation_mismatched"}.get(name, "validation")
    assert calls == [("nyu-mll/glue", config, split)]
    assert example.id == "3" and example.text == f"text of {fields[0]}"
    assert example.text_pair == (f"text of {fields[1]}" if len(fields) == 2 else None)


def test_pair_prompt_names_both_sentences_and_answers_with_a_word():
    example = get_task("rte").load("eval")[0]
    system, user = example.messages
    assert "yes or no" in system["content"]
    assert user["content"] == f"Premise: {example.text.strip()}\nHypothesis: {example.text_pair.strip()}"
    assert example.target == ("yes", "no")[example.label]  # GLUE: 0 entailment, 1 not_entailment


def test_mnli_has_no_bundled_sample_and_says_where_to_get_it():
    with pytest.raises(DataError, match="bundles no eval data.*nyu-mll/glue"):
        get_task("mnli").load("eval")


def test_mnli_local_file_and_parse(tmp_path):
    data_file = write_jsonl(tmp_path / "mnli.jsonl", [
        {"premise": "A man sleeps.", "hypothesis": "A man is awake.", "label": 2},
        {"premise": "A man sleeps.", "hypothesis": "A person rests.", "label": 0},
    ])
    task = get_task("mnli_mismatched")
    examples = task.load("eval", source=str(data_file))
    assert [e.target for e in examples] == ["contradiction", "entailment"]
    assert [task.parse(text) for text in ("Neutral.", "contradiction", "maybe", "")] == [1, 2, None, None]
    write_jsonl(data_file, [{"premise": "x", "hypothesis": "y", "label": 3}])
    with pytest.raises(DataError, match=r"mnli\.jsonl, line 1: bad mnli_mismatched record: label 3"):
        task.load("eval", source=str(data_file))


@pytest.mark.parametrize("name", ["qnli", "qqp"])
def test_carved_splits_are_disjoint_seeded_and_cover_the_file(name):
    task = get_task(name)
    train, evaluation = task.load("train"), task.load("eval")
    assert len(evaluation) == CARVED_EVAL_SIZE
    assert not {e.id for e in train} & {e.id for e in evaluation}
    assert [e.id for e in task.load("eval")] == [e.id for e in evaluation]
    assert len(train) + len(evaluation) == len(Task._read(task, "all", None)[0])  # the whole bundled file


def test_carved_split_errors_name_the_bundled_line():
    task = get_task("qnli")
    records, where = task._read("eval", None)
    whole_file, _ = Task._read(task, "all", None)
    assert where(0).endswith(f"validation.jsonl, line {whole_file.index(records[0]) + 1}")


def test_encoder_gets_the_sentence_pair_in_the_tokenizers_layout():
    from transformers import AutoTokenizer

    from adamlab.models import resolve_source

    tokenizer = AutoTokenizer.from_pretrained(resolve_source("minilm"))
    example = get_task("mrpc").load("eval", limit=1)[0]
    encoded = encode_classifier(tokenizer, example, max_seq_len=512)
    assert encoded.input_ids == tokenizer(example.text, example.text_pair)["input_ids"]
    assert encoded.input_ids.count(tokenizer.sep_token_id) == 2


def test_stsb_regression_labels_collate_as_floats():
    examples = get_task("stsb").load("eval", limit=4)
    from adamlab.encoding import Encoded

    batch = collate([Encoded([1, 2], e.label, False) for e in examples], pad_id=0)
    assert batch["labels"].dtype.is_floating_point
    assert batch["labels"].tolist() == pytest.approx([e.label for e in examples])


@pytest.mark.parametrize(
    ("output", "value"),
    [("3.8", 3.8), (" 5\n", 5.0), ("0.25.", 0.25), ("4", 4.0), ("3.8 out of 5", None), ("7", None), ("high", None),
     ("", None)],
)
def test_stsb_parser(output, value):
    assert get_task("stsb").parse(output) == value


def test_stsb_scores_equal_scipy_and_invalid_answers_only_lower_them():
    stats = pytest.importorskip("scipy.stats")
    task = get_task("stsb")
    examples = task.load("eval", limit=200, seed=1)
    gold = [e.label for e in examples]
    rng = random.Random(0)
    predicted = [min(5.0, max(0.0, y + rng.gauss(0, 1))) for y in gold]
    scores = task.score(predicted, examples)
    assert scores["pearson"] == pytest.approx(stats.pearsonr(predicted, gold)[0], abs=1e-12)
    assert scores["spearmanr"] == pytest.approx(stats.spearmanr(predicted, gold)[0], abs=1e-12)
    with_invalid = task.score([None if i % 5 == 0 else p for i, p in enumerate(predicted)], examples)
    assert with_invalid["n_invalid"] == 40
    assert with_invalid["pearson"] < scores["pearson"]


def test_cola_matthews_and_mrpc_f1_equal_sklearn():
    metrics = pytest.importorskip("sklearn.metrics")
    rng = random.Random(3)
    for name, key, reference in (("cola", "matthews_correlation", metrics.matthews_corrcoef),
                                 ("mrpc", "f1", lambda y, p: metrics.f1_score(y, p, labels=[1], average="macro"))):
        task = get_task(name)
        examples = task.load("eval", limit=300, seed=2)
        labels = [e.label for e in examples]
        predictions = [None if rng.random() < 0.1 else (y if rng.random() < 0.7 else 1 - y) for y in labels]
        as_classes = [-1 if p is None else p for p in predictions]
        scores = task.score(predictions, examples)
        assert scores[key] == pytest.approx(reference(labels, as_classes), abs=1e-12)
        assert scores["accuracy"] == pytest.approx(metrics.accuracy_score(labels, as_classes))


@pytest.mark.parametrize(("model", "task", "metric"), [("minilm", "stsb", "pearson"), ("minilm", "mrpc", "f1"),
                                                       ("tiny-llama", "stsb", "spearmanr"),
                                                       ("tiny-llama", "cola", "matthews_correlation")])
def test_glue_trains_end_to_end(tmp_path, model, task, metric):
    """An encoder gets a regression head on STS-B and a pair classifier on MRPC; a causal LM answers in words or
    numbers. Every evaluation example is scored."""
    from adamlab.models import LoraSettings
    from adamlab.training import TrainConfig, train

    config = TrainConfig(model=model, task=task, out=str(tmp_path / "run"), steps=3, batch_size=4, train_limit=16,
                         eval_limit=12, max_seq_len=128, lr=1e-3, lora=LoraSettings(r=4, alpha=8))
    result = train(config, show_progress=False)
    assert result.status == "done"
    assert result.metrics["n_total"] == 12 and metric in result.metrics
    if model == "minilm":
        import json

        predictions = [json.loads(line)["prediction"] for line in (tmp_path / "run" / "predictions.jsonl").open()]
        assert all(isinstance(p, float) for p in predictions) == (task == "stsb")  # the regression head's output
