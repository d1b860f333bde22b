from collections import Counter

import pytest

from adamlab.tasks import get_task
from adamlab.tasks.ag_news import ADAMDDS_USER_SUFFIX, CLASS_NAMES


@pytest.fixture(scope="module")
def task():
    return get_task("ag_news")


@pytest.fixture(scope="module")
def adamdds():
    return get_task("ag_news", prompt_style="adamdds")


def test_bundled_eval_is_class_balanced(task):
    examples = task.load("eval")
    assert Counter(example.label for example in examples) == {0: 250, 1: 250, 2: 250, 3: 250}


def test_default_example_answers_with_the_class_name(task):
    example = task.load("eval", limit=1)[0]
    assert task.answer_choices == CLASS_NAMES == ("World", "Sports", "Business", "Sci/Tech")
    system, user = example.messages
    assert system["role"] == "system" and "World, Sports, Business, Sci/Tech" in system["content"]
    assert user == {"role": "user", "content": example.text}
    assert example.target == CLASS_NAMES[example.label]


def test_adamdds_style_reproduces_the_published_prompt_structure(adamdds):
    example = adamdds.load("eval", limit=1)[0]
    system, user = example.messages
    assert system["content"].startswith("\n") and system["content"].endswith("\n")
    assert user["content"] == example.text + " Classify the sentence" == example.text + ADAMDDS_USER_SUFFIX
    assert adamdds.answer_choices == ("0", "1", "2", "3")
    assert example.target == str(example.label)


@pytest.mark.parametrize(
    ("output", "label"),
    [
        ("Sports", 1),
        (" sci/tech\n", 3),
        ("BUSINESS.", 2),
        ("World!", 0),
        ("Sports news", None),  # more than the class name
        ("The topic is Sports", None),
        ("Sci-Tech", None),
        ("1", None),
        ("", None),
    ],
)
def test_default_parser_is_strict(task, output, label):
    assert task.parse(output) == label


@pytest.mark.parametrize(
    ("output", "label"),
    [("2", 2), (" 0\n", 0), ("3 ", 3), ("4", None), ("1.", None), ("12", None), ("Sports", None), ("", None)],
)
def test_adamdds_parser_accepts_a_single_digit_only(adamdds, output, label):
    assert adamdds.parse(output) == label


def test_score_keeps_invalid_outputs_in_the_denominator(task):
    examples = task.load("eval", limit=4, seed=1)
    predictions = [examples[0].label, None, examples[2].label, None]
    scores = task.score(predictions, examples)
    assert scores["accuracy"] == 0.5
    assert (scores["n_total"], scores["n_invalid"]) == (4, 2)
    assert {"macro_f1", "weighted_f1"} <= scores.keys()


def test_hub_schema(task, hub):
    calls = hub([{"text": "Stocks rally on Wall Street", "label": 2}, {"text": "Team wins the cup", "label": 1}])
    examples = task.load("eval", source="fancyzhx/ag_news")
    assert calls == [("fancyzhx/ag_news", None, "test")]
    assert [(example.id, example.target, example.text) for example in examples] == [
        ("eval-0", "Business", "Stocks rally on Wall Street"),
        ("eval-1", "Sports", "Team wins the cup"),
    ]
