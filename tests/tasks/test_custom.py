"""The user's own data as a task: each declared type end to end on a tiny model, and bad files exiting 2 with the
file and line."""

import json
import re

import pytest
from typer.testing import CliRunner

from adamlab.cli import app
from adamlab.tasks import DataError, get_task

from .helpers import write_jsonl

REVIEWS = ["a wonderful film", "dull and far too long", "I loved every minute", "a waste of an evening",
           "brilliant acting", "boring plot", "moving and funny", "badly written"]


def classification_file(tmp_path):
    records = [{"review": text, "sentiment": ("positive", "negative")[i % 2]} for i, text in enumerate(REVIEWS * 3)]
    write_jsonl(tmp_path / "reviews.jsonl", records)
    task_file = tmp_path / "reviews.yaml"
    task_file.write_text("type: classification\ntrain: reviews.jsonl\neval_size: 4\ntext_field: review\n"
                         "label_field: sentiment\nsystem: Is the review positive or negative?\n"
                         "template: 'Review: {review}'\n", encoding="utf-8")
    return task_file


def multiple_choice_file(tmp_path):
    records = [{"question": f"What is {i} + 1?", "choices": [str(i + 1), str(i + 2), str(i)], "answer": i % 3}
               for i in range(20)]
    return write_jsonl(tmp_path / "sums.jsonl", records)


def generation_file(tmp_path):
    records = [{"prompt": f"Capital number {i}?", "answer": [f"City {i}", f"city{i}"]} for i in range(20)]
    return write_jsonl(tmp_path / "capitals.jsonl", records)


def language_modeling_file(tmp_path):
    (tmp_path / "notes.txt").write_text("\n\n".join(f"note {i}: " + "some words " * 20 for i in range(20)))
    task_file = tmp_path / "notes.yml"
    task_file.write_text("type: language_modeling\ntrain: notes.txt\neval_size: 4\n", encoding="utf-8")
    return task_file


def test_classification_yaml_with_template(tmp_path):
    task = get_task(str(classification_file(tmp_path)))
    assert task.answer_choices == ("negative", "positive")  # the names found in train, sorted
    train, held_out = task.load("train"), task.load("eval")
    assert (len(train), len(held_out)) == (20, 4) and sorted(e.text for e in train + held_out) == sorted(REVIEWS * 3)
    example = train[0]
    assert example.messages == ({"role": "system", "content": "Is the review positive or negative?"},
                                {"role": "user", "content": f"Review: {example.text}"})
    assert [task.parse(text) for text in ("Positive.", "negative", "neutral", "")] == [1, 0, None, None]


def test_bare_jsonl_types_are_read_from_the_fields(tmp_path):
    assert get_task(str(multiple_choice_file(tmp_path))).kind == "multiple_choice"
    assert get_task(str(generation_file(tmp_path))).kind == "generation"
    write_jsonl(tmp_path / "lm.jsonl", [{"text": "just text"}])
    assert get_task(str(tmp_path / "lm.jsonl")).kind == "language_modeling"


def test_multiple_choice_and_generation_scoring(tmp_path):
    choice = get_task(str(multiple_choice_file(tmp_path)))
    examples = choice.load("train")
    assert choice.answer_choices == ("A", "B", "C")
    for example in examples:
        content = example.messages[-1]["content"]
        i = int(content.split()[2])  # "What is {i} + 1?"
        assert example.target == "ABC"[i % 3] and f"B. {i + 2}\n" in content
    assert [choice.parse(text) for text in ("(C)", "B.", "D", "the answer")] == [2, 1, None, None]
    generation = get_task(str(generation_file(tmp_path)))
    examples = generation.load("eval")
    scores = generation.score([examples[0].references[1], "wrong", *[""] * (len(examples) - 2)], examples)
    assert scores["exact_match"] == pytest.approx(1 / len(examples))  # any of the listed answers counts
    assert scores["n_invalid"] == len(examples) - 2


@pytest.mark.parametrize("make", [classification_file, multiple_choice_file, generation_file, language_modeling_file])
def test_each_type_trains_end_to_end(tmp_path, make):
    task_file = make(tmp_path)
    model = ["--model", "llama-tiny", "--lora", "none"] if make is language_modeling_file else ["--model", "tiny-llama"]
    result = CliRunner().invoke(app, ["train", *model, "--task", str(task_file), "--steps", "2", "--batch-size",
                                      "2", "--max-seq-len", "64", "--out", str(tmp_path / "run"), "--no-progress"])
    assert result.exit_code == 0, result.output
    record = json.loads((tmp_path / "run" / "result.json").read_text())
    assert record["status"] == "done"
    expected = {classification_file: "accuracy", multiple_choice_file: "accuracy", generation_file: "f1",
                language_modeling_file: "perplexity"}[make]
    assert expected in record["metrics"] and record["metrics"]["n_total"] == 4
    if make is language_modeling_file:  # the trained from-scratch model reloads from its run folder
        evaluated = CliRunner().invoke(app, ["eval", "--run", str(tmp_path / "run"), "--json", str(tmp_path / "e.json")])
        assert evaluated.exit_code == 0, evaluated.output
        assert json.loads((tmp_path / "e.json").read_text())["metrics"] == pytest.approx(record["metrics"])


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        ('{"text": "fine", "label": "a"}\n{"text": "no label"}\n', r"bad\.jsonl, line 2: .*lacks field 'label'"),
        ('{"text": "fine", "label": "a"}\n{"text": broken\n', r"bad\.jsonl, line 2: not valid JSON"),
        ('{"unknown": 1}\n', r"bad\.jsonl, line 1: cannot tell the task type"),
        ('{"question": "q", "choices": ["a", "b"], "answer": 5}\n' * 6, r"bad\.jsonl, line 1: bad .* answer 5"),
    ],
)
def test_bad_files_exit_2_naming_file_and_line(tmp_path, content, reason):
    data_file = tmp_path / "bad.jsonl"
    data_file.write_text(content, encoding="utf-8")
    result = CliRunner().invoke(app, ["train", "--model", "tiny-llama", "--task", str(data_file), "--steps", "1",
                                      "--out", str(tmp_path / "run"), "--no-progress"])
    assert result.exit_code == 2, result.output
    assert re.search(reason, result.output.replace("\n", " ")), result.output
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    ("yaml_text", "reason"),
    [
        ("type: regression\ntrain: x.jsonl\n", "type must be one of classification"),
        ("type: classification\ntrain: missing.jsonl\n", "train data file .*missing.jsonl does not exist"),
        ("type: classification\ntrain: data.jsonl\nlabel_feild: y\n", "unknown key.*label_feild"),
        ("type: [unclosed\n", r"task\.yaml, line \d+: not valid YAML"),
    ],
)
def test_bad_task_yaml_is_named(tmp_path, yaml_text, reason):
    write_jsonl(tmp_path / "data.jsonl", [{"text": "t", "label": "a"}])
    task_file = tmp_path / "task.yaml"
    task_file.write_text(yaml_text, encoding="utf-8")
    with pytest.raises((ValueError, FileNotFoundError, DataError), match=reason):
        get_task(str(task_file))


def test_a_json_array_file_is_a_task_too(tmp_path):
    records = [{"prompt": f"q{i}", "answer": f"a{i}"} for i in range(10)]
    (tmp_path / "qa.json").write_text(json.dumps(records), encoding="utf-8")
    task = get_task(str(tmp_path / "qa.json"))
    assert task.kind == "generation" and len(task.load("train")) + len(task.load("eval")) == 10
