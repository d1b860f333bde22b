import pytest

from .helpers import write_jsonl


@pytest.fixture
def hub(monkeypatch, tmp_path):
    """``hub(records)`` makes ``datasets.load_dataset`` serve ``records`` as a hub dataset would, through the real
    ``load_dataset("json")`` on a local file (no network), and returns the (id, config, split) it was called with."""
    datasets = pytest.importorskip("datasets")
    load_json = datasets.load_dataset

    def serve(records):
        data_file = write_jsonl(tmp_path / "hub.jsonl", records)
        calls = []

        def load_dataset(path, name=None, split=None, **kwargs):
            calls.append((path, name, split))
            return load_json("json", data_files=str(data_file), split="train", cache_dir=str(tmp_path / "cache"))

        monkeypatch.setattr(datasets, "load_dataset", load_dataset)
        return calls

    return serve
