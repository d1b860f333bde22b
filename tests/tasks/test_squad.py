import json

import pytest

from adamlab.tasks import DataError, get_task


@pytest.fixture(scope="module")
def task():
    return get_task("squad")


def test_example_keeps_every_reference_and_trains_on_the_first(task):
    example = task.load("eval")[0]
    assert example.references == ("ABC Television Center, East", "ABC Television Center, East", "ABC Television Center")
    assert example.target == example.references[0]
    system, user = example.messages
    assert system["role"] == "system"
    assert user["content"].startswith("Context:\nAll of ABC's")
    question = "Which of ABC's main production facilities is located in New York City?"
    assert user["content"].endswith(f"\n\nQuestion: {question}")


def test_adamdds_style_joins_context_and_question_without_separator():
    example = get_task("squad", prompt_style="adamdds").load("eval", limit=1)[0]
    user = example.messages[1]["content"]
    assert user.startswith("Context-") and ".Question-" in user


@pytest.mark.parametrize(
    ("output", "answer"),
    [
        ("Denver Broncos", "Denver Broncos"),
        ("  Denver Broncos \nThe Broncos won.", "Denver Broncos"),
        ("\n\nDenver Broncos", "Denver Broncos"),
        ("", None),
        ("   ", None),
    ],
)
def test_parse_takes_the_first_line(task, output, answer):
    assert task.parse(output) == answer


def test_score_uses_all_references_and_fractions(task):
    examples = task.load("eval", limit=3, seed=0)
    predictions = [examples[0].references[-1], None, "zzz"]
    scores = task.score(predictions, examples)
    assert scores["exact_match"] == pytest.approx(1 / 3)
    assert 0 <= scores["f1"] <= 1
    assert (scores["n_total"], scores["n_invalid"]) == (3, 1)


def test_hub_schema(task, hub):
    record = {
        "id": "q1",
        "title": "Super_Bowl_50",
        "context": "The Denver Broncos won Super Bowl 50.",
        "question": "Who won Super Bowl 50?",
        "answers": {"text": ["Denver Broncos", "The Denver Broncos"], "answer_start": [0, 0]},
    }
    calls = hub([record])
    [example] = task.load("eval", source="rajpurkar/squad")
    assert calls == [("rajpurkar/squad", None, "validation")]
    assert (example.id, example.target) == ("q1", "Denver Broncos")
    assert example.references == ("Denver Broncos", "The Denver Broncos")


def test_official_nested_json_file(task, tmp_path):
    official = {
        "version": "1.1",
        "data": [
            {
                "title": "Super_Bowl_50",
                "paragraphs": [
                    {
                        "context": "The Denver Broncos won Super Bowl 50.",
                        "qas": [
                            {"id": "q1", "question": "Who won?", "answers": [{"text": "Denver Broncos"}]},
                            {"id": "q2", "question": "Which game?", "answers": [{"text": "Super Bowl 50"}]},
                        ],
                    }
                ],
            }
        ],
    }
    data_file = tmp_path / "dev-v1.1.json"
    data_file.write_text(json.dumps(official), encoding="utf-8")
    examples = task.load("eval", source=str(data_file))
    assert [(example.id, example.references) for example in examples] == [
        ("q1", ("Denver Broncos",)),
        ("q2", ("Super Bowl 50",)),
    ]
    official["data"][0]["paragraphs"][0]["qas"][1]["answers"] = []
    data_file.write_text(json.dumps(official), encoding="utf-8")
    with pytest.raises(DataError, match=r"dev-v1\.1\.json, question id q2: bad squad record: answers"):
        task.load("eval", source=str(data_file))
