"""The fused steps on a GPU (inductor's Triton kernels) against the single-tensor reference loop on the same GPU.

Skipped without CUDA (CI has none); run on a GPU machine with ``pytest tests/optim/test_fused_cuda.py``. The same
cases and tolerances as the CPU tests in ``test_fused.py``: every option set of every fused optimizer in float32,
the widest set in float64, bfloat16 no less accurate than the reference, and state dicts across paths.
"""

from __future__ import annotations

import pytest
import torch

from .test_fused import (
    FUSED_OPTIMIZERS,
    INFOS,
    assert_fused_matches,
    cases,
    make_params,
    run,
    state_tensors,
    trained,
)

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
DEVICE = "cuda"
# Measured on an H200 (torch 2.11, Triton 3.6; BENCHMARKS.md): beyond 1e-6 after 50 steps, size not yet captured,
# under the earlier fixed 1e-6 bar (before the float32 reference's own rounding entered it, as it does for LDAdam
# on AVX2 CPUs). Likely Triton's fused multiply-adds before Lion's sign, and cuBLAS's layout-dependent summation
# order in LDAdam's power step. Not strict: a pass under the current bar shows as XPASS.
DIFFERS_ON_CUDA = {"lion-1", "ldadam-0", "ldadam-1"}


def cuda_cases() -> list:
    known = pytest.mark.xfail(strict=False, reason="differs from the reference beyond 1e-6 on CUDA (issue #15)")
    return [pytest.param(*case.values, id=case.id, marks=[known] if case.id in DIFFERS_ON_CUDA else [])
            for case in cases()]


@pytest.mark.parametrize("info,hparams", cuda_cases())
def test_fused_matches_reference_float32_on_cuda(info, hparams: dict) -> None:
    exact = trained(info, hparams, torch.float64, device=DEVICE, foreach=False)
    reference = trained(info, hparams, torch.float32, device=DEVICE, foreach=False)
    fused = trained(info, hparams, torch.float32, device=DEVICE, fused=True)
    assert all(t.device.type == "cuda" for t in fused)
    assert_fused_matches(exact, reference, fused)


@pytest.mark.parametrize("name", FUSED_OPTIMIZERS)
def test_fused_matches_reference_float64_on_cuda(name: str) -> None:
    info = INFOS[name]
    hparams = info.hparam_sets[-1]
    for expected, actual in zip(trained(info, hparams, torch.float64, device=DEVICE, foreach=False),
                                trained(info, hparams, torch.float64, device=DEVICE, fused=True), strict=True):
        torch.testing.assert_close(actual, expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize(
    "name,hparams",
    [("lion", dict(lr=1e-3, weight_decay=0.1)), ("ldadam", dict(lr=1e-2, rank=2, state_dtype=torch.float32))],
)
def test_fused_bfloat16_on_cuda_is_as_accurate_as_the_reference(name: str, hparams: dict) -> None:
    info = INFOS[name]
    exact = trained(info, hparams, torch.float64, steps=10, device=DEVICE, foreach=False)
    reference = trained(info, hparams, torch.bfloat16, steps=10, device=DEVICE, foreach=False)
    fused = trained(info, hparams, torch.bfloat16, steps=10, device=DEVICE, fused=True)
    for truth, expected, actual in zip(exact, reference, fused, strict=True):
        assert actual.dtype == expected.dtype
        if truth.numel() == 0:
            continue
        ulp = torch.finfo(expected.dtype).eps * truth.abs().max().item()
        reference_error = (expected.double() - truth).abs().max().item()
        assert (actual.double() - truth).abs().max().item() <= 2 * reference_error + 2 * ulp


@pytest.mark.parametrize("name", FUSED_OPTIMIZERS)
def test_state_dict_loads_across_paths_on_cuda(name: str) -> None:
    """Saved under the fused path on the GPU, loaded under the reference path on the CPU (a checkpoint moved to a
    machine without one), and back: each continues as a straight run under the loading path."""
    info, hparams = INFOS[name], INFOS[name].hparam_sets[0]
    for (saved_under, saved_on), (loaded_under, loaded_on) in [
        (("fused", DEVICE), ("reference", "cpu")),
        (("reference", "cpu"), ("fused", DEVICE)),
    ]:
        path_flags = {"reference": dict(foreach=False), "fused": dict(fused=True)}
        params = make_params(torch.float32, saved_on)
        first = info.build(params, **hparams, **path_flags[saved_under])
        run(first, params, 5)
        moved = [p.detach().to(loaded_on).requires_grad_() for p in params]
        resumed = info.build(moved, **hparams, **path_flags[loaded_under])
        resumed.load_state_dict(first.state_dict())  # load_state_dict casts state to each parameter's device
        run(resumed, moved, 5, start=5)

        straight_params = make_params(torch.float32, loaded_on)
        straight = info.build(straight_params, **hparams, **path_flags[loaded_under])
        run(straight, straight_params, 10)
        for expected, actual in zip(straight_params + state_tensors(straight), moved + state_tensors(resumed),
                                    strict=True):
            torch.testing.assert_close(actual, expected, rtol=1e-5, atol=1e-6,
                                       msg=f"{saved_under} on {saved_on} -> {loaded_under} on {loaded_on}")
