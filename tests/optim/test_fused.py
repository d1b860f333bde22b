"""The fused (``torch.compile``d) optimizer steps against the single-tensor reference loop.

Compiling is the cost here (seconds per graph on a small CPU), so every test uses the same parameter shapes and
the float32 runs come first: a graph is keyed by shapes, dtype and the few options that change which tensors
exist, and later tests of the same optimizer find it compiled (in this process, and in inductor's on-disk cache
across runs).
"""

from __future__ import annotations

import math
import shutil

import pytest
import torch

from adamlab.optim import _fused
from adamlab.optim._adamw import single_tensor_adamw
from adamlab.optim.came import _single_tensor_came

from .optim_info import OPTIMIZER_INFOS, OptimizerInfo

INFOS = {info.name: info for info in OPTIMIZER_INFOS if info.supports_fused}
FUSED_OPTIMIZERS = tuple(INFOS)

# A matrix (LDAdam's low-rank one, CAME's factored one), a vector, a zero-size tensor, a 3-D tensor and a
# one-element tensor, plus a parameter that never gets a gradient.
SHAPES = [(4, 3), (7,), (0,), (2, 3, 2), (1,)]
STEPS = 50


def make_params(dtype: torch.dtype, device: str = "cpu") -> list[torch.Tensor]:
    """The same values on every device (drawn on the CPU in float64, then moved and rounded)."""
    gen = torch.Generator().manual_seed(0)
    shapes = [*SHAPES, (3,)]
    return [torch.randn(s, generator=gen, dtype=torch.float64).to(device, dtype).requires_grad_() for s in shapes]


def run(optimizer: torch.optim.Optimizer, params: list[torch.Tensor], steps: int, start: int = 0) -> None:
    for step in range(start, start + steps):
        gen = torch.Generator().manual_seed(100_003 + step)
        for p in params[:-1]:
            p.grad = torch.randn(p.shape, generator=gen, dtype=torch.float64).to(p.device, p.dtype)
        optimizer.step()


def trained(
    info: OptimizerInfo, hparams: dict, dtype: torch.dtype, steps: int = STEPS, device: str = "cpu", **path
) -> list[torch.Tensor]:
    params = make_params(dtype, device)
    optimizer = info.build(params, **hparams, **path)
    run(optimizer, params, steps)
    return params + state_tensors(optimizer)


def state_tensors(optimizer: torch.optim.Optimizer) -> list[torch.Tensor]:
    return [
        value
        for state in optimizer.state_dict()["state"].values()
        for _, value in sorted(state.items())
        if isinstance(value, torch.Tensor)
    ]


def relative_error(expected: torch.Tensor, actual: torch.Tensor) -> float:
    if expected.numel() == 0:
        return 0.0
    expected, actual = expected.detach().double(), actual.detach().double()
    return ((expected - actual).abs().max() / expected.abs().max().clamp(min=1e-30)).item()


def agreement(info: OptimizerInfo, hparams: dict, steps: int) -> float:
    """What two float32 paths must agree to after ``steps``: 1e-6 relative, or the float32 reference's own distance
    from the float64 one where that is larger. Two paths that sum in different orders differ by about that
    rounding, and the order a BLAS kernel takes depends on the CPU: LDAdam's error buffer, a small difference of
    large terms, carries ~1e-5 of rounding after 50 steps, and its fused power step agreed with the reference to
    1e-6 on AVX-512 machines but to 6.7e-6 on an AVX2 one."""
    return float32_tolerance(trained(info, hparams, torch.float64, steps, foreach=False),
                             trained(info, hparams, torch.float32, steps, foreach=False))


def float32_tolerance(exact: list[torch.Tensor], rounded: list[torch.Tensor]) -> float:
    """1e-6, or the float32 run's largest relative distance from the float64 one where that is larger."""
    return max(1e-6, *(relative_error(e, r) for e, r in zip(exact, rounded, strict=True)))


def cases() -> list:
    return [
        pytest.param(INFOS[name], hparams, id=f"{name}-{i}")
        for name in FUSED_OPTIMIZERS
        for i, hparams in enumerate(INFOS[name].hparam_sets)
    ]


def assert_fused_matches(exact: list[torch.Tensor], reference: list[torch.Tensor], fused: list[torch.Tensor]) -> None:
    """The fused float32 run within 1e-6 of the reference, or within the reference's own distance from the float64
    run where that is larger (see ``agreement``)."""
    tolerance = float32_tolerance(exact, reference)
    errors = [relative_error(expected, actual) for expected, actual in zip(reference, fused, strict=True)]
    assert max(errors) <= tolerance, (errors, tolerance)


@pytest.mark.parametrize("info,hparams", cases())
def test_fused_matches_reference_float32(info: OptimizerInfo, hparams: dict) -> None:
    assert_fused_matches(trained(info, hparams, torch.float64, foreach=False),
                         trained(info, hparams, torch.float32, foreach=False),
                         trained(info, hparams, torch.float32, fused=True))


@pytest.mark.parametrize("name", FUSED_OPTIMIZERS)
def test_fused_matches_reference_float64(name: str) -> None:
    info = INFOS[name]
    hparams = info.hparam_sets[-1]  # the set that moves the most options
    for expected, actual in zip(trained(info, hparams, torch.float64, foreach=False),
                                trained(info, hparams, torch.float64, fused=True)):
        torch.testing.assert_close(actual, expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize(
    "name,hparams",
    [
        ("lion", dict(lr=1e-3, weight_decay=0.1)),  # state in the parameter's dtype
        ("ldadam", dict(lr=1e-2, rank=2, state_dtype=torch.float32)),  # bf16 parameters, float32 state
    ],
)
def test_fused_bfloat16_is_as_accurate_as_the_reference(name: str, hparams: dict) -> None:
    """Both paths round differently in bfloat16 (the reference after every op, the fused one where inductor
    rounds), so each is compared with the float64 run: fused must be no further from it than the reference."""
    info = INFOS[name]
    exact = trained(info, hparams, torch.float64, steps=10, foreach=False)
    reference = trained(info, hparams, torch.bfloat16, steps=10, foreach=False)
    fused = trained(info, hparams, torch.bfloat16, steps=10, fused=True)
    for truth, expected, actual in zip(exact, reference, fused):
        assert actual.dtype == expected.dtype
        ulp = torch.finfo(expected.dtype).eps * truth.abs().max().item() if truth.numel() else 0.0
        reference_error = (expected.double() - truth).abs().max().item() if truth.numel() else 0.0
        fused_error = (actual.double() - truth).abs().max().item() if truth.numel() else 0.0
        assert fused_error <= 2 * reference_error + 2 * ulp


@pytest.mark.parametrize("name", FUSED_OPTIMIZERS)
def test_state_dict_loads_across_paths(name: str) -> None:
    """Save under one path, load under another, continue: the same as a run under the loading path."""
    info, hparams = INFOS[name], INFOS[name].hparam_sets[0]
    paths = {"reference": dict(foreach=False), "foreach": dict(foreach=True), "fused": dict(fused=True)}
    tolerance = agreement(info, hparams, steps=10)
    for saved_under, loaded_under in [("fused", "reference"), ("reference", "fused"), ("foreach", "fused")]:
        params = make_params(torch.float32)
        first = info.build(params, **hparams, **paths[saved_under])
        run(first, params, 5)
        resumed = info.build(params, **hparams, **paths[loaded_under])
        resumed.load_state_dict(first.state_dict())
        run(resumed, params, 5, start=5)

        straight_params = make_params(torch.float32)
        straight = info.build(straight_params, **hparams, **paths[loaded_under])
        run(straight, straight_params, 10)
        # elementwise, with an absolute floor of a tenth of that at the gradients' scale (1): a state entry that
        # cancels to ~1e-3 carries the rounding of the unit-sized terms it was summed from
        for expected, actual in zip(straight_params + state_tensors(straight), params + state_tensors(resumed)):
            torch.testing.assert_close(actual, expected, rtol=tolerance, atol=tolerance / 10,
                                       msg=f"{saved_under} -> {loaded_under}")


def test_a_changing_lr_reuses_the_compiled_step() -> None:
    """The lr (and every per-step scalar) reaches the graph as a tensor: a schedule does not recompile."""
    info = INFOS["adabelief"]
    params = make_params(torch.float32)
    optimizer = info.build(params, lr=1e-3, fused=True)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1 / (step + 1))
    run(optimizer, params, 1)
    with torch._dynamo.config.patch(error_on_recompile=True):
        for step in range(1, 4):
            scheduler.step()
            run(optimizer, params, 1, start=step)


def test_fused_falls_back_to_foreach_with_one_warning_without_a_compiler(monkeypatch) -> None:
    monkeypatch.setattr(_fused.shutil, "which", lambda name: None)
    _fused.fused_unavailable_reason.cache_clear()
    _fused._warn_fallback.cache_clear()
    try:
        info, hparams = INFOS["yogi"], INFOS["yogi"].hparam_sets[0]
        params = make_params(torch.float32)
        optimizer = info.build(params, **hparams, fused=True)
        with pytest.warns(RuntimeWarning, match="using the foreach path: inductor needs a C\\+\\+ compiler") as record:
            run(optimizer, params, 3)
        assert len(record) == 1
        foreach = trained(info, hparams, torch.float32, steps=3, foreach=True)
        for expected, actual in zip(foreach, params + state_tensors(optimizer)):
            assert torch.equal(expected, actual)
    finally:
        _fused.fused_unavailable_reason.cache_clear()
        _fused._warn_fallback.cache_clear()


def test_cuda_without_triton_has_a_reason(monkeypatch) -> None:
    monkeypatch.setattr(torch.utils._triton, "has_triton", lambda: False)
    _fused.fused_unavailable_reason.cache_clear()
    try:
        assert "Triton" in _fused.fused_unavailable_reason("cuda")
        assert "cpu and cuda only" in _fused.fused_unavailable_reason("mps")
    finally:
        _fused.fused_unavailable_reason.cache_clear()


@pytest.mark.parametrize("name", FUSED_OPTIMIZERS)
def test_fused_argument_is_checked(name: str) -> None:
    info = INFOS[name]
    with pytest.raises(ValueError, match="fused=True and foreach=True"):
        info.build(make_params(torch.float32), **info.hparam_sets[0], fused=True, foreach=True)
    with pytest.raises(ValueError, match="Invalid fused"):
        info.build(make_params(torch.float32), **info.hparam_sets[0], fused="yes")


def test_compiled_training_step_with_the_fused_optimizer_has_no_graph_break() -> None:
    """A whole step (forward, backward, fused update) compiles as one graph: the fused update is traced into it.
    ``zero_grad`` stays outside, as torch marks ``Optimizer.zero_grad`` as not traceable."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.Tanh(), torch.nn.Linear(3, 1))
    eager_model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.Tanh(), torch.nn.Linear(3, 1))
    eager_model.load_state_dict(model.state_dict())
    inputs, targets = torch.randn(8, 4), torch.randn(8, 1)
    optimizer = INFOS["lion"].build(list(model.parameters()), lr=1e-2, fused=True)
    eager_optimizer = INFOS["lion"].build(list(eager_model.parameters()), lr=1e-2, foreach=False)

    def train_step(model, optimizer):
        loss = torch.nn.functional.mse_loss(model(inputs), targets)
        loss.backward()
        optimizer.step()
        return loss.detach()

    compiled = torch.compile(train_step, fullgraph=True)
    for _ in range(3):
        with torch._dynamo.config.patch(trace_autograd_ops=True):  # backward() inside the graph
            loss = compiled(model, optimizer)
        eager_loss = train_step(eager_model, eager_optimizer)
        optimizer.zero_grad()
        eager_optimizer.zero_grad()
        assert math.isclose(loss.item(), eager_loss.item(), rel_tol=1e-5)
    for p, q in zip(model.parameters(), eager_model.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6)


def test_fused_adamw_takes_adam_minis_block_means_given_or_not() -> None:
    """Adam-mini's fused update takes each block mean of g^2 inside the compiled update (a None entry), or as given
    (summed over ranks under DDP): both equal the reference's update with the means taken eagerly."""
    gen = torch.Generator().manual_seed(0)
    shapes = [((6, 4), (6, 1)), ((6, 4), ()), ((5,), (5,)), ((3, 8), (3, 1))]  # row, tensor, per element, row

    def tensors():
        params = [torch.randn(shape, generator=gen) for shape, _ in shapes]
        grads = [torch.randn(shape, generator=gen) for shape, _ in shapes]
        return params, grads, [torch.zeros(shape) for shape, _ in shapes], [torch.zeros(v) for _, v in shapes]

    def block_means(grads, vs):
        return [(g * g).sum() / g.numel() if v.dim() == 0 else g * g if v.shape == g.shape
                else (g * g).mean(dim=1, keepdim=True) for g, v in zip(grads, vs)]

    params, grads, ms, vs = tensors()
    fused = [t.clone() for t in params], grads, [t.clone() for t in ms], [t.clone() for t in vs]
    options = dict(lr=1e-2, beta1=0.9, beta2=0.99, eps=1e-8, weight_decay=0.1, maximize=False)
    for step in range(1, 4):
        single_tensor_adamw(params, grads, ms, vs, [step] * 4, grad_squares=block_means(grads, vs), **options)
        given = block_means(fused[1], fused[3])
        _fused.fused_adamw(*fused, [step] * 4, grad_squares=[given[0], None, None, given[3]], **options)
    for expected, actual in zip(params + ms + vs, fused[0] + fused[2] + fused[3]):
        torch.testing.assert_close(actual, expected, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("dtype, tolerance", [(torch.float32, 1e-6), (torch.float64, 1e-12)])
def test_adam_minis_cpu_kernel_matches_the_reference(dtype: torch.dtype, tolerance: float) -> None:
    """The hand-written CPU kernel (every block mean taken inside it) against the reference after 50 steps: blocks
    per row, a whole-tensor block, a block too large for one cache (reduced over all threads, then updated) and a
    parameter with no blocks."""
    if shutil.which("ninja") is None:
        pytest.skip("torch builds C++ extensions with ninja, which is not on PATH")
    assert _fused.cpu_kernel("adam_mini_step") is not None
    gen = torch.Generator().manual_seed(0)
    shapes = [((6, 4), (6, 1)), ((6, 4), ()), ((2, 70_000), (2, 1)), ((3, 8), (3, 1)), ((0, 4), (0, 1))]
    params = [torch.randn(shape, generator=gen, dtype=torch.float64).to(dtype) for shape, _ in shapes]
    kernel = [p.clone() for p in params], [torch.zeros(s, dtype=dtype) for s, _ in shapes]
    ms, vs = [torch.zeros(s, dtype=dtype) for s, _ in shapes], [torch.zeros(v, dtype=dtype) for _, v in shapes]
    kernel_vs = [v.clone() for v in vs]
    options = dict(lr=1e-2, beta1=0.9, beta2=0.99, eps=1e-8, weight_decay=0.1, maximize=True)
    for step in range(1, STEPS + 1):
        grads = [torch.randn(s, generator=gen, dtype=torch.float64).to(dtype) for s, _ in shapes]
        means = [(g * g).sum() / g.numel() if v.dim() == 0 else (g * g).mean(dim=1, keepdim=True)
                 for g, v in zip(grads, vs)]
        steps = [step] * len(shapes)
        single_tensor_adamw(params, grads, ms, vs, steps, grad_squares=means, **options)
        _fused.fused_adamw(kernel[0], grads, kernel[1], kernel_vs, steps, grad_squares=[None] * len(shapes), **options)
    for expected, actual in zip(params + ms + vs, kernel[0] + kernel[1] + kernel_vs):
        assert relative_error(expected, actual) <= tolerance


@pytest.mark.parametrize("dtype, tolerance", [(torch.float32, 1e-6), (torch.float64, 1e-12)])
def test_cames_cpu_kernel_matches_the_reference(dtype: torch.dtype, tolerance: float) -> None:
    """The hand-written CPU kernel against the single-tensor reference after 50 steps, with maximize and weight
    decay: small matrices, a single row, columns long enough that threads add up their own partial column sums
    (2,048 rows), rows longer than one chunk of the row sums (3 x 5,000), and a batched (3-D) matrix beside them,
    which the compiled graphs take."""
    if shutil.which("ninja") is None:
        pytest.skip("torch builds C++ extensions with ninja, which is not on PATH")
    assert _fused.cpu_kernel("came_step") is not None
    gen = torch.Generator().manual_seed(0)
    shapes = [(6, 4), (1, 5), (2048, 8), (3, 5000), (2, 3, 2)]

    def state() -> tuple[list[torch.Tensor], ...]:
        params = [torch.randn(s, generator=torch.Generator().manual_seed(1), dtype=torch.float64).to(dtype)
                  for s in shapes]
        zeros = [[torch.zeros(size, dtype=dtype) for size in sizes] for sizes in
                 (shapes, [s[:-1] for s in shapes], [s[:-2] + s[-1:] for s in shapes])]
        full, rows, cols = zeros
        return params, full, rows, cols, [r.clone() for r in rows], [c.clone() for c in cols]

    reference, fused = state(), state()
    unfactored: list[list[torch.Tensor]] = [[], [], [], []]
    options = dict(lr=1e-2, beta1=0.9, beta2=0.999, beta3=0.9999, eps1=1e-30, eps2=1e-16, clip_threshold=1.0,
                   weight_decay=0.1, maximize=True)
    for _ in range(STEPS):
        grads = [torch.randn(s, generator=gen, dtype=torch.float64).to(dtype) for s in shapes]
        _single_tensor_came([reference[0], grads, *reference[1:]], unfactored, **options)
        _fused.fused_came([fused[0], grads, *fused[1:]], unfactored, **options)
    for expected, actual in zip(sum(reference, []), sum(fused, [])):
        assert relative_error(expected, actual) <= tolerance


def test_cames_cpu_kernel_sums_a_large_matrix_as_float64_does() -> None:
    """On a 512 x 1376 matrix (an MLP weight of the benchmark set) the float32 reference's clip norm, one float32
    reduction over 700,000 elements, is 7e-6 off float64 after one step, and m, R and C with it; the kernel adds
    its chunks in double and stays within 1e-6 of the float64 reference on every tensor."""
    if shutil.which("ninja") is None:
        pytest.skip("torch builds C++ extensions with ninja, which is not on PATH")
    gen = torch.Generator().manual_seed(0)
    shape = (512, 1376)
    exact = [torch.randn(shape, generator=gen, dtype=torch.float64)], [torch.zeros(shape, dtype=torch.float64)], *(
        [torch.zeros(n, dtype=torch.float64)] for n in (512, 1376, 512, 1376))
    fused = [[t.float() for t in column] for column in exact]
    options = dict(lr=1e-2, beta1=0.9, beta2=0.999, beta3=0.9999, eps1=1e-30, eps2=1e-16, clip_threshold=1.0,
                   weight_decay=0.1, maximize=False)
    for _ in range(3):
        grad = torch.randn(shape, generator=gen, dtype=torch.float64)
        _single_tensor_came([exact[0], [grad], *exact[1:]], [[], [], [], []], **options)
        _fused.fused_came([fused[0], [grad.float()], *fused[1:]], [[], [], [], []], **options)
    for expected, actual in zip(sum(exact, []), sum(fused, [])):
        assert relative_error(expected, actual) <= 1e-6


@pytest.mark.parametrize("name, label", [("adam_mini", "Adam-mini"), ("came", "CAME")])
def test_a_cpu_kernel_that_cannot_build_leaves_the_compiled_graphs_with_one_warning(monkeypatch, name, label) -> None:
    which = shutil.which
    monkeypatch.setattr(_fused.shutil, "which", lambda name: None if name == "ninja" else which(name))
    _fused.cpu_kernel.cache_clear()
    try:
        info = INFOS[name]
        params = make_params(torch.float32)
        optimizer = info.build(params, **info.hparam_sets[0], fused=True)
        with pytest.warns(RuntimeWarning, match=f"{label}'s CPU kernel unavailable, using the compiled graphs: "
                                                "torch builds C\\+\\+ extensions with ninja") as record:
            run(optimizer, params, 3)
        # once per process; a first compile of the graphs adds torch's own DeprecationWarnings to the record
        assert len([w for w in record if issubclass(w.category, RuntimeWarning)]) == 1
        reference = trained(info, info.hparam_sets[0], torch.float32, steps=3, foreach=False)
        for expected, actual in zip(reference, params + state_tensors(optimizer)):
            assert relative_error(expected, actual) <= 1e-6
    finally:
        _fused.cpu_kernel.cache_clear()
