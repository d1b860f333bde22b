"""Language-model corpora: packing loses and repeats no token, perplexity is exp(mean token loss), the bundled
splits are disjoint, and pre-training from scratch resumes bit-identically."""

import json
import math
import shutil

import pytest
import torch

from adamlab.encoding import IGNORE_INDEX, collate, pack_documents, pack_stream, token_stream
from adamlab.evaluation import evaluate, sequence_losses
from adamlab.metrics import perplexity_scores
from adamlab.models import SCRATCH_MODELS, byte_level_tokenizer, load_model
from adamlab.tasks import DataError, get_task
from adamlab.tasks.corpus import EVAL_DOCUMENTS

from .helpers import write_jsonl


@pytest.fixture(scope="module")
def tokenizer():
    return byte_level_tokenizer()


@pytest.mark.parametrize("seq_len", [1, 7, 16, 1000])
def test_packing_loses_and_repeats_no_target_token(tokenizer, seq_len):
    documents = ["first document", "a second, longer document with more words", "x"]
    stream = token_stream(tokenizer, documents)
    rows = pack_stream(stream, seq_len)
    assert all(len(row.input_ids) <= seq_len + 1 and row.labels == row.input_ids for row in rows)
    assert all(len(row.input_ids) == seq_len + 1 for row in rows[:-1])  # only the last row may be short
    # each row predicts its tokens after the first: together, every token after the stream's first exactly once
    targets = [token for row in rows for token in row.input_ids[1:]]
    assert targets == stream[1:]
    assert [row.input_ids[0] for row in rows[1:]] == [row.input_ids[-1] for row in rows[:-1]]  # the one overlap


def test_documents_are_separated_by_end_of_sequence(tokenizer):
    stream = token_stream(tokenizer, ["ab", "cd"])
    eos = tokenizer.eos_token_id
    assert stream == [*tokenizer("ab")["input_ids"], eos, *tokenizer("cd")["input_ids"], eos]
    assert tokenizer.decode(stream) == "ab<|im_end|>cd<|im_end|>"
    assert pack_documents(tokenizer, ["ab", "cd"], 4) == pack_stream(stream, 4)


def test_perplexity_of_uniform_predictions_is_the_vocabulary_size():
    class Uniform(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.anchor = torch.nn.Parameter(torch.zeros(()))

        def forward(self, input_ids, attention_mask):
            return type("Output", (), {"logits": torch.zeros(*input_ids.shape, 50) + self.anchor})

    rows = pack_stream(list(range(40)), 8)
    losses = sequence_losses(Uniform(), rows, pad_id=0, batch_size=2)
    assert [count for _, count in losses] == [8, 8, 8, 8, 7]
    scores = perplexity_scores([loss for loss, _ in losses], [count for _, count in losses])
    assert scores["perplexity"] == pytest.approx(50.0, rel=1e-12)
    assert scores["loss"] == pytest.approx(math.log(50), rel=1e-12) and scores["n_tokens"] == 39


def test_perplexity_is_exp_of_the_token_weighted_mean_loss(tokenizer):
    loaded = load_model("llama-tiny", seed=1)
    examples = get_task("wikitext2").load("eval", limit=2)
    result = evaluate(loaded.model, tokenizer, "causal_lm", get_task("wikitext2"), examples, batch_size=4,
                      max_seq_len=64)
    rows = pack_documents(tokenizer, [e.text for e in examples], 64)
    batch = collate(rows, tokenizer.pad_token_id)
    with torch.no_grad():
        logits = loaded.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits.double()
    mean = torch.nn.functional.cross_entropy(logits[:, :-1].flatten(0, 1), batch["labels"][:, 1:].flatten(),
                                             ignore_index=IGNORE_INDEX).item()
    assert result.mode == "perplexity"
    assert result.metrics["loss"] == pytest.approx(mean, rel=1e-9)
    assert result.metrics["perplexity"] == pytest.approx(math.exp(mean), rel=1e-9)
    assert result.metrics["n_tokens"] == sum(len(r.input_ids) - 1 for r in rows)


def test_bundled_corpora_splits():
    c4 = get_task("c4")
    train, held_out = c4.load("train"), c4.load("eval")
    assert (len(train), len(held_out)) == (2000 - EVAL_DOCUMENTS, EVAL_DOCUMENTS)
    assert not {e.text for e in train} & {e.text for e in held_out}
    wikitext = get_task("wikitext2")
    assert (len(wikitext.load("train")), len(wikitext.load("eval"))) == (60, 60)  # official validation / test
    assert wikitext.load("eval")[0].text.startswith(" \n = Robert Boulter = ")


def test_local_text_and_jsonl_corpora(tmp_path):
    text_file = tmp_path / "corpus.txt"
    text_file.write_text("one doc\nstill one\n\n\nsecond doc\n", encoding="utf-8")
    documents = get_task("c4").load("train", source=str(text_file))
    assert [e.text for e in documents] == ["one doc\nstill one", "second doc"]
    bad = write_jsonl(tmp_path / "docs.jsonl", [{"text": "fine"}, {"body": "no text field"}])
    with pytest.raises(DataError, match=r"docs\.jsonl, line 2: c4 record lacks field 'text'"):
        get_task("c4").load("train", source=str(bad))


def test_hub_corpus_is_streamed(monkeypatch):
    datasets = pytest.importorskip("datasets")
    calls = []

    def load_dataset(path, name=None, split=None, streaming=False):
        calls.append((path, name, split, streaming))
        return iter([{"text": "a"}, {"text": " "}, {"text": "b"}])

    monkeypatch.setattr(datasets, "load_dataset", load_dataset)
    documents = get_task("c4").load("train", source="allenai/c4")
    assert calls == [("allenai/c4", "en", "train", True)]
    assert [e.text for e in documents] == ["a", "b"]  # blank rows are layout, not documents


def test_scratch_models_have_the_published_sizes():
    from transformers import AutoModelForCausalLM, GPT2Config, LlamaConfig

    expected = {"llama-60m": 58, "llama-130m": 134, "llama-350m": 368, "gpt2-124m": 124}  # million parameters
    for name, millions in expected.items():
        spec = SCRATCH_MODELS[name]
        config_class = LlamaConfig if spec.model_type == "llama" else GPT2Config
        with torch.device("meta"):
            model = AutoModelForCausalLM.from_config(config_class(vocab_size=spec.vocab_size, **spec.size))
        parameters = sum(p.numel() for p in model.parameters())
        if name == "gpt2-124m":  # GPT-2 ties its output layer to the embedding
            parameters = sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())
        assert round(parameters / 1e6) == pytest.approx(millions, abs=2), name


def test_pretraining_resumes_bit_identically(tmp_path):
    from safetensors.torch import load_file

    from adamlab.training import TrainConfig, train

    def config(out):
        return TrainConfig(model="llama-tiny", task="c4", out=str(out), lora=None, optimizer="adamw", lr=3e-3,
                           schedule="cosine", warmup_steps=2, steps=6, batch_size=4, max_seq_len=64, train_limit=30,
                           eval_limit=4, checkpoint_every=3)

    straight = train(config(tmp_path / "straight"), show_progress=False)
    assert straight.status == "done" and straight.metrics["perplexity"] < 320  # better than uniform over bytes
    # a run killed after its step-3 checkpoint: what it wrote later is gone
    out = tmp_path / "killed"
    train(config(out), show_progress=False)
    for later in ("checkpoints/step-00000006", "model", "result.json", "evals.jsonl", "predictions.jsonl"):
        shutil.rmtree(out / later, ignore_errors=True) if (out / later).is_dir() else (out / later).unlink()
    resumed = train(config(out), show_progress=False)
    assert resumed.metrics == straight.metrics
    weights = load_file(out / "model" / "model.safetensors")
    for name, tensor in load_file(tmp_path / "straight" / "model" / "model.safetensors").items():
        assert torch.equal(tensor, weights[name]), name
    losses = lambda run: [json.loads(line)["loss"] for line in (run / "metrics.jsonl").open()]
    assert losses(out) == losses(tmp_path / "straight") and len(losses(out)) == 6


def test_scratch_models_refuse_lora(tmp_path):
    from adamlab.training import TrainConfig, train

    with pytest.raises(ValueError, match="pass --lora none"):
        train(TrainConfig(model="llama-tiny", task="c4", out=str(tmp_path / "run"), steps=1), show_progress=False)
    assert not (tmp_path / "run").exists()


def test_reports_rank_perplexity_lowest_first():
    from adamlab.reports.results import rank_marks

    assert rank_marks({0: 10.0, 1: 5.0, 2: 7.0}, "perplexity") == {1: "best", 2: "second"}
    assert rank_marks({0: 10.0, 1: 5.0, 2: 7.0}, "accuracy") == {0: "best", 2: "second"}


def test_the_tokenizer_field_leaves_existing_trial_keys_alone():
    from adamlab.training import TrainConfig

    plain = TrainConfig(model="minilm", task="ag_news")
    assert "tokenizer" not in plain.identity()
    assert TrainConfig(model="llama-tiny", task="c4", tokenizer="gpt2").identity()["tokenizer"] == "gpt2"


def test_training_flops_per_token_follow_palm_and_nanogpt():
    from adamlab.models import peak_flops, training_flops_per_token

    gpt2 = load_model("gpt2-124m", tokenizer="byte-level").model  # tied output layer, learned positions
    n = sum(p.numel() for p in gpt2.parameters()) - gpt2.transformer.wpe.weight.numel()
    assert training_flops_per_token(gpt2, 1024) == 6 * n + 12 * 12 * 768 * 1024
    llama = load_model("llama-tiny").model  # untied: the input embedding is a lookup
    n = sum(p.numel() for p in llama.parameters()) - llama.model.embed_tokens.weight.numel()
    assert training_flops_per_token(llama, 128) == 6 * n + 12 * 4 * 128 * 128
    assert peak_flops("NVIDIA H100 80GB HBM3") == 989e12 and peak_flops("a CPU") is None
