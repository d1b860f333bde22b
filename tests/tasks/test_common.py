"""What every task guarantees: the registry, the bundled data, loading from files, seeded subsets, errors that say
where, and a training target that its own parser reads back as the gold answer."""

import hashlib
import json
import re
import subprocess
import sys
from importlib import resources

import pytest

from adamlab.tasks import DataError, Example, available_tasks, get_task

from .helpers import write_jsonl

BUNDLED_COUNTS = {
    "ag_news": (4000, 1000),
    "squad": (2000, 500),
    "commonsenseqa": (2000, 500),
    "gsm8k": (1000, 500),
    "sst2": (4000, 872),
    "cola": (4000, 1043),
    "mrpc": (3668, 408),
    "stsb": (4000, 1500),
    "rte": (2490, 277),
    "qnli": (4463, 1000),  # carved from the validation set
    "qqp": (3000, 1000),  # carved from the train sample
}
HUB_ONLY = ("mnli", "mnli_mismatched")
CORPORA = ("c4", "wikitext2")  # language modelling, tested in test_corpus.py
KINDS = {"classification", "multiple_choice", "extractive_qa", "math", "regression"}
DATA = resources.files("adamlab.tasks").joinpath("data")


@pytest.fixture(scope="module")
def eval_examples():
    """Each task's bundled eval split, loaded once."""
    return {name: get_task(name).load("eval") for name in BUNDLED_COUNTS}


# ---------------------------------------------------------------------------------------------- registry


def test_available_tasks():
    assert available_tasks() == sorted([*BUNDLED_COUNTS, *HUB_ONLY, *CORPORA])


@pytest.mark.parametrize(
    ("alias", "name"),
    [("squad_v1.1", "squad"), ("csqa", "commonsenseqa"), ("sst-2", "sst2"), ("AG_News", "ag_news")],
)
def test_aliases_and_case(alias, name):
    assert get_task(alias).name == name


def test_unknown_task_lists_close_matches_and_all_names():
    with pytest.raises(ValueError, match=r"Did you mean 'squad'.*Valid tasks: ag_news, c4, cola, commonsenseqa, gsm8k"):
        get_task("squadd")


def test_options_are_checked():
    with pytest.raises(ValueError, match="prompt_style"):
        get_task("gsm8k", prompt_style="adamdds")
    with pytest.raises(ValueError, match="max_new_tokens"):
        get_task("squad", max_new_tokens=0)
    with pytest.raises(ValueError, match="unknown option 'temperature' for task 'sst2'; valid options: prompt_style"):
        get_task("sst2", temperature=0.0)
    assert get_task("squad", max_new_tokens=100).max_new_tokens == 100
    assert get_task("squad").max_new_tokens == 48  # the override does not leak into other instances


def test_modules_import_neither_torch_nor_transformers():
    code = "import sys, adamlab.tasks, adamlab.metrics; print(sorted({'torch', 'transformers'} & set(sys.modules)))"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout == "[]\n"


# ---------------------------------------------------------------------------------------------- bundled data


@pytest.mark.parametrize("name", sorted(BUNDLED_COUNTS))
def test_bundled_splits_load_with_their_counts(name, eval_examples):
    n_train, n_eval = BUNDLED_COUNTS[name]
    assert len(get_task(name).load("train")) == n_train
    assert len(eval_examples[name]) == n_eval
    assert len({example.id for example in eval_examples[name]}) == n_eval


@pytest.mark.parametrize(
    ("folder", "files"),
    [("ag_news", 2), ("commonsenseqa", 2), ("gsm8k", 2), ("squad_v1.1", 2), ("sst2", 2), ("glue/cola", 2),
     ("glue/mrpc", 2), ("glue/stsb", 2), ("glue/rte", 2), ("glue/qnli", 1), ("glue/qqp", 1), ("c4", 1),
     ("wikitext2", 2)],
)
def test_bundled_files_match_the_rows_and_sha256_in_their_readme(folder, files):
    readme = DATA.joinpath(folder, "README.md").read_text(encoding="utf-8")
    table = re.findall(r"^\| (\S+\.jsonl)\s*\| (\d+)\s*\|.*\| ([0-9a-f]{64}) \|$", readme, re.MULTILINE)
    assert len(table) == files
    for file_name, rows, sha256 in table:
        content = DATA.joinpath(folder, file_name).read_bytes()
        assert hashlib.sha256(content).hexdigest() == sha256
        assert content.count(b"\n") == int(rows)


@pytest.mark.parametrize("name", sorted(BUNDLED_COUNTS))
def test_examples_honour_the_interface(name, eval_examples):
    task = get_task(name)
    assert task.kind in KINDS
    assert task.max_new_tokens > 0
    for example in eval_examples[name][:50]:
        assert isinstance(example, Example)
        assert [message["role"] for message in example.messages] in (["user"], ["system", "user"])
        assert example.target and example.references
        if task.kind in ("classification", "multiple_choice"):
            assert example.target == task.answer_choices[example.label] == example.references[0]
        elif task.kind == "regression":
            assert task.answer_choices == () and float(example.target) == pytest.approx(example.label, abs=5e-4)
        else:
            assert task.answer_choices == () and example.label is None


@pytest.mark.parametrize("name", sorted(BUNDLED_COUNTS))
def test_every_training_target_parses_back_to_full_marks(name):
    """The answer format the model is trained on is one its parser accepts, and it scores 1."""
    task = get_task(name)
    examples = task.load("train", limit=200)
    predictions = [task.parse(example.target) for example in examples]
    scores = task.score(predictions, examples)
    assert scores["n_invalid"] == 0
    assert scores[task.primary_metric] == pytest.approx(1.0, abs=1e-6)


@pytest.mark.parametrize("name", sorted(BUNDLED_COUNTS))
def test_scoring_counts_unparseable_outputs_as_wrong(name, eval_examples):
    task = get_task(name)
    examples = eval_examples[name][:10]
    predictions = [task.parse(" \n ")] * 10  # an empty answer is unparseable for every task
    assert predictions == [None] * 10
    scores = task.score(predictions, examples)
    assert (scores["n_total"], scores["n_invalid"]) == (10, 10)
    assert scores[task.primary_metric] <= 0.0  # correlations (CoLA, STS-B) can fall below 0, accuracy to 0
    if task.primary_metric == "accuracy":
        assert scores["accuracy"] == 0.0
    with pytest.raises(ValueError):
        task.score(predictions[:9], examples)


# ---------------------------------------------------------------------------------------------- sources


def bundled_lines(folder, file_name, count):
    return DATA.joinpath(folder, file_name).read_text(encoding="utf-8").splitlines()[:count]


def test_local_jsonl_file(tmp_path):
    data_file = tmp_path / "gsm8k.jsonl"
    data_file.write_text("\n".join(bundled_lines("gsm8k", "test.jsonl", 5)) + "\n\n", encoding="utf-8")
    examples = get_task("gsm8k").load("eval", source=str(data_file))
    assert [example.id for example in examples] == [f"eval-{i}" for i in range(5)]
    assert examples == get_task("gsm8k").load("eval")[:5]


def test_local_json_array_and_json_lines_under_json_suffix(tmp_path):
    records = [json.loads(line) for line in bundled_lines("sst2", "validation.jsonl", 4)]
    array_file = tmp_path / "array.json"
    array_file.write_text(json.dumps(records), encoding="utf-8")
    lines_file = write_jsonl(tmp_path / "lines.json", records)  # what Dataset.to_json writes
    expected = get_task("sst2").load("eval")[:4]
    assert get_task("sst2").load("eval", source=str(array_file)) == expected
    assert get_task("sst2").load("eval", source=str(lines_file)) == expected


def test_missing_file_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="no data file at .*absent.jsonl"):
        get_task("sst2").load("eval", source=str(tmp_path / "absent.jsonl"))


def test_invalid_json_names_file_and_line(tmp_path):
    data_file = tmp_path / "broken.jsonl"
    data_file.write_text('{"sentence": "fine", "label": 1}\n\n{"sentence": "cut off\n', encoding="utf-8")
    with pytest.raises(DataError, match=r"broken\.jsonl, line 3: not valid JSON"):
        get_task("sst2").load("eval", source=str(data_file))
    data_file.write_text('[{"sentence": "fine", "label": 1},\n oops]', encoding="utf-8")
    broken_json = data_file.rename(tmp_path / "broken.json")
    with pytest.raises(DataError, match=r"broken\.json, line 2: not valid JSON"):
        get_task("sst2").load("eval", source=str(broken_json))


def test_non_object_line_is_rejected(tmp_path):
    data_file = write_jsonl(tmp_path / "lists.jsonl", [["a", 1]])
    with pytest.raises(DataError, match=r"lists\.jsonl, line 1: expected a JSON object"):
        get_task("sst2").load("eval", source=str(data_file))


def test_bad_records_name_file_and_line(tmp_path):
    good = {"sentence": "fine", "label": 1}
    data_file = write_jsonl(tmp_path / "bad.jsonl", [good, {"text": "no sentence field", "label": 0}])
    with pytest.raises(DataError, match=r"bad\.jsonl, line 2: sst2 record lacks field 'sentence'"):
        get_task("sst2").load("eval", source=str(data_file))
    write_jsonl(data_file, [good, good, {"sentence": "unlabelled", "label": -1}])
    with pytest.raises(DataError, match=r"bad\.jsonl, line 3: bad sst2 record: label -1 is not a class index"):
        get_task("sst2").load("eval", source=str(data_file))


# ---------------------------------------------------------------------------------------------- subsets


def test_seeded_limit_is_deterministic_and_keeps_source_order():
    task = get_task("ag_news")
    full_ids = [example.id for example in task.load("eval")]
    first = [example.id for example in task.load("eval", limit=50, seed=3)]
    assert first == [example.id for example in task.load("eval", limit=50, seed=3)]
    assert first != [example.id for example in task.load("eval", limit=50, seed=4)]
    assert len(set(first)) == 50
    positions = [full_ids.index(example_id) for example_id in first]
    assert positions == sorted(positions)


def test_limit_beyond_the_split_gives_all_and_nonpositive_limit_is_rejected():
    assert len(get_task("sst2").load("eval", limit=10_000)) == 872
    with pytest.raises(ValueError, match="limit"):
        get_task("sst2").load("eval", limit=0)


def test_unknown_split_is_rejected():
    with pytest.raises(ValueError, match="split"):
        get_task("sst2").load("validation")
