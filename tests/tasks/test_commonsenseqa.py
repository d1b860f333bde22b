import pytest

from adamlab.tasks import DataError, get_task

from .helpers import write_jsonl

QUESTION = "Where would you acquire a wind instrument for you own use?"
CHOICES = ["band practice", "concert", "music store", "symphony", "music room"]


@pytest.fixture(scope="module")
def task():
    return get_task("csqa")


def test_prompt_always_shows_the_five_lettered_choices(task):
    example = task.load("eval")[0]
    assert example.messages == (
        {
            "role": "user",
            "content": f"{QUESTION}\nA. band practice\nB. concert\nC. music store\nD. symphony\nE. music room\n\n"
            "Answer with only the letter (A, B, C, D, or E).",
        },
    )
    assert (example.target, example.label, example.references) == ("C", 2, ("C",))
    assert task.answer_choices == ("A", "B", "C", "D", "E")
    assert task.max_new_tokens == 5


def test_training_and_evaluation_prompts_come_from_one_function(task):
    train_example = task.load("train", limit=1)[0]
    eval_example = task.load("eval")[0]
    assert eval_example.messages == task.prompt(QUESTION, CHOICES)
    assert train_example.messages[0]["content"].endswith("\n\nAnswer with only the letter (A, B, C, D, or E).")
    choice_lines = train_example.messages[0]["content"].split("\n")[-7:-2]
    assert [line[:3] for line in choice_lines] == ["A. ", "B. ", "C. ", "D. ", "E. "]


@pytest.mark.parametrize(
    ("output", "choice"),
    [
        ("C", 2),
        (" A", 0),
        ("B.", 1),
        ("D) symphony", 3),
        ("(E)", 4),
        ("A\n", 0),
        ("c", None),  # lower case
        ("The answer is C", None),  # the published parser read this "T h E" as E
        ("Answer: B", None),
        ("F", None),
        ("(B", None),
        ("AB", None),
        ("", None),
    ],
)
def test_strict_letter_parser(task, output, choice):
    assert task.parse(output) == choice


def test_score_reports_accuracy_with_invalid_as_wrong(task):
    examples = task.load("eval", limit=5)
    predictions = [examples[0].label, examples[1].label, None, None, (examples[4].label + 1) % 5]
    assert task.score(predictions, examples) == {"accuracy": 0.4, "n_total": 5, "n_invalid": 2}


HUB_RECORD = {
    "id": "x1",
    "question": QUESTION,
    "question_concept": "wind instrument",
    "choices": {"label": ["A", "B", "C", "D", "E"], "text": CHOICES},
    "answerKey": "C",
}


def test_hub_schema(task, hub):
    calls = hub([HUB_RECORD])
    [example] = task.load("eval", source="tau/commonsense_qa")
    assert calls == [("tau/commonsense_qa", None, "validation")]
    assert example.messages == task.load("eval")[0].messages
    assert (example.id, example.target, example.label) == ("x1", "C", 2)


def test_unlabelled_hub_record_is_rejected_with_its_row(task, hub):
    hub([HUB_RECORD, {**HUB_RECORD, "id": "x2", "answerKey": ""}])  # the hub's test split has no answers
    with pytest.raises(DataError, match=r"tau/commonsense_qa \(validation split\), row 1: .*answerKey"):
        task.load("eval", source="tau/commonsense_qa")


def test_choices_out_of_order_are_rejected(task, tmp_path):
    record = {
        "answerKey": "A",
        "id": "y",
        "question": {"stem": "?", "choices": [{"label": label, "text": "t"} for label in "ABDCE"]},
    }
    with pytest.raises(DataError, match=r"line 1: .*labelled A-E"):
        task.load("eval", source=str(write_jsonl(tmp_path / "c.jsonl", [record])))
