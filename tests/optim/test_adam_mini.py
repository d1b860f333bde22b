"""Adam-mini-specific checks: parity with the official adam-mini 1.1.1 on a Llama-style model, the partition rules
and report, weight-decay exemptions, the closed-form first step, state dtype and memory, resume, from_model and
LoRA, error paths, and `adamlab train` end to end. The shared tests run from optim_info.py; data parallelism is in
test_adam_mini_ddp.py."""

from __future__ import annotations

import copy
import json
import logging
import pickle

import pytest
import torch

from adamlab.optim import create_optimizer, optimizer_state_bytes
from adamlab.optim.adam_mini import AdamMini

HPARAMS = dict(lr=3e-3, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.1)
SHAPE = dict(dim=32, n_heads=4, n_kv_heads=2)


def llama(dtype=torch.float64, attention_bias=True):
    """The spec's parity model (§7): dim 32, 4 heads, 2 KV heads, vocab 50, 2 layers, untied head; biases (on the
    attention projections, else on the MLP) exercise the Adam rule."""
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(vocab_size=50, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, attention_bias=attention_bias,
                         mlp_bias=not attention_bias, tie_word_embeddings=False)
    torch.manual_seed(0)
    return LlamaForCausalLM(config).to(dtype)


def batches(steps):
    gen = torch.Generator().manual_seed(7)
    return [torch.randint(0, 50, (8, 17), generator=gen) for _ in range(steps)]


def train_step(model, optimizer, tokens):
    optimizer.zero_grad(set_to_none=True)
    model(input_ids=tokens, labels=tokens).loss.backward()
    optimizer.step()


def official():
    return pytest.importorskip("adam_mini", reason="the official adam-mini==1.1.1 is the reference").Adam_mini


def report(optimizer):
    return {e.name: e for e in optimizer.partition_report()}


# --- parity with the official implementation --------------------------------------------------------------


def renamed(model):
    """Names that match none of the rules: everything falls back to one block per tensor."""
    return [(f"block{i}", p) for i, p in enumerate(model.parameters())]


# fp32 with unknown names is left out: one learning rate per tensor makes that run sensitive to rounding (at step
# 50 each fp32 implementation is ~9e-4 from the fp64 trajectory, and 1.8e-4 from the other); fp64 covers it.
@pytest.mark.parametrize(
    "variant,dtype,tol",
    [(v, torch.float64, 1e-12) for v in ("default", "wv_whole_tensor", "unknown_names")]
    + [(v, torch.float32, 1e-6) for v in ("default", "wv_whole_tensor")],
)
@pytest.mark.parametrize("foreach", [False, True])
def test_matches_official_v1_1_1(variant, dtype, tol, foreach):
    Adam_mini = official()
    # K's bias has a zero gradient in exact arithmetic (softmax ignores a shift shared by all keys), and per-element
    # Adam normalises the rounding noise to steps of ~lr: in fp32 that noise differs between any two
    # implementations, so fp32 moves the biases to the MLP.
    ours_model = llama(dtype, attention_bias=dtype == torch.float64)
    theirs_model = copy.deepcopy(ours_model)
    named = renamed if variant == "unknown_names" else lambda m: m.named_parameters()
    ours = AdamMini(named(ours_model), **HPARAMS, **SHAPE, foreach=foreach, verbose=False)
    theirs = Adam_mini(named(theirs_model), **HPARAMS, **SHAPE, verbose=False)
    if variant == "wv_whole_tensor":  # the README's advice for short runs, set before the first step
        ours.wv_names = {}
        theirs.wv_names = {}
    for step, tokens in enumerate(batches(50), start=1):
        train_step(ours_model, ours, tokens)
        train_step(theirs_model, theirs, tokens)
        if step in (1, 2, 10, 50):
            for (name, a), b in zip(ours_model.named_parameters(), theirs_model.parameters()):
                torch.testing.assert_close(a, b, atol=tol, rtol=0, msg=lambda m, s=step, n=name: f"step {s} {n}: {m}")
    for a, b in zip(ours_model.parameters(), theirs_model.parameters()):
        ours_state, theirs_state = ours.state[a], theirs.state[b]
        assert ours_state["step"] == theirs_state["step"] == 50
        for key in ("m", "v", "vmean"):
            if key in theirs_state:
                torch.testing.assert_close(ours_state[key], theirs_state[key], atol=tol, rtol=0)
    if variant == "wv_whole_tensor":
        assert report(ours)["model.layers.0.self_attn.v_proj.weight"].rule == "tensor"


def test_closed_form_first_step():
    """After one step each parameter is p0 (1 - lr wd_p) - lr g / (RMS of g over its block + eps) (spec §3)."""
    model = llama()
    optimizer = AdamMini(model.named_parameters(), **HPARAMS, **SHAPE, verbose=False)
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    train_step(model, optimizer, batches(1)[0])
    lr, eps = HPARAMS["lr"], HPARAMS["eps"]
    params = dict(model.named_parameters())  # all lower-case, as the report's names
    for entry in optimizer.partition_report():
        p, g = params[entry.name], params[entry.name].grad
        if entry.rule == "adam":
            rms = g.abs()
        elif entry.rule == "tensor":
            rms = g.pow(2).mean().sqrt()
        else:  # head blocks are the rows of g cut into blocks of dim^2 / n_heads elements
            blocks = g.reshape(entry.blocks, -1)
            rms = blocks.pow(2).mean(dim=1, keepdim=True).sqrt().expand_as(blocks).reshape(g.shape)
        expected = before[entry.name] * (1 - lr * entry.weight_decay) - lr * g / (rms + eps)
        torch.testing.assert_close(p, expected, atol=1e-12, rtol=0, msg=entry.name)


# --- partition and weight decay -------------------------------------------------------------------------------


def test_partition_of_a_llama_model():
    """Spec §7.3: embeddings, V, O, MLP and the LM head per row; Q in 4 and K in 2 head blocks of 256; biases Adam;
    norms one block, not decayed."""
    optimizer = AdamMini(llama().named_parameters(), **HPARAMS, **SHAPE, verbose=False)
    entries = report(optimizer)
    assert optimizer.head_numel == 256
    expected = {
        "model.embed_tokens.weight": ("row", 50, "embed"),
        "model.layers.0.self_attn.q_proj.weight": ("head", 4, "q_proj"),
        "model.layers.0.self_attn.k_proj.weight": ("head", 2, "k_proj"),
        "model.layers.0.self_attn.v_proj.weight": ("row", 16, "v_proj"),
        "model.layers.0.self_attn.o_proj.weight": ("row", 32, "o_proj"),
        "model.layers.0.self_attn.q_proj.bias": ("adam", 32, "bias"),
        "model.layers.0.mlp.gate_proj.weight": ("row", 64, "mlp"),
        "model.layers.0.mlp.down_proj.weight": ("row", 32, "mlp"),
        "model.layers.0.input_layernorm.weight": ("tensor", 1, None),
        "model.norm.weight": ("tensor", 1, None),
        "lm_head.weight": ("row", 50, "lm_head"),
    }
    for name, (rule, blocks, matched) in expected.items():
        assert (entries[name].rule, entries[name].blocks, entries[name].matched) == (rule, blocks, matched), name
    assert len(entries) == len(list(llama().parameters()))
    assert all(group["rule"] == entries[group["name"]].rule for group in optimizer.param_groups)


def test_partition_is_logged_once_and_unknown_names_warn(caplog):
    with caplog.at_level(logging.INFO, logger="adamlab.optim.adam_mini"):
        AdamMini(llama().named_parameters(), **SHAPE)
    assert "q_proj.weight" in caplog.text and "head" in caplog.text and "WARNING" not in caplog.text
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="adamlab.optim.adam_mini"):
        optimizer = AdamMini(renamed(llama()), **SHAPE)
    assert {e.rule for e in optimizer.partition_report()} == {"tensor"}
    assert any(r.levelno == logging.WARNING and "one learning rate" in r.message for r in caplog.records)
    caplog.clear()
    AdamMini(llama().named_parameters(), **SHAPE, verbose=False)
    assert not caplog.records


def test_weight_decay_exemptions_by_name():
    """norm, ln and bias anywhere in the lower-cased name: no decay; embeddings and the LM head are decayed."""
    names = {
        "model.norm.weight": 0.0,
        "transformer.h.0.ln_1.weight": 0.0,
        "transformer.ln_f.bias": 0.0,
        "model.layers.0.self_attn.q_proj.bias": 0.0,
        "encoder.LayerNorm.weight": 0.0,
        "model.embed_tokens.weight": 0.1,
        "lm_head.weight": 0.1,
        "model.layers.0.mlp.up_proj.weight": 0.1,
    }
    params = {name: torch.ones(4, 4, dtype=torch.float64, requires_grad=True) for name in names}
    optimizer = AdamMini(list(params.items()), lr=0.5, weight_decay=0.1, dim=4, n_heads=2, verbose=False)
    assert {g["name"]: g["weight_decay"] for g in optimizer.param_groups} == {k.lower(): v for k, v in names.items()}
    for p in params.values():  # a zero gradient leaves only the decay: p (1 - lr wd)
        p.grad = torch.zeros_like(p)
    optimizer.step()
    for name, decay in names.items():
        assert torch.equal(params[name], torch.full((4, 4), 1 - 0.5 * decay, dtype=torch.float64)), name


def test_param_group_dicts_override_defaults_per_parameter():
    model = llama()
    embed = [(n, p) for n, p in model.named_parameters() if "embed" in n]
    rest = [(n, p) for n, p in model.named_parameters() if "embed" not in n]
    optimizer = AdamMini([{"params": embed, "lr": 1e-4}, {"params": rest}], lr=1e-3, **SHAPE, verbose=False)
    lrs = {g["name"]: g["lr"] for g in optimizer.param_groups}
    assert lrs["model.embed_tokens.weight"] == 1e-4 and lrs["lm_head.weight"] == 1e-3
    assert len(optimizer.param_groups) == len(embed) + len(rest)


def test_frozen_parameters_are_skipped():
    model = llama()
    model.model.embed_tokens.weight.requires_grad_(False)
    optimizer = AdamMini(model.named_parameters(), **SHAPE, verbose=False)
    assert "model.embed_tokens.weight" not in report(optimizer)


# --- state ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_state_is_in_the_parameter_dtype_with_block_shapes(dtype):
    model = llama(dtype)
    optimizer = AdamMini(model.named_parameters(), **HPARAMS, **SHAPE, verbose=False)
    train_step(model, optimizer, batches(1)[0])
    params = dict(model.named_parameters())
    shapes = {
        "model.layers.0.self_attn.q_proj.weight": ("vmean", (4, 256), (4, 1)),
        "model.layers.0.self_attn.k_proj.weight": ("vmean", (2, 256), (2, 1)),
        "model.layers.0.self_attn.v_proj.weight": ("vmean", (16, 32), (16, 1)),
        "lm_head.weight": ("vmean", (50, 32), (50, 1)),
        "model.norm.weight": ("vmean", (32,), ()),
        "model.layers.0.self_attn.q_proj.bias": ("v", (32,), (32,)),
    }
    for name, (key, m_shape, v_shape) in shapes.items():
        state = optimizer.state[params[name]]
        assert state["step"] == 1
        assert (tuple(state["m"].shape), tuple(state[key].shape)) == (m_shape, v_shape), name
        assert state["m"].dtype == state[key].dtype == dtype, name
        assert torch.isfinite(params[name]).all()


def test_state_bytes_are_about_half_of_adamw_on_full_fine_tuning():
    from adamlab.models import load_model

    model = load_model("tiny-llama").model
    tokens = torch.randint(0, 200, (2, 16), generator=torch.Generator().manual_seed(0))
    sizes = {}
    for name in ("adamw", "adam_mini"):
        optimizer = create_optimizer(name, model, lr=0.0)
        train_step(model, optimizer, tokens)
        sizes[name] = optimizer_state_bytes(optimizer)
    # Adam-mini: m (1x params) + one scalar per row / head / norm; AdamW: m and v (2x params) + step tensors.
    params_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    assert sizes["adamw"] >= 2 * params_bytes
    assert sizes["adam_mini"] <= 0.51 * sizes["adamw"], sizes


@pytest.mark.parametrize("foreach", [False, True])
def test_state_dict_resume_is_bit_identical(foreach):
    tokens = batches(12)

    def build(model):
        return AdamMini(model.named_parameters(), **HPARAMS, **SHAPE, foreach=foreach, verbose=False)

    straight_model = llama()
    straight = build(straight_model)
    for t in tokens:
        train_step(straight_model, straight, t)

    first_model = llama()
    first = build(first_model)
    for t in tokens[:6]:
        train_step(first_model, first, t)
    saved = copy.deepcopy(first.state_dict())
    resumed_model = copy.deepcopy(first_model)
    resumed = build(resumed_model)
    resumed.load_state_dict(saved)
    for t in tokens[6:]:
        train_step(resumed_model, resumed, t)

    for a, b in zip(straight_model.parameters(), resumed_model.parameters()):
        assert torch.equal(a, b)
    assert [g["rule"] for g in resumed.param_groups] == [g["rule"] for g in straight.param_groups]


def test_foreach_matches_single_tensor_on_every_rule():
    models = [llama(), llama()]
    optimizers = [AdamMini(m.named_parameters(), **HPARAMS, **SHAPE, foreach=f, verbose=False)
                  for m, f in zip(models, (False, True))]
    assert {e.rule for e in optimizers[0].partition_report()} == {"adam", "head", "row", "tensor"}
    for tokens in batches(50):
        for model, optimizer in zip(models, optimizers):
            train_step(model, optimizer, tokens)
    for a, b in zip(*(m.parameters() for m in models)):
        torch.testing.assert_close(a, b, atol=1e-12, rtol=0)
        for key in optimizers[0].state[a]:
            torch.testing.assert_close(optimizers[0].state[a][key], optimizers[1].state[b][key], atol=1e-12, rtol=0)


def test_empty_tensor_rule_parameter_keeps_a_zero_second_moment():
    empty = torch.zeros(0, dtype=torch.float64, requires_grad=True)
    optimizer = AdamMini([("scale", empty)], verbose=False)
    empty.grad = torch.zeros(0, dtype=torch.float64)
    optimizer.step()
    assert optimizer.state[empty]["vmean"].item() == 0 and optimizer.state[empty]["step"] == 1


# --- world size, from_model, LoRA, registry -----------------------------------------------------------------


def test_world_size_comes_from_the_process_group_not_the_gpu_count(monkeypatch):
    """The reference takes torch.cuda.device_count() and then needs a process group (issue #35)."""
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 4)
    model = llama()
    optimizer = AdamMini(model.named_parameters(), **SHAPE, verbose=False)
    assert optimizer.world_size == 1
    train_step(model, optimizer, batches(1)[0])


def test_from_model_reads_the_config_and_a_peft_model_gets_the_lora_partition():
    from adamlab.models import LoraSettings, apply_lora, load_model

    loaded = load_model("tiny-llama")
    optimizer = AdamMini.from_model(loaded.model, verbose=False)
    assert (optimizer.dim, optimizer.n_heads, optimizer.n_kv_heads) == (64, 4, 2)
    assert optimizer.defaults["partition"] == "official"
    assert AdamMini.from_model(loaded.model, dim=32, verbose=False).dim == 32

    peft = apply_lora(loaded, LoraSettings(r=16)).model
    optimizer = AdamMini.from_model(peft, verbose=False)
    assert (optimizer.dim, optimizer.n_heads) == (64, 4)
    entries = report(optimizer)
    assert optimizer.defaults["partition"] == "lora" and len(entries) == 2 * 4 * 2  # A and B, 4 projections, 2 layers
    k_b = entries["base_model.model.model.layers.0.self_attn.k_proj.lora_b.default.weight"]
    assert (k_b.rule, k_b.blocks, k_b.matched) == ("row", 32, "lora_b")
    assert all(g["partition"] == "lora" for g in optimizer.param_groups)  # recorded with every group

    # The official rules split K's lora_B (32 x 16 = 512 elements) into head blocks of 64^2 / 4 = 1024.
    with pytest.raises(ValueError, match=r"k_proj\.lora_b.*not a whole number of head blocks.*partition='lora'"):
        AdamMini.from_model(peft, partition="official", verbose=False)


def test_registry_builds_it_from_a_model():
    from adamlab.models import load_model

    model = load_model("tiny-llama").model
    optimizer = create_optimizer("adam-mini", model, lr=1e-3, weight_decay=0.1)
    assert isinstance(optimizer, AdamMini) and optimizer.dim == 64
    assert report(optimizer)["model.norm.weight"].weight_decay == 0.0
    assert report(optimizer)["model.embed_tokens.weight"].weight_decay == 0.1


# --- errors -------------------------------------------------------------------------------------------------


def test_a_1d_tensor_routed_per_row_fails_at_construction():
    """BERT's attention.output.LayerNorm matches "output"; the reference fails at the first step (IndexError)."""
    named = [("bert.encoder.layer.0.attention.output.LayerNorm.weight", torch.ones(8, requires_grad=True))]
    with pytest.raises(ValueError, match=r"2-D.*'output'"):
        AdamMini(named, verbose=False)


def test_head_blocks_must_tile_the_tensor():
    q = ("layers.0.q_proj.weight", torch.ones(8, 8, requires_grad=True))
    assert AdamMini([q], dim=8, n_heads=2, verbose=False).partition_report()[0].blocks == 2  # 64 = 2 x 32
    with pytest.raises(ValueError, match="not a whole number of head blocks"):
        AdamMini([q], dim=12, n_heads=2, verbose=False)  # blocks of 72
    with pytest.raises(ValueError, match="not a multiple of n_heads"):
        AdamMini([q], dim=10, n_heads=3, verbose=False)


def test_unnamed_tensors_fall_back_to_one_block_per_tensor_and_other_inputs_fail(caplog):
    with caplog.at_level(logging.INFO, logger="adamlab.optim.adam_mini"):
        optimizer = AdamMini([torch.ones(3, requires_grad=True), torch.ones(2, 2, requires_grad=True)])
    assert [(e.name, e.rule, e.blocks) for e in optimizer.partition_report()] == [("#0", "tensor", 1), ("#1", "tensor", 1)]
    assert not any(r.levelno >= logging.WARNING for r in caplog.records)  # nothing had a name to match
    for bad in (["weight"], [("weight", 1.0)], [(torch.ones(1), "weight")]):
        with pytest.raises(TypeError, match="name, tensor"):
            AdamMini(bad)


def test_editing_name_sets_before_the_first_step_reroutes_after_it_raises():
    model = llama()
    optimizer = AdamMini(model.named_parameters(), **SHAPE, verbose=False)
    optimizer.mlp_names = set()  # MLP weights fall back to one block per tensor
    train_step(model, optimizer, batches(1)[0])
    assert optimizer.state[model.model.layers[0].mlp.up_proj.weight]["vmean"].shape == ()
    optimizer.mlp_names = {"mlp"}
    with pytest.raises(RuntimeError, match="before the first step"):
        train_step(model, optimizer, batches(1)[0])


def test_sparse_gradients_and_deprecated_model_sharding():
    embed = torch.nn.Embedding(10, 4, sparse=True)
    with pytest.warns(FutureWarning, match="model_sharding"):
        optimizer = AdamMini([("embed.weight", embed.weight)], model_sharding=True, verbose=False)
    embed(torch.tensor([1, 2])).sum().backward()
    with pytest.raises(RuntimeError, match="sparse"):
        optimizer.step()


# --- adamlab train ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("lora", ["none", "default"])
def test_adamlab_train_runs_full_fine_tuning_and_default_lora(tmp_path, lora):
    from adamlab.training import TrainConfig, train

    extra = {"lora": None} if lora == "none" else {}  # TrainConfig's default is LoRA on the attention projections
    config = TrainConfig(model="tiny-llama", task="ag_news", out=str(tmp_path), optimizer="adam_mini", lr=1e-3,
                         steps=3, batch_size=4, train_limit=16, eval_limit=4, max_seq_len=64, **extra)
    result = train(config, show_progress=False)
    assert result.status == "done" and result.steps_completed == 3
    groups = json.loads((tmp_path / "result.json").read_text())["optimizer"]["param_groups"]
    assert {g["partition"] for g in groups} == {"official" if lora == "none" else "lora"}
    assert {g["rule"] for g in groups} == ({"head", "row", "tensor"} if lora == "none" else {"row"})


def test_copies_keep_edited_name_sets_and_route_alike():
    """copy.deepcopy and pickle keep the configuration (torch.optim pickles only defaults, state and groups)."""
    weight, bias = torch.randn(4, 3, requires_grad=True), torch.randn(4, requires_grad=True)
    optimizer = AdamMini([("block.mlp.weight", weight), ("block.bias", bias)], verbose=False, dim=8, n_heads=2)
    optimizer.mlp_names = set()  # the documented edit: the weight falls back to one second moment per tensor
    for copied in (copy.deepcopy(optimizer), pickle.loads(pickle.dumps(optimizer))):
        assert copied.mlp_names == set() and (copied.dim, copied.n_heads) == (8, 2)
        for group in copied.param_groups:
            group["params"][0].grad = torch.ones_like(group["params"][0])
        copied.step()
        assert [group["rule"] for group in copied.param_groups] == ["tensor", "adam"]
