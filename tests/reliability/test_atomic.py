"""The atomic-file module: whole files or none, strict JSON, JSON lines whose torn last line is dropped."""

import json
import math
import subprocess
import sys

import pytest

from adamlab import atomic

from .conftest import read_only


def test_write_json_replaces_the_file_whole_and_leaves_no_temporary(tmp_path):
    target = tmp_path / "config.json"
    atomic.write_json(target, {"a": 1})
    atomic.write_json(target, {"a": 2}, indent=2)
    assert json.loads(target.read_text()) == {"a": 2}
    assert [p.name for p in tmp_path.iterdir()] == ["config.json"]


def test_a_kill_during_a_write_leaves_the_old_content(tmp_path):
    target = tmp_path / "result.json"
    atomic.write_json(target, {"status": "old"})
    # The child dies (os._exit, as from kill -9) after writing half of the new file's temporary.
    code = (
        "import os, sys, tempfile\n"
        "from pathlib import Path\n"
        "from adamlab import atomic\n"
        "real = os.replace\n"
        "os.replace = lambda *a: os._exit(9)\n"
        f"atomic.write_json(Path({str(target)!r}), {{'status': 'new' * 1000}})\n"
    )
    assert subprocess.run([sys.executable, "-c", code]).returncode == 9
    assert json.loads(target.read_text()) == {"status": "old"}


def test_a_failed_write_removes_its_temporary(tmp_path):
    with pytest.raises(ValueError):
        atomic.write_json(tmp_path / "x.json", {"loss": math.inf})  # not JSON: refused, nothing written
    assert list(tmp_path.iterdir()) == []


def test_non_finite_values_become_null_with_a_flag():
    record = atomic.finite_record({"step": 3, "loss": math.inf, "grad_norm": math.nan, "lr": 0.1})
    assert record == {"step": 3, "loss": None, "grad_norm": None, "lr": 0.1,
                      "nonfinite": {"loss": "inf", "grad_norm": "nan"}}
    assert json.loads(atomic.dumps(record)) == record
    clean = {"step": 1, "loss": 0.5}
    assert atomic.finite_record(clean) is clean
    nested = atomic.finite_record({"metrics": {"perplexity": math.inf, "n": 3}, "curve": [1.0, -math.inf]})
    assert nested == {"metrics": {"perplexity": None, "n": 3}, "curve": [1.0, None],
                      "nonfinite": {"metrics.perplexity": "inf", "curve.1": "-inf"}}


def test_read_json_names_a_damaged_file(tmp_path):
    damaged = tmp_path / "config.json"
    damaged.write_text('{"model": "tiny-llama", "ta')
    with pytest.raises(atomic.CorruptFileError, match=r"config.json is damaged: .* line 1 column"):
        atomic.read_json(damaged)
    damaged.write_bytes(b'{"model": "\xff"}')
    with pytest.raises(atomic.CorruptFileError, match="config.json is not UTF-8"):
        atomic.read_json(damaged)


def test_read_jsonl_drops_a_torn_last_line_only(tmp_path):
    log = tmp_path / "metrics.jsonl"
    atomic.append_jsonl(log, [{"step": 1}, {"step": 2}])
    with log.open("a") as f:
        f.write('{"step": 3, "lo')  # a kill mid-append
    assert atomic.read_jsonl(log) == [{"step": 1}, {"step": 2}]
    log.write_text('{"step": 1}\n{"step": 2}')  # only the newline was lost: the record is whole
    assert atomic.read_jsonl(log) == [{"step": 1}, {"step": 2}]
    log.write_text('{"step": 1}\n{"st\n{"step": 3}\n')  # damage inside the file is not a torn append
    with pytest.raises(atomic.CorruptFileError, match=r"metrics.jsonl:2: not a JSON record"):
        atomic.read_jsonl(log)
    log.write_bytes(b'{"step": 1}\n{"step": "\xff"}\n')
    with pytest.raises(atomic.CorruptFileError, match=r"metrics.jsonl:2: not UTF-8"):
        atomic.read_jsonl(log)


def test_rewrite_jsonl_keeps_only_the_given_records(tmp_path):
    log = tmp_path / "metrics.jsonl"
    log.write_text('{"step": 1}\n{"step": 2}\n{"step": 3, "lo')
    atomic.rewrite_jsonl(log, [r for r in atomic.read_jsonl(log) if r["step"] <= 1])
    atomic.append_jsonl(log, [{"step": 2}])
    assert log.read_text() == '{"step": 1}\n{"step": 2}\n'


def test_a_read_only_folder_raises_and_keeps_the_old_file(tmp_path):
    folder = tmp_path / "run"
    folder.mkdir()
    target = folder / "result.json"
    atomic.write_json(target, {"status": "old"})
    with read_only(folder):
        with pytest.raises(OSError):
            atomic.write_json(target, {"status": "new"})
        with pytest.raises(ValueError, match=f"cannot write into {folder}"):
            atomic.check_writable_folder(folder / "sub")
    assert json.loads(target.read_text()) == {"status": "old"}
    assert [p.name for p in folder.iterdir()] == ["result.json"]


def test_check_writable_folder_names_a_file_in_the_way(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(ValueError, match="file is a file, not a folder"):
        atomic.check_writable_folder(tmp_path / "file")
    with pytest.raises(ValueError, match="file/run cannot be created: .*file is a file"):
        atomic.check_writable_folder(tmp_path / "file" / "run")
    atomic.check_writable_folder(tmp_path / "new" / "run")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]  # nothing created
