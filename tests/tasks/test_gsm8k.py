import pytest

from adamlab.tasks import DataError, get_task

from .helpers import write_jsonl


@pytest.fixture(scope="module")
def task():
    return get_task("gsm8k")


def test_target_is_the_full_solution_and_reference_the_final_number(task):
    example = task.load("eval")[0]
    assert example.target.endswith("$<<7.5+0.5=8>>8 in all.\n#### 8")
    assert example.references == ("8",)
    assert example.messages[-1]["content"].startswith("The educational shop is selling notebooks")
    assert "####" in example.messages[0]["content"]
    assert task.max_new_tokens == 512


def test_references_drop_thousands_commas(task):
    assert "1450000" in {example.references[0] for example in task.load("eval")}


@pytest.mark.parametrize(
    ("output", "number"),
    [("So 3 + 5 = 8.\n#### 8", "8"), ("The answer is 1,200 dollars.", "1200"), ("I am not sure.", None)],
)
def test_parse(task, output, number):
    assert task.parse(output) == number


def test_score_compares_numbers(task):
    examples = task.load("eval", limit=3)
    references = [example.references[0] for example in examples]
    predictions = [references[0] + ".0", None, references[2] + "1"]
    assert task.score(predictions, examples) == {"accuracy": pytest.approx(1 / 3), "n_total": 3, "n_invalid": 1}


def test_hub_schema_and_config(task, hub):
    calls = hub([{"question": "What is 2 + 2?", "answer": "2 + 2 = <<2+2=4>>4\n#### 4"}])
    [example] = task.load("train", source="openai/gsm8k")
    assert calls == [("openai/gsm8k", "main", "train")]
    assert (example.id, example.references) == ("train-0", ("4",))


def test_solution_without_final_answer_is_rejected(task, tmp_path):
    data_file = write_jsonl(tmp_path / "g.jsonl", [{"question": "q", "answer": "no marker"}])
    with pytest.raises(DataError, match=r"g\.jsonl, line 1: bad gsm8k record: .*'####'"):
        task.load("train", source=str(data_file))
