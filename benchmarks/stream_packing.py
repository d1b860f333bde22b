"""Streamed against in-memory pre-training data: the wait before step 1, packing throughput and memory held.

A local JSONL corpus of ``--copies`` x the bundled C4 train documents (1,800 each) is packed into rows of
``--max-seq-len`` by both paths with the same tokenizer (llama-tiny's byte-level one by default):

* in memory, as a trial without ``stream`` does before step 1: ``task.load`` then ``pack_documents``;
* streamed, as ``stream=True`` does: ``StreamedBatches`` reading batch after batch for one pass.

Reported per corpus size: seconds until the first batch exists, tokens/s over one full pass, and the peak Python
memory (tracemalloc, a separate run) of each; the streamed/in-memory throughput ratio is measured side by side in
the same process. Writes JSON.

    python benchmarks/stream_packing.py
    python benchmarks/stream_packing.py --copies 1 4 16 --max-seq-len 256
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
import tracemalloc
from pathlib import Path

from rich.console import Console

from adamlab.encoding import pack_documents
from adamlab.models import load_model
from adamlab.tasks import get_task
from adamlab.training.stream import StreamedBatches


def write_corpus(folder: Path, copies: int) -> tuple[Path, int]:
    documents = [e.text for e in get_task("c4").load("train")]
    path = folder / f"c4x{copies}.jsonl"
    with path.open("w", encoding="utf-8") as out:
        for _ in range(copies):
            out.writelines(json.dumps({"text": text}) + "\n" for text in documents)
    return path, copies * len(documents)


def in_memory(corpus: Path, tokenizer, args) -> tuple[float, float, int]:
    """(seconds to the first batch, seconds for the pass, tokens): everything is packed before the first batch."""
    started = time.perf_counter()
    rows = pack_documents(tokenizer, [e.text for e in get_task("c4").load("train", str(corpus))], args.max_seq_len)
    seconds = time.perf_counter() - started
    return seconds, seconds, sum(len(row.input_ids) - 1 for row in rows)


def streamed(corpus: Path, tokenizer, args) -> tuple[float, float, int]:
    batches = StreamedBatches(get_task("c4"), str(corpus), None, tokenizer, args.max_seq_len, args.batch_size)
    started, first, tokens, step = time.perf_counter(), None, 0, 0
    while batches.epoch_index == 0:  # one pass: the batch that starts the second pass ends it
        tokens += sum(len(row.input_ids) - 1 for row in batches.batch(step))
        first = first or time.perf_counter() - started
        step += 1
    return first, time.perf_counter() - started, tokens


def peak_bytes(measure, *args) -> int:
    tracemalloc.start()
    measure(*args)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return peak


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--copies", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--max-seq-len", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--out", default="benchmarks/results/stream_packing.json")
    args = parser.parse_args()
    tokenizer = load_model("llama-tiny").tokenizer
    results = []
    with tempfile.TemporaryDirectory() as folder:
        for copies in args.copies:
            corpus, documents = write_corpus(Path(folder), copies)
            row = {"documents": documents, "corpus_bytes": corpus.stat().st_size}
            for name, measure in (("in_memory", in_memory), ("streamed", streamed)):
                first, total, tokens = measure(corpus, tokenizer, args)
                row[name] = {"seconds_to_first_batch": first, "tokens_per_second": tokens / total,
                             "peak_python_bytes": peak_bytes(measure, corpus, tokenizer, args), "tokens": tokens}
            row["throughput_ratio"] = row["streamed"]["tokens_per_second"] / row["in_memory"]["tokens_per_second"]
            results.append(row)
            Console().print(f"{documents:>7,} documents: first batch {row['in_memory']['seconds_to_first_batch']:.2f} s"
                            f" in memory, {row['streamed']['seconds_to_first_batch']:.4f} s streamed; throughput "
                            f"ratio {row['throughput_ratio']:.2f}; peak memory "
                            f"{row['in_memory']['peak_python_bytes'] / 2**20:.1f} MiB vs "
                            f"{row['streamed']['peak_python_bytes'] / 2**20:.2f} MiB")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"settings": vars(args), "results": results}, indent=2) + "\n")


if __name__ == "__main__":
    main()
