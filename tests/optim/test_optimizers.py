"""Shared tests every adamlab optimizer passes, driven by the capability table in ``optim_info.py``."""

from __future__ import annotations

import copy
import math
import pickle
from collections import OrderedDict

import pytest
import torch
from torch.optim.optimizer import register_optimizer_step_post_hook, register_optimizer_step_pre_hook

from adamlab.optim import create_optimizer, registry

from .optim_info import OPTIMIZER_INFOS, OptimizerInfo

# Shapes cover a matrix, a vector, a zero-size tensor, a 3-D tensor and a scalar-like tensor.
SHAPES = [(4, 3), (7,), (0,), (2, 3, 2), (1,)]
STEPS = 50


def make_params(dtype=torch.float64, seed=0):
    """Params with grads, plus a last one that never gets a gradient."""
    gen = torch.Generator().manual_seed(seed)
    params = [torch.randn(shape, generator=gen, dtype=torch.float64).to(dtype).requires_grad_() for shape in SHAPES]
    frozen = torch.randn(3, generator=gen, dtype=torch.float64).to(dtype).requires_grad_()
    return params + [frozen]


def set_grads(params, step, seed=1):
    """Deterministic gradients for step ``step``: identical for every optimizer compared."""
    gen = torch.Generator().manual_seed(seed * 100_003 + step)
    for p in params[:-1]:
        p.grad = torch.randn(p.shape, generator=gen, dtype=torch.float64).to(p.dtype)


def run(optimizer, params, steps, start=0):
    for step in range(start, start + steps):
        set_grads(params, step)
        optimizer.step()


def require(info: OptimizerInfo, *capabilities: str):
    """Skip unless ``info`` has every named capability flag."""
    missing = [name for name in capabilities if not getattr(info, name)]
    if missing:
        pytest.skip(f"{info.name}: not {', '.join(missing)}")


def clone(params):
    return [p.detach().clone().requires_grad_() for p in params]


def cases(attr="hparam_sets"):
    return [
        pytest.param(info, hparams, id=f"{info.name}-{i}")
        for info in OPTIMIZER_INFOS
        for i, hparams in enumerate(getattr(info, attr))
    ]


def reference_cases():
    return [
        pytest.param(info, ref, hparams, id=f"{info.name}-{ref.package}-{i}")
        for info in OPTIMIZER_INFOS
        for ref in info.references
        for i, hparams in enumerate(ref.hparam_sets or info.hparam_sets)
    ]


def state_tensors(optimizer):
    """Every tensor in the optimizer state (wrapped optimizers' included), in a stable order, for exact
    comparisons."""
    return _state_dict_tensors(optimizer.state_dict())


def params_with_state(state_dict):
    """Indices of the params with state, in the optimizer's state dict or a wrapped optimizer's."""
    return set(state_dict["state"]).union(*(params_with_state(inner) for inner in _nested(state_dict)))


def _nested(state_dict):
    return state_dict.get("phases", []) + ([state_dict["inner_optimizer"]] if "inner_optimizer" in state_dict else [])


def _state_dict_tensors(state_dict):
    out = []
    for state in state_dict["state"].values():
        for key in sorted(state):
            if isinstance(state[key], torch.Tensor):
                out.append(state[key])
    return out + [tensor for inner in _nested(state_dict) for tensor in _state_dict_tensors(inner)]


@pytest.mark.parametrize("info,hparams", cases())
def test_foreach_matches_single_tensor(info: OptimizerInfo, hparams):
    require(info, "supports_foreach", "supports_float64")
    params_single, params_foreach = make_params(), make_params()
    single = info.build(params_single, foreach=False, **hparams)
    multi = info.build(params_foreach, foreach=True, **hparams)
    run(single, params_single, STEPS)
    run(multi, params_foreach, STEPS)
    for a, b in zip(params_single, params_foreach):
        torch.testing.assert_close(a, b, atol=1e-12, rtol=0)
    for a, b in zip(state_tensors(single), state_tensors(multi)):
        torch.testing.assert_close(a, b, atol=1e-12, rtol=0)
    assert params_single[-1].grad is None and params_with_state(single.state_dict()) == set(range(len(SHAPES)))


@pytest.mark.parametrize("info,ref,hparams", reference_cases())
@pytest.mark.parametrize("foreach", [False, True])
def test_matches_reference(info: OptimizerInfo, ref, hparams, foreach):
    require(info, "supports_float64", *(["supports_foreach"] if foreach else []))
    ours_params, ref_params = make_params(), make_params()
    ours = info.build(ours_params, foreach=foreach, **hparams)
    theirs = ref.build(ref_params, **hparams)
    for step in range(STEPS):
        set_grads(ours_params, step)
        set_grads(ref_params, step)
        ours.step()
        theirs.step()
        for a, b in zip(ours_params, ref_params):
            torch.testing.assert_close(a, b, atol=1e-10, rtol=0, msg=lambda m, step=step: f"step {step + 1}: {m}")


@pytest.mark.parametrize("info,hparams", cases())
def test_state_dict_resume_is_bit_identical(info: OptimizerInfo, hparams):
    straight_params = make_params()
    straight = info.build(straight_params, **hparams)
    run(straight, straight_params, 20)

    first_params = make_params()
    first = info.build(first_params, **hparams)
    run(first, first_params, 10)
    saved = copy.deepcopy(first.state_dict())
    resumed_params = clone(first_params)
    resumed = info.build(resumed_params, **hparams)
    resumed.load_state_dict(saved)
    run(resumed, resumed_params, 10, start=10)

    for a, b in zip(straight_params, resumed_params):
        assert torch.equal(a, b)
    for a, b in zip(state_tensors(straight), state_tensors(resumed)):
        assert torch.equal(a, b)


@pytest.mark.parametrize("info", OPTIMIZER_INFOS, ids=repr)
def test_converges_on_rosenbrock(info: OptimizerInfo):
    spec = info.rosenbrock
    xy = torch.tensor([-1.5, 2.0], dtype=torch.float64, requires_grad=True)
    optimizer = info.build([xy], **spec["hparams"])

    def closure():
        optimizer.zero_grad()
        loss = (1 - xy[0]) ** 2 + 100 * (xy[1] - xy[0] ** 2) ** 2
        loss.backward()
        return loss

    for _ in range(spec["steps"]):
        optimizer.step(closure)
    distance = torch.linalg.vector_norm(xy.detach() - torch.ones(2, dtype=torch.float64)).item()
    assert distance < spec["tol"], f"ended at {xy.tolist()}, {distance:.3g} from the minimum (1, 1)"


@pytest.mark.parametrize("info", OPTIMIZER_INFOS, ids=repr)
def test_invalid_hyperparameters_raise(info: OptimizerInfo):
    assert info.invalid, "every optimizer lists the inputs it rejects"
    for hparams, match in info.invalid:
        with pytest.raises(ValueError, match=match):
            info.build(make_params(), **hparams)


@pytest.mark.parametrize("info,hparams", cases())
def test_maximize_equals_minimizing_the_negation(info: OptimizerInfo, hparams):
    require(info, "supports_maximize")
    up_params, down_params = make_params(), make_params()
    up = info.build(up_params, maximize=True, **hparams)
    down = info.build(down_params, **hparams)
    for step in range(10):
        set_grads(up_params, step)
        set_grads(down_params, step)
        for p in down_params[:-1]:
            p.grad.neg_()
        up.step()
        down.step()
    for a, b in zip(up_params, down_params):
        torch.testing.assert_close(a, b, atol=1e-12, rtol=0)


@pytest.mark.parametrize("info,hparams", cases())
@pytest.mark.parametrize("foreach", [False, True])
def test_bf16_params_step_and_track_fp32(info: OptimizerInfo, hparams, foreach):
    """bf16 params step, keep finite values, and follow the fp64 trajectory to bf16 precision."""
    require(info, "supports_bf16", *(["supports_foreach"] if foreach else []))
    low_params, ref_params = make_params(torch.bfloat16), make_params()
    low = info.build(low_params, foreach=foreach, **hparams)
    ref = info.build(ref_params, foreach=foreach, **hparams)
    run(low, low_params, 5)
    run(ref, ref_params, 5)
    for a, b in zip(low_params, ref_params):
        assert a.dtype == torch.bfloat16 and torch.isfinite(a).all()
        torch.testing.assert_close(a.double(), b, atol=0.1, rtol=0.05)


@pytest.mark.parametrize("info,hparams", cases())
def test_param_groups_use_their_own_lr_and_closure_returns_loss(info: OptimizerInfo, hparams):
    a, b = make_params()[:2]
    a_alone = a.detach().clone().requires_grad_()
    hparams = {k: v for k, v in hparams.items() if k != "lr"}
    together = info.build([{"params": [a]}, {"params": [b], "lr": 0.0}], lr=1e-2, **hparams)
    alone = info.build([a_alone], lr=1e-2, **hparams)
    b_before = b.detach().clone()
    for step in range(5):
        for p in (a, a_alone):
            p.grad = torch.full_like(p, 0.5 + step)
        b.grad = torch.ones_like(b)
        loss = together.step(lambda: torch.tensor(math.pi))
        alone.step()
    assert loss.item() == pytest.approx(math.pi)
    torch.testing.assert_close(a, a_alone, atol=0, rtol=0)
    if not any(v != 0 for k, v in hparams.items() if "decay" in k):
        assert torch.equal(b, b_before), "a group with lr 0 must not move"


def test_every_adamlab_optimizer_is_in_the_table():
    """Every optimizer whose update adamlab implements (its class defines ``step``) is held to the shared tests;
    adam_dds only sets torch's Adam's lr."""
    listed = {info.name for info in OPTIMIZER_INFOS}
    own = {name for name, spec in registry.REGISTRY.items()
           if spec.source == "adamlab" and "step" in vars(spec.resolve())}
    assert own <= listed, f"missing from optim_info.py: {sorted(own - listed)}"


@pytest.mark.parametrize("info,hparams", cases())
def test_fused_matches_single_tensor(info: OptimizerInfo, hparams):
    """Where fused= exists, it follows the single-tensor path (float32: compiled kernels may reorder arithmetic);
    where it does not, asking for it fails at construction."""
    if not info.supports_fused:
        with pytest.raises((TypeError, ValueError)):
            info.build(make_params(), fused=True, **hparams)
        return
    params_single, params_fused = make_params(torch.float32), make_params(torch.float32)
    single = info.build(params_single, foreach=False, **hparams)
    fused = info.build(params_fused, fused=True, **hparams)
    run(single, params_single, 10)
    run(fused, params_fused, 10)
    for a, b in zip(params_single, params_fused):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("info", OPTIMIZER_INFOS, ids=repr)
@pytest.mark.parametrize("foreach", [False, True])
def test_sparse_gradients(info: OptimizerInfo, foreach):
    if foreach:
        require(info, "supports_foreach")
    dense, sparse = torch.zeros(3, requires_grad=True), torch.zeros(3, requires_grad=True)
    optimizer = info.build([dense, sparse], foreach=foreach, **info.hparam_sets[0])
    dense.grad = torch.ones(3)
    sparse.grad = torch.ones(3).to_sparse()
    if info.supports_sparse:
        optimizer.step()
        assert not torch.equal(sparse, torch.zeros(3))
    else:
        with pytest.raises(RuntimeError, match="sparse"):
            optimizer.step()


@pytest.mark.parametrize("info", OPTIMIZER_INFOS, ids=repr)
def test_closure_is_evaluated_once_and_its_loss_returned(info: OptimizerInfo):
    params = make_params()
    optimizer = info.build(params, **info.hparam_sets[0])
    set_grads(params, 0)
    if info.step_requires_closure:
        with pytest.raises((RuntimeError, TypeError)):
            optimizer.step()
    else:
        assert optimizer.step() is None
    calls = []

    def closure():
        calls.append(len(calls))
        set_grads(params, 1)
        return torch.tensor(2.5)

    assert optimizer.step(closure).item() == 2.5
    assert calls == [0]


@pytest.mark.parametrize("info", OPTIMIZER_INFOS, ids=repr)
def test_create_optimizer_builds_from_a_model(info: OptimizerInfo):
    """The registry builds each optimizer for a model: through the class's from_model when the table says so,
    through adamlab's decay/no-decay param groups otherwise; the result trains."""
    torch.manual_seed(0)
    # "mlp" is a target of LDAdam's low-rank groups and of Adam-mini's per-row rule
    layers = OrderedDict(mlp=torch.nn.Linear(8, 8), act=torch.nn.ReLU(), head=torch.nn.Linear(8, 2))
    model = torch.nn.Sequential(layers).double()
    spec = registry.REGISTRY.get(info.name)  # None for the wrappers (lookahead, switch)
    assert (spec is not None and spec.from_model is not None) == info.builds_from_model
    optimizer = create_optimizer(info.name, model, lr=1e-2, **info.registry_hparams)
    x, y = torch.randn(32, 8, dtype=torch.float64), torch.randint(0, 2, (32,))
    losses = []
    for _ in range(20):
        optimizer.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(x), y)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]


# --- complex parameters (torch's TestOptimRenewed.test_complex) ----------------------------------------------------


def make_complex_params(seed=0):
    """Complex params with grads (the shared shapes, zero-size included) and their real-pair twins."""
    gen = torch.Generator().manual_seed(seed)
    complex_params = [torch.randn(shape, generator=gen, dtype=torch.complex128).requires_grad_() for shape in SHAPES]
    real_params = [torch.view_as_real(p.detach()).clone().requires_grad_() for p in complex_params]
    return complex_params, real_params


@pytest.mark.parametrize("info,hparams", cases())
@pytest.mark.parametrize("foreach", [False, True])
def test_complex_params_step_as_their_real_pairs(info: OptimizerInfo, hparams, foreach):
    """A complex parameter steps exactly as the same numbers viewed as real pairs, as in torch.optim."""
    require(info, "supports_complex", *(["supports_foreach"] if foreach else []))
    complex_params, real_params = make_complex_params()
    on_complex = info.build(complex_params, foreach=foreach, **hparams)
    on_real = info.build(real_params, foreach=foreach, **hparams)
    gen = torch.Generator().manual_seed(7)
    for _ in range(10):
        for c, r in zip(complex_params, real_params):
            c.grad = torch.randn(c.shape, generator=gen, dtype=torch.complex128)
            r.grad = torch.view_as_real(c.grad).clone()
        on_complex.step()
        on_real.step()
    for c, r in zip(complex_params, real_params):
        assert torch.equal(torch.view_as_real(c.detach()), r.detach())
    complex_state = [torch.view_as_real(t) if t.is_complex() else t for t in state_tensors(on_complex)]
    for a, b in zip(complex_state, state_tensors(on_real), strict=True):
        assert torch.equal(a, b)


@pytest.mark.parametrize("info", OPTIMIZER_INFOS, ids=repr)
def test_complex_params_are_rejected_at_construction(info: OptimizerInfo):
    if info.supports_complex:
        pytest.skip(f"{info.name} steps complex params")
    complex_params, _ = make_complex_params()
    with pytest.raises(ValueError, match="does not support complex parameters"):
        info.build(complex_params, **info.hparam_sets[0])


# --- generic checks ported from torch's TestOptimRenewed and kozistr/pytorch_optimizer's suite --------------------


def public_attributes(optimizer):
    return sorted(name for name in vars(optimizer) if not name.startswith("_"))


@pytest.mark.parametrize("info,hparams", cases())
@pytest.mark.parametrize("how", ["deepcopy", "pickle"])
def test_copies_keep_configuration_and_step_alike(info: OptimizerInfo, hparams, how):
    """torch's test_deepcopy_copies_all_public_attrs, and the copy takes the same steps as the original."""
    params = make_params()
    optimizer = info.build(params, **hparams)
    run(optimizer, params, 3)
    if how == "deepcopy":
        copy_params, copied = copy.deepcopy((params, optimizer))
    else:
        copy_params, copied = pickle.loads(pickle.dumps((params, optimizer)))
    assert public_attributes(copied) == public_attributes(optimizer)
    run(optimizer, params, 3, start=3)
    run(copied, copy_params, 3, start=3)
    for a, b in zip(params, copy_params):
        assert torch.equal(a, b)


@pytest.mark.parametrize("info", OPTIMIZER_INFOS, ids=repr)
def test_step_hooks_fire_once_per_step(info: OptimizerInfo):
    """torch's test_step_all_hooks: global and per-optimizer pre/post hooks, once each per step()."""
    params = make_params()
    optimizer = info.build(params, **info.hparam_sets[0])
    calls = []
    handles = [
        register_optimizer_step_pre_hook(lambda opt, args, kwargs: calls.append("global pre")),
        register_optimizer_step_post_hook(lambda opt, args, kwargs: calls.append("global post")),
        optimizer.register_step_pre_hook(lambda opt, args, kwargs: calls.append("pre")),
        optimizer.register_step_post_hook(lambda opt, args, kwargs: calls.append("post")),
    ]
    try:
        run(optimizer, params, 2)
    finally:
        for handle in handles:
            handle.remove()
    assert calls == ["global pre", "pre", "post", "global post"] * 2


@pytest.mark.parametrize("info", OPTIMIZER_INFOS, ids=repr)
def test_state_dict_loads_with_weights_only(info: OptimizerInfo, tmp_path):
    """A saved state_dict loads with torch.load(weights_only=True) (nothing unpickled as code) and resumes exactly."""
    straight_params = make_params()
    straight = info.build(straight_params, **info.hparam_sets[-1])
    run(straight, straight_params, 6)

    first_params = make_params()
    first = info.build(first_params, **info.hparam_sets[-1])
    run(first, first_params, 3)
    torch.save(first.state_dict(), tmp_path / "optimizer.pt")
    resumed_params = clone(first_params)
    resumed = info.build(resumed_params, **info.hparam_sets[-1])
    resumed.load_state_dict(torch.load(tmp_path / "optimizer.pt", weights_only=True))
    run(resumed, resumed_params, 3, start=3)
    for a, b in zip(straight_params, resumed_params):
        assert torch.equal(a, b)


@pytest.mark.parametrize("info", OPTIMIZER_INFOS, ids=repr)
def test_step_without_gradients_changes_nothing(info: OptimizerInfo):
    """torch's test_step_is_noop_when_params_have_no_grad: no state, params untouched."""
    params = make_params()
    before = clone(params)
    optimizer = info.build(params, **info.hparam_sets[0])
    optimizer.step()
    assert not optimizer.state
    for a, b in zip(params, before):
        assert torch.equal(a, b)


@pytest.mark.parametrize("info", OPTIMIZER_INFOS, ids=repr)
def test_add_param_group_then_step(info: OptimizerInfo):
    """A group added after some steps takes its own lr and leaves the first group's trajectory alone."""
    params, alone_params = make_params(), make_params()
    hparams = info.hparam_sets[0]
    optimizer, alone = info.build(params, **hparams), info.build(alone_params, **hparams)
    run(optimizer, params, 3)
    run(alone, alone_params, 3)
    late = torch.zeros(5, dtype=torch.float64, requires_grad=True)
    optimizer.add_param_group({"params": [late], "lr": 1e-2})
    for step in range(3, 6):
        set_grads(params, step)
        set_grads(alone_params, step)
        late.grad = torch.ones(5, dtype=torch.float64)
        optimizer.step()
        alone.step()
    assert optimizer.param_groups[-1]["lr"] == 1e-2
    assert (late < 0).all(), "the added parameter moves against its positive gradient"
    for a, b in zip(params, alone_params):
        assert torch.equal(a, b)


@pytest.mark.parametrize("info", OPTIMIZER_INFOS, ids=repr)
def test_can_be_printed(info: OptimizerInfo):
    optimizer = info.build(make_params(), **info.hparam_sets[0])
    assert type(optimizer).__name__ in repr(optimizer)


@pytest.mark.parametrize("info,hparams", cases())
def test_mixed_dtypes_in_one_group_match_single_tensor(info: OptimizerInfo, hparams):
    """torch's test_mixed_device_dtype on CPU: float32 and float64 params in one group, foreach split by dtype."""
    require(info, "supports_foreach")

    def mixed():
        params = make_params()
        return [p.detach().float().requires_grad_() if i % 2 else p for i, p in enumerate(params)]

    params_single, params_foreach = mixed(), mixed()
    single = info.build(params_single, foreach=False, **hparams)
    multi = info.build(params_foreach, foreach=True, **hparams)
    run(single, params_single, 10)
    run(multi, params_foreach, 10)
    for a, b in zip(params_single, params_foreach):
        assert a.dtype == b.dtype
        torch.testing.assert_close(a, b, atol=1e-12 if a.dtype == torch.float64 else 1e-6, rtol=0)
