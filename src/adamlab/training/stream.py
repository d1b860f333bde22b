"""Pre-training batches streamed from the corpus, for runs whose corpus is too large to tokenise before step 1.

Batch t is the next ``batch_size`` rows of ``max_seq_len`` next-token targets, packed from the training documents
in corpus order as they are read (``adamlab.encoding.StreamPacker``: each pass gives exactly ``pack_documents``'s
rows). Nothing is read or tokenised before the first batch is asked for (the corpus is only opened), and memory holds one row plus the rest of
the last document read, whatever the corpus length. When a finite corpus (a local file, a ``train_limit``) runs out,
the next pass starts from its first document (epoch + 1), packed afresh as the in-memory path packs each epoch.

There is no shuffle buffer: rows come in corpus order, as in nanoGPT's and GaLore's pre-training, whose corpora
(C4, OpenWebText) are already shuffled documents. A local corpus in a meaningful order should be shuffled once on
disk. This keeps the position a few numbers, so a resumed run is exact and cheap to restore.

``state_dict()`` is that position: the step, the pass, where in the pass the document reader is
(``CorpusTask.documents``) and the tokens already read but not yet consumed. It is plain values only, so it goes
into the checkpoint's ``state.pt`` and loads with ``torch.load(weights_only=True)`` (docs/pretraining.md §4).
"""

from __future__ import annotations

from typing import Any

from ..encoding import Encoded, StreamPacker
from ..tasks.base import DataError
from ..tasks.corpus import CorpusTask, DocumentStream


class StreamedBatches:
    """The training rows of each step, read from ``task``'s ``split`` of ``source`` as the steps ask for them.
    Steps must be asked for in order (0, 1, 2, ...), from 0 or from the step of a loaded ``state_dict``."""

    def __init__(self, task: CorpusTask, source: str | None, limit: int | None, tokenizer, seq_len: int,
                 batch_size: int, split: str = "train"):
        self.task, self.source, self.limit, self.split = task, source, limit, split
        self.batch_size = batch_size
        self.packer = StreamPacker(tokenizer, seq_len)
        self.step = 0  # the next step to read
        self.epoch_index = 0  # passes over the corpus completed
        # Opened now, so that a missing file or an unknown hub id stops the run before any work; nothing is read yet.
        self._documents: DocumentStream = task.documents(split, source, limit)

    def batch(self, step: int) -> list[Encoded]:
        if step != self.step:
            raise RuntimeError(f"streamed batches are read in order: asked for step {step}, the next is {self.step}")
        rows = [self._next_row() for _ in range(self.batch_size)]
        self.step += 1
        return rows

    def epoch(self, step: int) -> float:
        """Passes completed by the end of the last step read (a stream's length is not known ahead, so no fraction)."""
        return float(self.epoch_index)

    def _next_row(self) -> Encoded:
        row = self.packer.next_row(self._documents)
        if row is None:  # the pass is over: the next starts at the first document
            if self._documents.documents == 0:
                raise DataError(f"{self.task.name}: the streamed {self.split} corpus holds no documents")
            self.epoch_index += 1
            self._documents = self.task.documents(self.split, self.source, self.limit)
            row = self.packer.next_row(self._documents)
            if row is None:
                raise DataError(f"{self.task.name}: the streamed {self.split} corpus is too short to make one row")
        return row

    def state_dict(self) -> dict[str, Any]:
        return {"step": self.step, "epoch": self.epoch_index,
                "documents": self._documents.position(),
                "tokens": list(self.packer.tokens)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue where ``state_dict()`` was taken: the reader reopens at its position, nothing is re-tokenised."""
        self.step, self.epoch_index = int(state["step"]), int(state["epoch"])
        self.packer.tokens = [int(token) for token in state["tokens"]]
        self._documents = self.task.documents(self.split, self.source, self.limit, state["documents"])
