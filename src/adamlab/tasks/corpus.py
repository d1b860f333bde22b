"""Language-model corpora for pre-training from scratch: the examples are documents, scored by perplexity.

Training packs the tokenised documents, each followed by an end-of-sequence token, into fixed-length sequences
(``adamlab.encoding.pack_documents``); evaluation packs the held-out documents the same way and reports the mean
next-token loss and perplexity = exp(mean token loss).

Bundled corpora (``data/c4``, ``data/wikitext2``; sources and licences in their READMEs):

* ``c4``: 2,000 documents of C4 ``en`` validation; a seeded held-out slice of ``EVAL_DOCUMENTS`` documents is the
  eval split, the rest the train split. ``--train-data allenai/c4`` streams the real corpus (config ``en``).
* ``wikitext2``: the official WikiText-2 raw validation and test sets (60 articles each). No train text is
  bundled, so offline the task trains on the validation articles and evaluates on the test articles (disjoint);
  the hub's ``Salesforce/wikitext`` (``wikitext-2-raw-v1``) gives the official train split.

Hub corpora are streamed (``datasets.load_dataset(..., streaming=True)``) and read up to ``limit`` documents, so a
user with internet never downloads all of C4 to run a study.

A pre-training run with ``stream=True`` reads its training documents through ``CorpusTask.documents`` instead: one
pass in corpus order, read lazily (local JSONL and text files line by line, hub corpora streamed), with a position
that a checkpoint keeps and a resumed run reopens at (``adamlab.training.stream`` packs and batches them).
"""

from __future__ import annotations

import copy
import random
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from ..extras import require
from ..metrics import perplexity_scores
from .base import DataError, Example, Records, Task, jsonl_record, string_field

EVAL_DOCUMENTS = 200  # c4: documents held out for evaluation, as the sample's README suggests
SPLIT_SEED = 0
HUB_STREAM_LIMIT = 10_000  # documents read from a streamed hub corpus when no limit is given


class CorpusTask(Task):
    """Documents of text for next-token prediction. ``files`` maps split -> a local JSONL file (a ``text_field`` per
    record) or plain-text file (one document per blank-line-separated block); a split without a file is a seeded
    held-out slice of the train documents (``eval_documents`` of them)."""

    kind = "language_modeling"
    primary_metric = "perplexity"  # lower is better
    max_new_tokens = 1  # nothing is generated; the interface asks for a positive value
    hub_splits = {"train": "train", "eval": "validation"}

    def __init__(self, name: str, files: Mapping[str, Path | str] | None = None, text_field: str = "text",
                 eval_documents: int | None = None, bundled: Mapping[str, str] | None = None,
                 hub_configs: Mapping[str, str] | None = None) -> None:
        super().__init__()
        self.name = name
        self.files = {split: Path(file) for split, file in (files or {}).items()}
        self.bundled_files = dict(bundled or {})
        self.hub_configs = dict(hub_configs or {})
        self.text_field = text_field
        self.eval_documents = EVAL_DOCUMENTS if eval_documents is None else eval_documents
        if isinstance(self.eval_documents, bool) or not isinstance(self.eval_documents, int) or self.eval_documents < 1:
            raise ValueError(f"{name}: eval_size must be an int >= 1, got {eval_documents!r}")

    def example_from_record(self, record: Mapping[str, Any], default_id: str) -> Example:
        text = string_field(record, self.text_field)
        return Example(id=str(record.get("id", default_id)), messages=(), target=text, references=(), text=text)

    def parse(self, generated: str) -> None:
        raise TypeError(f"{self.name} is scored by perplexity; it has no answers to parse")

    def score(self, predictions: Sequence[tuple[float, int]], examples: Sequence[Example]) -> dict[str, float]:
        """``predictions``: (summed next-token loss, number of predicted tokens) per evaluated sequence."""
        return {**perplexity_scores([p[0] for p in predictions], [p[1] for p in predictions]),
                "n_total": len(examples), "n_invalid": 0}

    # ------------------------------------------------------------------------------------------ reading

    def _read(self, split: str, source: str | None) -> Records:
        if source is not None and source.endswith((".txt", ".text")):
            return self._read_text_file(Path(source))
        if source is not None:
            return super()._read(split, source)
        if "eval" in self.files:  # both splits declared
            return self._read_declared(split)
        if split in self.bundled_files:
            return super()._read(split, None)
        return self._held_out(split)

    def _held_out(self, split: str) -> Records:
        """Split the train documents in two, seeded: ``eval_documents`` of them for eval, the rest for train."""
        if "train" in self.files:
            records, where = self._read_declared("train")
        elif "all" in self.bundled_files:
            records, where = super()._read("all", None)
        else:
            raise DataError(f"{self.name}: no {split} data; give a file")
        size = min(self.eval_documents, len(records) // 5)
        if size < 1:
            raise DataError(f"{self.name}: too few documents ({len(records)}) to hold out an eval split; give one")
        held_out = set(random.Random(SPLIT_SEED).sample(range(len(records)), size))
        keep = [i for i in range(len(records)) if (i in held_out) == (split == "eval")]
        return [records[i] for i in keep], lambda index: where(keep[index])

    def _read_declared(self, split: str) -> Records:
        file = self.files[split]
        if file.suffix in (".jsonl", ".json"):
            return self._parse_text(file.read_text(encoding="utf-8"), str(file), json_document=file.suffix == ".json")
        return self._read_text_file(file)

    def _read_text_file(self, file: Path) -> Records:
        """Plain text: documents are separated by blank lines; each keeps its inner line breaks."""
        if not file.is_file():
            raise FileNotFoundError(f"{self.name}: no data file at {file}")
        documents, starts, lines, start = [], [], [], 1
        for number, line in enumerate(file.read_text(encoding="utf-8").splitlines(), start=1):
            if line.strip():
                if not lines:
                    start = number
                lines.append(line)
            elif lines:
                documents.append({self.text_field: "\n".join(lines)})
                starts.append(start)
                lines = []
        if lines:
            documents.append({self.text_field: "\n".join(lines)})
            starts.append(start)
        return documents, lambda index: f"{file}, line {starts[index]}"

    def _read_hub(self, dataset_id: str, split: str) -> Records:
        """A streamed hub corpus, read up to ``HUB_STREAM_LIMIT`` documents (``--train-limit`` reads fewer)."""
        try:
            import datasets
        except ImportError as error:
            raise ImportError(f"loading {dataset_id!r} from the Hugging Face Hub needs `datasets`") from error
        hub_split = self.hub_splits[split]
        stream = datasets.load_dataset(dataset_id, self.hub_configs.get(dataset_id), split=hub_split, streaming=True)
        # WikiText's hub rows are lines, blank ones included: those are layout, not documents.
        non_empty = (record for record in stream if str(record.get(self.text_field, "")).strip())
        records = [record for record, _ in zip(non_empty, range(HUB_STREAM_LIMIT))]
        return records, lambda index: f"{dataset_id} ({hub_split} split, streamed), row {index}"


    # ------------------------------------------------------------------------------------------ streaming

    def documents(self, split: str, source: str | None = None, limit: int | None = None,
                  position: Mapping[str, Any] | None = None) -> DocumentStream:
        """One pass over the ``split`` documents of ``source`` in corpus order, read as they are asked for: the first
        ``limit`` documents (all when None), starting at ``position`` (a ``DocumentStream.position()``) when given.
        Local ``.jsonl`` and text files are read line by line and hub corpora streamed, so neither is held in memory;
        other sources (the bundled samples, a ``.json`` array) are small and read whole."""
        if limit is not None and limit < 1:
            raise ValueError(f"limit must be positive, got {limit}")
        hub = None
        if source is not None and source.endswith(".jsonl"):
            records = self._jsonl_records(Path(source))
        elif source is not None and source.endswith((".txt", ".text")):
            records = self._text_records(Path(source))
        elif source is None or source.endswith(".json"):
            read, where = self._read(split, source)
            records = ((record, lambda i=index: where(i)) for index, record in enumerate(read))
        else:
            require("datasets", "hub", f"streaming {source!r} from the Hugging Face Hub")
            import datasets  # optional (the hub extra), so imported only here
            hub_split = self.hub_splits[split]
            hub = datasets.load_dataset(source, self.hub_configs.get(source), split=hub_split, streaming=True)
            if position is not None and "hub" in position and hasattr(hub, "load_state_dict"):
                hub.load_state_dict(copy.deepcopy(dict(position["hub"])))
            records = ((record, lambda i=index: f"{source} ({hub_split} split, streamed), row {i}")
                       for index, record in enumerate(hub)
                       # WikiText's hub rows are lines, blank ones included: those are layout, not documents.
                       if str(record.get(self.text_field, "")).strip())
        return DocumentStream(self, records, limit, hub, position)

    def _jsonl_records(self, file: Path) -> Iterator[tuple[Mapping[str, Any], Any]]:
        if not file.is_file():  # checked when the stream is opened, not when its first record is read
            raise FileNotFoundError(f"{self.name}: no data file at {file}")
        return self._read_jsonl_records(file)

    @staticmethod
    def _read_jsonl_records(file: Path) -> Iterator[tuple[Mapping[str, Any], Any]]:
        with file.open(encoding="utf-8") as lines:
            number = 0
            try:
                for number, line in enumerate(lines, start=1):
                    if not line.strip():
                        continue
                    yield jsonl_record(line, file, number), lambda n=number: f"{file}, line {n}"
            except UnicodeDecodeError:
                raise DataError(f"{file}, line {number + 1}: not UTF-8 text") from None

    def _text_records(self, file: Path) -> Iterator[tuple[Mapping[str, Any], Any]]:
        """``_read_text_file``'s documents (blank-line-separated blocks), read line by line."""
        if not file.is_file():  # checked when the stream is opened, not when its first record is read
            raise FileNotFoundError(f"{self.name}: no data file at {file}")
        return self._read_text_records(file, self.text_field)

    @staticmethod
    def _read_text_records(file: Path, text_field: str) -> Iterator[tuple[Mapping[str, Any], Any]]:
        with file.open(encoding="utf-8") as physical_lines:
            # str.splitlines on each physical line breaks lines where _read_text_file's splitlines does
            lines = (line for physical in physical_lines for line in physical.splitlines())
            block, start = [], 1
            for number, line in enumerate(lines, start=1):
                if line.strip():
                    if not block:
                        start = number
                    block.append(line)
                elif block:
                    yield {text_field: "\n".join(block)}, lambda n=start: f"{file}, line {n}"
                    block = []
            if block:
                yield {text_field: "\n".join(block)}, lambda n=start: f"{file}, line {n}"


class DocumentStream(Iterator[str]):
    """The texts of one pass over a corpus split, read on demand, with the position a resumed run restarts from:
    the number of documents read and, for a hub stream, the dataset's own ``state_dict()`` (so resuming does not
    re-download what was read). Without a hub state the documents before the position are read again and skipped
    (nothing is tokenised). A record that is not a usable document raises ``DataError`` naming its file and line."""

    def __init__(self, task: CorpusTask, records: Iterator[tuple[Mapping[str, Any], Any]], limit: int | None,
                 hub: Any = None, position: Mapping[str, Any] | None = None):
        self.task, self.limit, self._records, self._hub = task, limit, records, hub
        self.documents = 0  # read so far in this pass
        if position is not None:
            if hub is not None and "hub" in position and hasattr(hub, "load_state_dict"):  # reopened at its state
                self.documents = int(position["documents"])
            else:
                for _ in range(int(position["documents"])):
                    if next(self, None) is None:
                        raise DataError(f"{task.name}: the corpus ends before document {position['documents']}, "
                                        "where the checkpoint stopped reading: it changed since the run started")

    def __next__(self) -> str:
        if self.limit is not None and self.documents >= self.limit:
            raise StopIteration
        record, where = next(self._records)
        try:
            text = string_field(record, self.task.text_field)
        except KeyError as error:
            raise DataError(f"{where()}: {self.task.name} record lacks field {error}") from None
        except (TypeError, ValueError) as error:
            raise DataError(f"{where()}: bad {self.task.name} record: {error}") from None
        self.documents += 1
        return text

    def position(self) -> dict[str, Any]:
        """Plain values only (a checkpoint loads them without unpickling code)."""
        position: dict[str, Any] = {"documents": self.documents}
        if self._hub is not None and hasattr(self._hub, "state_dict"):
            position["hub"] = copy.deepcopy(self._hub.state_dict())
        return position


def c4_task() -> CorpusTask:
    return CorpusTask("c4", bundled={"all": "c4/c4_en_validation_2000.jsonl"},
                      hub_configs={"allenai/c4": "en", "c4": "en"})


def wikitext2_task() -> CorpusTask:
    return CorpusTask("wikitext2", bundled={"train": "wikitext2/validation.jsonl", "eval": "wikitext2/test.jsonl"},
                      hub_configs={"Salesforce/wikitext": "wikitext-2-raw-v1", "wikitext": "wikitext-2-raw-v1"})


CORPORA = {"c4": c4_task, "wikitext2": wikitext2_task}
