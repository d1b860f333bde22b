"""Bad input ends `adamlab train` / `validate` before any work: exit 2, one line that names the culprit, nothing
written."""

import time

import pytest
import torch
from typer.testing import CliRunner

from adamlab.cli import app
from adamlab.models import ModelNotAvailableError, resolve_source
from adamlab.optim import create_optimizer

from ..studies.tiny import TINY_SPEC, write_spec
from .conftest import read_only

runner = CliRunner()
TINY = {"--model": "tiny-llama", "--task": "ag_news", "--steps": "1", "--batch-size": "2", "--train-limit": "4",
        "--eval-limit": "2", "--max-seq-len": "64", "--lora-r": "2", "--lora-alpha": "4"}


def train(tmp_path, *flags, **change):
    options = TINY | {"--out": str(tmp_path / "run")} | {"--" + k.replace("_", "-"): v for k, v in change.items()}
    return runner.invoke(app, ["train", *[x for pair in options.items() for x in pair], *flags, "--no-progress"])


def assert_refused(result, reason):
    assert result.exit_code == 2, result.output
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.output, result.stderr
    assert reason in result.stderr, result.stderr


@pytest.mark.parametrize("change,reason", [
    ({"--opt": "amsgrad=yes"}, "'amsgrad' of optimizer 'adamw' must be true or false, got 'yes'"),
    ({"--opt": "amsgrad=no"}, "'amsgrad' of optimizer 'adamw' must be true or false, got 'no'"),
    ({"--opt": "eps=small"}, "'eps' of optimizer 'adamw' must be a number, got 'small'"),
    ({"--opt": "betas=0.9"}, "'betas' of optimizer 'adamw' must be a tuple of 2"),
    ({"--optimizer": "hybrid_adam_sgd", "--opt": "transition_steps=10.5"}, "must be an integer, got 10.5"),
    ({"--task-option": "nosuch=1"}, "unknown option 'nosuch' for task 'ag_news'; valid options: prompt_style"),
    ({"--max-seq-len": "100000"}, "max_seq_len 100000 exceeds the 2048 positions of tiny-llama"),
    ({"--model": "tiny-lama"}, "unknown model 'tiny-lama': not a built-in name (did you mean 'tiny-llama'?"),
    ({"--model": "minilm", "--task": "squad"}, "task 'squad' needs a causal LM; minilm is an encoder"),
    ({"--train-data": "fancyzhx/ag_news"}, "cannot load 'fancyzhx/ag_news' (train split) from the Hugging Face Hub"),
])
def test_bad_values_exit_2_with_one_line_and_write_nothing(tmp_path, change, reason):
    assert_refused(train(tmp_path, **{k.lstrip("-"): v for k, v in change.items()}), reason)
    assert not (tmp_path / "run").exists()


def test_qlora_where_it_cannot_apply_is_refused_not_ignored(tmp_path):
    assert_refused(train(tmp_path, "--qlora"), "--qlora cannot apply to tiny-llama")
    if not torch.cuda.is_available():
        assert_refused(train(tmp_path, "--qlora", model="minilm"), "4-bit QLoRA needs a CUDA GPU")
    assert not (tmp_path / "run").exists()


def test_an_empty_training_file_writes_nothing_and_a_corrected_run_then_works(tmp_path):
    data = tmp_path / "train.jsonl"
    data.write_text("\n")
    assert_refused(train(tmp_path, train_data=str(data)), f"{data} holds no records")
    assert not (tmp_path / "run").exists()


def test_a_training_file_that_is_not_utf8_names_file_and_line(tmp_path):
    data = tmp_path / "train.jsonl"
    data.write_bytes('{"text": "ok", "label": 1}\n{"text": "caf\xe9", "label": 1}\n'.encode("latin-1"))
    assert_refused(train(tmp_path, train_data=str(data)), f"{data}, line 2: not UTF-8 text")
    assert not (tmp_path / "run").exists()


def test_an_output_path_that_is_a_file_is_refused(tmp_path):
    (tmp_path / "run").write_text("a file")
    assert_refused(train(tmp_path), f"{tmp_path / 'run'} is a file, not a folder")
    assert (tmp_path / "run").read_text() == "a file"


def test_an_output_folder_that_cannot_be_written_is_refused(tmp_path):
    parent = tmp_path / "shared"
    parent.mkdir()
    with read_only(parent):
        result = runner.invoke(app, ["train", *[x for pair in (TINY | {"--out": str(parent / "run")}).items()
                                                for x in pair], "--no-progress"])
    assert_refused(result, f"cannot write into {parent}")


def test_a_mistyped_builtin_name_never_reaches_the_hub():
    started = time.perf_counter()
    with pytest.raises(ModelNotAvailableError, match="did you mean 'smollm2-135m'"):
        resolve_source("smollm-135m")
    assert time.perf_counter() - started < 0.1
    assert resolve_source("gpt2") == "gpt2"  # a real (slash-less) hub id is still passed on
    assert resolve_source("org/tiny-lama") == "org/tiny-lama"


@pytest.mark.parametrize("value,expected", [("false", False), ("True", True), (False, False)])
def test_bools_are_parsed_strictly(value, expected):
    optimizer = create_optimizer("adam", [torch.nn.Parameter(torch.zeros(2))], amsgrad=value)
    assert optimizer.defaults["amsgrad"] is expected


def test_a_yaml_string_for_a_bool_is_refused_at_its_line(tmp_path):
    spec = write_spec(tmp_path, TINY_SPEC.replace("hparams: {weight_decay: 0.01}",
                                                  'hparams: {weight_decay: 0.01, amsgrad: "no"}'))
    result = runner.invoke(app, ["validate", str(spec)])
    assert_refused(result, f"{spec}:21: arm 'adamw-cosine': hyperparameter 'amsgrad' of optimizer 'adamw' must be "
                           "true or false, got 'no'")
