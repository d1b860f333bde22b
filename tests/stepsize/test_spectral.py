"""Spectral-norm estimates against known spectra and exactly formed Hessians."""

import pytest
import torch

from adamlab.stepsize import hessian_spectral_norm
from adamlab.stepsize.hvp import trainable_parameters
from adamlab.stepsize.spectral import spectral_norm

from .conftest import tiny_lora_lm
from .test_hvp import flat, mlp_loss_of_flat


def quadratic(eigenvalues, seed=0):
    """L(w) = 1/2 w^T A w + b^T w with A = Q diag(eigenvalues) Q^T, in fp64."""
    generator = torch.Generator().manual_seed(seed)
    n = len(eigenvalues)
    q, _ = torch.linalg.qr(torch.randn(n, n, generator=generator, dtype=torch.float64))
    a = q @ torch.diag(torch.tensor(eigenvalues, dtype=torch.float64)) @ q.T
    b = torch.randn(n, generator=generator, dtype=torch.float64)
    w = torch.zeros(n, dtype=torch.float64, requires_grad=True)
    return (lambda: 0.5 * w @ a @ w + b @ w), w, a


SPECTRA = {
    "positive dominant": [6.0, 3.0, 1.0, 0.5, -2.0, 0.0, 0.1, 2.5],
    "negative dominant": [-6.0, 3.0, 1.0, 0.5, -2.0, 0.0, 0.1, 2.5],
}


@pytest.mark.parametrize("method", ["power", "lanczos"])
@pytest.mark.parametrize("case", SPECTRA)
def test_quadratic_gives_its_largest_absolute_eigenvalue_with_its_sign(method, case):
    loss, w, _ = quadratic(SPECTRA[case])
    result = hessian_spectral_norm(loss, [w], method=method, rtol=1e-9, max_iter=200)
    assert result.converged
    assert result.spectral_norm == pytest.approx(6.0, rel=1e-6)
    assert result.rayleigh_quotient == pytest.approx(SPECTRA[case][0], rel=1e-6)
    assert result.residual < 1e-3 and len(result.trace) == result.iterations


@pytest.mark.parametrize("iterations", [1, 2, 3, 5, 20])
def test_power_h2_never_exceeds_the_norm(iterations):
    loss, w, a = quadratic([5.0, -4.9, 1.0, 0.2, 3.0])
    result = hessian_spectral_norm(loss, [w], method="power_h2", max_iter=iterations, rtol=0.0, seed=iterations)
    assert result.spectral_norm <= torch.linalg.matrix_norm(a, 2).item() + 1e-12
    assert result.hvp_count == 2 * result.iterations


def test_power_estimate_is_a_lower_bound_that_rises_to_the_norm():
    loss, w, _ = quadratic([4.0, 3.9, 1.0, -1.0])
    result = hessian_spectral_norm(loss, [w], method="power", rtol=1e-12, max_iter=500)
    assert all(s <= 4.0 + 1e-12 for s in result.trace)
    assert result.trace[-1] == pytest.approx(4.0, rel=1e-8)


def test_power_and_lanczos_agree_on_an_mlp(mlp_regression):
    params = list(mlp_regression.model.parameters())
    power = hessian_spectral_norm(mlp_regression.full_loss, params, method="power", rtol=1e-6, max_iter=1000)
    lanczos = hessian_spectral_norm(mlp_regression.full_loss, params, method="lanczos", rtol=1e-6, max_iter=200)
    assert power.spectral_norm == pytest.approx(lanczos.spectral_norm, rel=1e-3)
    assert lanczos.iterations < power.iterations


@pytest.mark.parametrize("method", ["power", "lanczos"])
def test_within_one_percent_of_the_exact_hessian_of_an_mlp(mlp_regression, method):
    params = list(mlp_regression.model.parameters())
    assert sum(p.numel() for p in params) == 1539
    hessian = torch.autograd.functional.hessian(mlp_loss_of_flat(mlp_regression), flat(params).detach(),
                                              vectorize=True)
    exact = torch.linalg.eigvalsh(hessian).abs().max().item()
    result = hessian_spectral_norm(mlp_regression.full_loss, params, method=method, rtol=1e-6, max_iter=1000)
    assert result.spectral_norm == pytest.approx(exact, rel=1e-2)


def test_within_one_percent_of_the_exact_hessian_of_a_lora_language_model():
    lm = tiny_lora_lm(r=2, n_examples=2, max_seq_len=32, dropout=0.0)  # 896 adapter parameters
    model = lm.model.eval()
    named = trainable_parameters(model)
    params = [p for _, p in named]
    loss_fn = lm.loss_fn()

    def loss_of_flat(flat_params):
        tensors, offset = {}, 0
        for name, p in named:
            tensors[name] = flat_params[offset : offset + p.numel()].view_as(p)
            offset += p.numel()

        def swapped(**inputs):
            return torch.func.functional_call(model, tensors, (), inputs)

        return loss_fn(swapped, lm.encoded)

    with torch.nn.attention.sdpa_kernel(torch.nn.attention.SDPBackend.MATH):
        hessian = torch.autograd.functional.hessian(loss_of_flat, flat(params).detach(), vectorize=True)
    exact = torch.linalg.eigvalsh((hessian + hessian.T) / 2).abs().max().item()
    for method in ("power", "lanczos"):
        result = hessian_spectral_norm(lambda: loss_fn(model, lm.encoded), model, method=method, rtol=1e-5,
                                       max_iter=1000)
        assert result.spectral_norm == pytest.approx(exact, rel=1e-2), method


def test_the_start_vector_is_seeded_and_the_global_rng_untouched(mlp_regression):
    params = list(mlp_regression.model.parameters())
    state = torch.get_rng_state()
    first = hessian_spectral_norm(mlp_regression.full_loss, params, seed=3, max_iter=5)
    second = hessian_spectral_norm(mlp_regression.full_loss, params, seed=3, max_iter=5)
    other = hessian_spectral_norm(mlp_regression.full_loss, params, seed=4, max_iter=5)
    assert first.trace == second.trace != other.trace
    assert torch.equal(state, torch.get_rng_state())


def test_a_zero_hessian_is_reported_as_degenerate():
    w = torch.zeros(3, dtype=torch.float64, requires_grad=True)
    for method in ("power", "power_h2", "lanczos"):
        result = hessian_spectral_norm(lambda: w.sum(), [w], method=method)
        assert result.degenerate and result.spectral_norm == 0.0


def test_bad_settings_are_refused():
    loss, w, _ = quadratic([1.0, 2.0])
    with pytest.raises(ValueError, match="unknown method"):
        hessian_spectral_norm(loss, [w], method="arnoldi")
    with pytest.raises(ValueError, match="max_iter"):
        hessian_spectral_norm(loss, [w], max_iter=0)
    with pytest.raises(ValueError, match="zero"):
        spectral_norm(lambda v: v, [torch.zeros(2, dtype=torch.float64)])
