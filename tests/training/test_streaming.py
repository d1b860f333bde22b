"""Pre-training on a streamed corpus: the stream packs exactly as pack_documents does, nothing is tokenised before the
first batch, a hub stream resumes from its own state, and a streamed run killed mid-stream resumes bit-identically."""

import json
import os
import shutil
import subprocess
import sys
from importlib import resources

import pytest
import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

from adamlab import encoding
from adamlab.cli import app
from adamlab.encoding import StreamPacker, pack_documents
from adamlab.models import byte_level_tokenizer
from adamlab.studies import expand_trials, load_spec
from adamlab.tasks import DataError, get_task
from adamlab.training import TrainConfig, train
from adamlab.training.loop import prepare, resume, train_step
from adamlab.training.lr_source import LRSource, resolve_lr
from adamlab.training.stream import StreamedBatches

from ..tasks.helpers import write_jsonl


@pytest.fixture(scope="module")
def tokenizer():
    return byte_level_tokenizer()


@pytest.fixture(scope="module")
def documents():
    """Real C4 documents of uneven lengths, cut so that one pass packs into a few dozen short rows."""
    texts = [e.text for e in get_task("c4").load("train")[:40]]
    return [text[: 20 + 37 * (i % 5)] for i, text in enumerate(texts)]


def _rows(batches, steps):
    return [row for step in range(steps) for row in batches.batch(step)]


@pytest.mark.parametrize("seq_len", [1, 5, 32, 100_000])
def test_a_stream_pass_packs_row_for_row_as_pack_documents(tokenizer, documents, seq_len):
    reference = pack_documents(tokenizer, documents, seq_len)
    packer, texts = StreamPacker(tokenizer, seq_len), iter(documents)
    rows = list(iter(lambda: packer.next_row(texts), None))
    assert rows == reference
    assert packer.tokens == [] and packer.next_row(iter(documents[:1])) == pack_documents(tokenizer, documents[:1],
                                                                                          seq_len)[0]


def test_streamed_batches_follow_the_corpus_pass_after_pass(tmp_path, tokenizer, documents):
    corpus = write_jsonl(tmp_path / "corpus.jsonl", [{"text": text} for text in documents])
    reference = pack_documents(tokenizer, documents, 32)
    batches = StreamedBatches(get_task("c4"), str(corpus), None, tokenizer, 32, batch_size=3)
    steps = 2 * len(reference) // 3 + 1  # into the third pass
    rows = _rows(batches, steps)
    assert rows == (reference * 3)[: 3 * steps] and batches.epoch(steps) == 2.0
    # train_limit: the first documents of the corpus, every pass
    limited = StreamedBatches(get_task("c4"), str(corpus), 7, tokenizer, 32, batch_size=2)
    first_seven = pack_documents(tokenizer, documents[:7], 32)
    assert _rows(limited, len(first_seven)) == (first_seven * 2)[: 2 * len(first_seven)]
    # a blank-line-separated text file reads as the in-memory reader reads it
    text_file = tmp_path / "corpus.txt"
    text_file.write_text("\n\n".join(documents) + "\n", encoding="utf-8")
    assert [e.text for e in get_task("c4").load("train", str(text_file))] == documents
    from_text = StreamedBatches(get_task("c4"), str(text_file), None, tokenizer, 32, batch_size=3)
    assert _rows(from_text, 4) == reference[:12]


def test_a_bad_record_names_its_file_and_line_when_it_is_reached(tmp_path, tokenizer):
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text('{"text": "fine"}\n\n{"body": "no text"}\n', encoding="utf-8")
    batches = StreamedBatches(get_task("c4"), str(corpus), None, tokenizer, 4, batch_size=1)
    assert batches.batch(0)[0].input_ids[:4] == encoding.tokenize(tokenizer, "fine")
    with pytest.raises(DataError, match=r"corpus\.jsonl, line 3: c4 record lacks field 'text'"):
        batches.batch(1)


def test_batches_resume_from_their_state_without_reading_twice(tmp_path, tokenizer, documents):
    corpus = write_jsonl(tmp_path / "corpus.jsonl", [{"text": text} for text in documents])
    cut = len(pack_documents(tokenizer, documents, 16)) // 4 + 3  # in the second pass
    straight = _rows(StreamedBatches(get_task("c4"), str(corpus), None, tokenizer, 16, batch_size=4), cut + 10)
    first = StreamedBatches(get_task("c4"), str(corpus), None, tokenizer, 16, batch_size=4)
    _rows(first, cut)
    state = json.loads(json.dumps(first.state_dict()))  # plain values
    assert state["tokens"] and state["epoch"] == 1  # a document cut mid-row, in the second pass
    resumed = StreamedBatches(get_task("c4"), str(corpus), None, tokenizer, 16, batch_size=4)
    resumed.load_state_dict(state)
    assert [row for step in range(cut, cut + 10) for row in resumed.batch(step)] == straight[cut * 4:]
    with pytest.raises(RuntimeError, match=f"asked for step 3, the next is {cut + 10}"):
        resumed.batch(3)


def test_a_hub_stream_resumes_from_the_datasets_state(tmp_path, monkeypatch, tokenizer, documents):
    """The hub path with ``datasets``' real streaming reader over a local JSON file (no network)."""
    datasets = pytest.importorskip("datasets")
    corpus = write_jsonl(tmp_path / "hub.jsonl", [{"text": text} for text in documents[:12]]
                         + [{"text": " "}] + [{"text": text} for text in documents[12:]])
    real_load_dataset, opened = datasets.load_dataset, []

    def load_dataset(path, name=None, split=None, streaming=False):
        opened.append((path, name, split, streaming))
        dataset = real_load_dataset("json", data_files=str(corpus), split="train", streaming=streaming)
        restored = dataset.load_state_dict
        dataset.load_state_dict = lambda state: (opened.append("restored"), restored(state))
        return dataset

    monkeypatch.setattr(datasets, "load_dataset", load_dataset)
    reference = pack_documents(tokenizer, documents, 16)  # the blank row is layout, not a document
    make = lambda: StreamedBatches(get_task("c4"), "allenai/c4", None, tokenizer, 16, batch_size=4)
    straight = _rows(make(), 12)
    assert straight == reference[:48] and opened == [("allenai/c4", "en", "train", True)]
    first = make()
    _rows(first, 5)
    state = first.state_dict()
    assert "hub" in state["documents"]
    resumed = make()
    resumed.load_state_dict(state)
    assert [row for step in range(5, 12) for row in resumed.batch(step)] == straight[20:]
    assert opened[-1] == "restored"


def pretrain_config(out, corpus, **overrides):
    return TrainConfig(model="llama-tiny", task="c4", out=out and str(out), lora=None, optimizer="adamw", lr=3e-3,
                       schedule="cosine", warmup_steps=2, steps=10, batch_size=4, max_seq_len=32, stream=True,
                       train_source=str(corpus), train_limit=6, eval_limit=4, checkpoint_every=5, **overrides)


def test_only_the_first_batch_is_tokenised_before_step_one(tmp_path, monkeypatch, documents):
    corpus = write_jsonl(tmp_path / "corpus.jsonl", [{"text": text} for text in documents])
    tokenised = []
    monkeypatch.setattr(encoding, "tokenize", lambda tokenizer, text: tokenised.append(text) or
                        tokenizer(text, add_special_tokens=False)["input_ids"])
    run = prepare(pretrain_config(tmp_path / "run", corpus))
    resume(run)
    assert tokenised == []
    train_step(run)
    # just enough documents for 4 rows of 32 predictions (4 x 32 + 1 tokens), and not one more
    stream_length = lambda n: len(encoding.token_stream(run.inputs.loaded.tokenizer, documents[:n]))
    needed = next(n for n in range(1, len(documents)) if stream_length(n) >= 4 * 32 + 1)
    assert needed > 1 and tokenised == documents[:needed]


@pytest.mark.parametrize("where", ["local", "hub"])
def test_a_streamed_run_killed_mid_stream_resumes_bit_identically(tmp_path, monkeypatch, documents, where):
    corpus = write_jsonl(tmp_path / "corpus.jsonl", [{"text": text} for text in documents])
    if where == "hub":  # datasets' real streaming reader over the same file, under a hub id (no network)
        datasets = pytest.importorskip("datasets")
        real_load_dataset = datasets.load_dataset
        monkeypatch.setattr(datasets, "load_dataset", lambda path, name=None, split=None, streaming=False:
                            real_load_dataset("json", data_files=str(corpus), split="train", streaming=streaming))
    source = corpus if where == "local" else "allenai/c4"
    straight = train(pretrain_config(tmp_path / "straight", source), show_progress=False)
    assert straight.status == "done" and straight.record.data["epochs_completed"] == 2  # 16 rows a pass, 40 read
    out = tmp_path / "killed"
    train(pretrain_config(out, source), show_progress=False)
    state = torch.load(out / "checkpoints" / "step-00000005" / "state.pt", weights_only=True)
    assert state["stream"]["step"] == 5 and state["stream"]["tokens"]  # stopped inside a document
    assert ("hub" in state["stream"]["documents"]) == (where == "hub")
    for later in ("checkpoints/step-00000010", "model", "result.json", "evals.jsonl", "predictions.jsonl"):
        shutil.rmtree(out / later, ignore_errors=True) if (out / later).is_dir() else (out / later).unlink()
    resumed = train(pretrain_config(out, source), show_progress=False)
    assert resumed.metrics == straight.metrics
    weights = load_file(out / "model" / "model.safetensors")
    for name, tensor in load_file(tmp_path / "straight" / "model" / "model.safetensors").items():
        assert torch.equal(tensor, weights[name]), name
    losses = lambda run: [json.loads(line)["loss"] for line in (run / "metrics.jsonl").open()]
    assert losses(out) == losses(tmp_path / "straight") and len(losses(out)) == 10


def test_stream_is_for_language_modelling_and_leaves_existing_trial_keys_alone(tmp_path):
    assert "stream" not in TrainConfig(model="llama-tiny", task="c4").identity()
    assert TrainConfig(model="llama-tiny", task="c4", stream=True).identity()["stream"] is True
    with pytest.raises(ValueError, match="ag_news is a classification task"):
        TrainConfig(model="tiny-llama", task="ag_news", stream=True).validate()
    with pytest.raises(ValueError, match="stream must be true or false"):
        TrainConfig(model="llama-tiny", task="c4", lora=None, stream="yes").validate()


@pytest.mark.parametrize("name, steps, warmup", [("pretrain_c4_llama", 55_000, 5_500),
                                                 ("adam_mini_gpt2", 100_000, 2_000)])
def test_the_gpu_protocols_stream_their_published_length(tmp_path, name, steps, warmup):
    spec = load_spec(resources.files("adamlab.studies").joinpath("specs", f"{name}.yaml"))
    trials = expand_trials(spec, tmp_path, estimates=tmp_path / "estimates", run_estimates=False)
    assert {(t.config.stream, t.config.train_limit, t.config.steps, t.config.warmup_steps) for t in trials} == \
        {(True, None, steps, warmup)}


def test_a_streamed_run_refuses_a_learning_rate_estimated_on_examples_in_memory(tmp_path, documents):
    corpus = write_jsonl(tmp_path / "corpus.jsonl", [{"text": text} for text in documents])
    config = pretrain_config(None, corpus)
    with pytest.raises(ValueError, match="this run streams its corpus"):
        resolve_lr(config, LRSource("range-test"))
    with pytest.raises(ValueError, match="give a saved estimate"):
        TrainConfig(model="llama-tiny", task="c4", lora=None, optimizer="adam_dds", stream=True).validate()


def test_the_cli_streams_on_request_and_refuses_bad_input_before_any_work(tmp_path, documents):
    corpus = write_jsonl(tmp_path / "corpus.jsonl", [{"text": text} for text in documents])
    refused = CliRunner().invoke(app, ["train", "--model", "tiny-llama", "--task", "ag_news", "--stream",
                                       "--out", str(tmp_path / "refused")])
    assert refused.exit_code == 2 and "ag_news is a classification task" in refused.output
    missing = CliRunner().invoke(app, ["train", "--model", "llama-tiny", "--task", "c4", "--lora", "none", "--stream",
                                       "--train-data", str(tmp_path / "missing.txt"), "--out", str(tmp_path / "none")])
    assert missing.exit_code == 2 and "no data file at" in missing.output and not (tmp_path / "none").exists()
    out = tmp_path / "run"
    ran = CliRunner().invoke(app, ["train", "--model", "llama-tiny", "--task", "c4", "--lora", "none", "--stream",
                                   "--train-data", str(corpus), "--steps", "2", "--batch-size", "2",
                                   "--max-seq-len", "16", "--eval-limit", "2", "--no-progress", "--out", str(out)])
    assert ran.exit_code == 0, ran.output
    assert json.loads((out / "result.json").read_text())["data"]["n_train_rows_read"] == 4


def test_two_processes_streaming_match_one(tmp_path, documents):
    """Under `accelerate launch` every process reads the whole stream and trains on its share of each batch."""
    corpus = write_jsonl(tmp_path / "corpus.jsonl", [{"text": text} for text in documents])
    common = ["--model", "llama-tiny", "--task", "c4", "--lora", "none", "--stream", "--train-data", str(corpus),
              "--train-limit", "6", "--steps", "5", "--batch-size", "4", "--max-seq-len", "32", "--eval-limit", "2",
              "--lr", "0.003", "--no-progress", "--checkpoint-every", "0"]
    single = subprocess.run([sys.executable, "-m", "adamlab", "train", "--out", str(tmp_path / "one"), *common],
                            capture_output=True, text=True)
    assert single.returncode == 0, single.stderr[-3000:]
    launcher = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
                "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", "29541"]
    double = subprocess.run([*launcher, "-m", "adamlab", "train", "--out", str(tmp_path / "two"), *common],
                            capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert double.returncode == 0, double.stderr[-3000:]
    assert json.loads((tmp_path / "two" / "result.json").read_text())["processes"] == 2
    losses = lambda run: [json.loads(line)["loss"] for line in (tmp_path / run / "metrics.jsonl").open()]
    assert losses("two") == pytest.approx(losses("one"), rel=1e-6) and len(losses("one")) == 5
    # Adam divides by the gradient's own scale, so all-reduce rounding moves a near-zero coordinate by ~1e-6
    two = load_file(tmp_path / "two" / "model" / "model.safetensors")
    for name, tensor in load_file(tmp_path / "one" / "model" / "model.safetensors").items():
        torch.testing.assert_close(two[name], tensor, rtol=1e-3, atol=1e-5)
