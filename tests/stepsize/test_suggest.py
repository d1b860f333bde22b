"""The learning-rate methods on quadratics whose curvature is known in closed form."""

from __future__ import annotations

import math
from functools import partial

import pytest
import torch
from torch import nn

from adamlab.optim import available_optimizers, create_optimizer
from adamlab.stepsize.aeos import (
    aeos_bound,
    optimizer_preconditioner,
    preconditioned_sharpness,
    seeded_batches,
    stability_threshold,
)
from adamlab.stepsize.suggest import (
    SUGGEST_FRACTIONS,
    SUGGESTION_METHODS,
    LRSuggestion,
    MethodSettings,
    lr_warning,
    suggest_lr,
)


tensor = partial(torch.tensor, dtype=torch.float64)
ones = partial(torch.ones, dtype=torch.float64)
zeros = partial(torch.zeros, dtype=torch.float64)
randn = partial(torch.randn, dtype=torch.float64)
eye = partial(torch.eye, dtype=torch.float64)


class Quadratic(nn.Module):
    """Loss 0.5 * mean over a batch of (x - c)^T A (x - c): the Hessian is A at every point, for every batch."""

    def __init__(self, hessian: torch.Tensor):
        super().__init__()
        self.x = nn.Parameter(ones(hessian.shape[0]))
        self.register_buffer("hessian", hessian)


def quadratic_loss(model: Quadratic, batch: list) -> torch.Tensor:
    centres = torch.stack(batch)
    diffs = model.x - centres
    return 0.5 * torch.einsum("bi,ij,bj->b", diffs, model.hessian, diffs).mean()


def random_spd(n: int, eigenvalues: torch.Tensor, seed: int = 0) -> torch.Tensor:
    q, _ = torch.linalg.qr(randn(n, n, generator=torch.Generator().manual_seed(seed)))
    return q @ torch.diag(eigenvalues) @ q.T


def centres(n_examples: int, dim: int, scale: float = 0.1) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    return list(scale * randn(n_examples, dim, generator=generator))


def test_preconditioned_sharpness_matches_the_eigenvalues_of_p_inverse_h():
    hessian = random_spd(6, tensor([0.5, 1.0, 2.0, 3.0, 5.0, 9.0]))
    diagonal = tensor([0.1, 2.0, 0.5, 1.0, 3.0, 0.2])
    expected = torch.linalg.eigvals(torch.diag(1 / diagonal) @ hessian).real.max().item()
    result = preconditioned_sharpness(lambda v: [hessian @ v[0]], [diagonal], [ones(6) / math.sqrt(6)],
                                      max_iter=500, rtol=1e-12)
    assert result.sharpness == pytest.approx(expected, rel=1e-6)


def test_preconditioned_sharpness_takes_the_largest_algebraic_eigenvalue_when_the_dominant_is_negative():
    hessian = random_spd(5, tensor([-10.0, -1.0, 0.5, 2.0, 3.0]), seed=3)
    diagonal = ones(5)
    result = preconditioned_sharpness(lambda v: [hessian @ v[0]], [diagonal], [ones(5) / math.sqrt(5)],
                                      max_iter=2000, rtol=1e-12)
    assert result.dominant == pytest.approx(-10.0, rel=1e-6)
    assert result.sharpness == pytest.approx(3.0, rel=1e-4)


def test_preconditioned_sharpness_converges_in_fewer_products_than_power_iteration_on_a_crowded_spectrum():
    """A spectrum crowded below its top (400 eigenvalues evenly in [0, 1]), as a network's Hessian is: Lanczos stops
    at rtol 1e-2 within 1% of the top in under 20 products, where 20 power iterations are still further off."""
    eigenvalues = torch.linspace(0.0, 1.0, 400, dtype=torch.float64)
    hessian = random_spd(400, eigenvalues, seed=5)
    start = [randn(400, generator=torch.Generator().manual_seed(6))]
    result = preconditioned_sharpness(lambda v: [hessian @ v[0]], [ones(400)], start, max_iter=20, rtol=1e-2)
    assert result.converged and result.hvp_count < 20
    assert result.sharpness == pytest.approx(1.0, rel=1e-2)
    vector = start[0] / start[0].norm()
    for _ in range(20):
        vector = hessian @ vector
        vector = vector / vector.norm()
    assert 1.0 - (vector @ hessian @ vector).item() > abs(1.0 - result.sharpness)


def test_preconditioned_sharpness_is_zero_without_positive_curvature():
    hessian = -torch.diag(tensor([1.0, 2.0, 4.0]))
    result = preconditioned_sharpness(lambda v: [hessian @ v[0]], [ones(3)], [ones(3) / math.sqrt(3)],
                                      max_iter=500, rtol=1e-12)
    assert result.sharpness == 0.0
    assert stability_threshold(result.sharpness, 0.9) == math.inf


@pytest.mark.parametrize("momentum, beta", [("ema", 0.9), ("ema", 0.0), ("heavy_ball", 0.9), ("heavy_ball", 0.5),
                                            ("schedule_free", 0.9)])
def test_stability_threshold_is_where_momentum_descent_on_a_quadratic_starts_to_diverge(momentum, beta):
    curvature = 7.0
    eta_max = stability_threshold(curvature, beta, momentum)

    def final_distance(eta: float) -> float:
        x, m = 1.0, 0.0
        if momentum == "schedule_free":  # z steps on the gradient at y; x is the running average of the z's
            z = x
            for t in range(1, 3001):
                z -= eta * curvature * ((1 - beta) * z + beta * x)
                x += (z - x) / (t + 1)
            return abs(z)
        for _ in range(3000):
            g = curvature * x
            m = beta * m + ((1 - beta) * g if momentum == "ema" else g)
            x -= eta * m
        return abs(x)

    assert final_distance(0.98 * eta_max) < 1.0
    assert final_distance(1.02 * eta_max) > 1e6


def test_adam_preconditioner_is_the_bias_corrected_root_second_moment_plus_eps():
    param = nn.Parameter(tensor([1.0, -2.0, 3.0]))
    optimizer = torch.optim.Adam([param], lr=1e-3, betas=(0.9, 0.99), eps=1e-6)
    squares = zeros(3)
    for step in range(1, 6):
        param.grad = tensor([1.0, 2.0, -0.5]) * step
        squares = 0.99 * squares + 0.01 * param.grad**2
        optimizer.step()
    preconditioner = optimizer_preconditioner(optimizer, [param])
    assert preconditioner.kind == "second_moment" and preconditioner.beta == 0.9
    torch.testing.assert_close(preconditioner.diagonal[0].double(), (squares / (1 - 0.99**5)).sqrt() + 1e-6)


def test_sgd_preconditioner_is_the_identity_with_heavy_ball_momentum():
    param = nn.Parameter(ones(2))
    optimizer = torch.optim.SGD([param], lr=0.1, momentum=0.8)
    param.grad = ones(2)
    optimizer.step()
    preconditioner = optimizer_preconditioner(optimizer, [param])
    assert (preconditioner.kind, preconditioner.beta, preconditioner.momentum) == ("identity", 0.8, "heavy_ball")


def test_an_optimizer_without_a_translation_is_refused_naming_what_is_supported():
    param = nn.Parameter(ones(2))
    optimizer = torch.optim.Rprop([param])
    param.grad = ones(2)
    optimizer.step()
    with pytest.raises(ValueError, match="Rprop.*second moment"):
        optimizer_preconditioner(optimizer, [param])


def test_adagrad_preconditioner_is_the_root_of_its_sum_of_squares_without_momentum():
    param = nn.Parameter(ones(3))
    optimizer = torch.optim.Adagrad([param], lr=0.1, eps=1e-6)
    for step in range(1, 4):
        param.grad = tensor([1.0, -2.0, 0.0]) * step
        optimizer.step()
    preconditioner = optimizer_preconditioner(optimizer, [param])
    assert (preconditioner.kind, preconditioner.beta) == ("adagrad", 0.0)
    torch.testing.assert_close(preconditioner.diagonal[0], tensor([14.0, 56.0, 0.0]).sqrt() + 1e-6)
    assert preconditioner.active[0].tolist() == [1.0, 1.0, 0.0]  # the coordinate never moved is left out


def test_adam_minis_block_second_moment_is_broadcast_over_its_block():
    params = [nn.Parameter(ones(4, 3)), nn.Parameter(ones(5))]
    optimizer = create_optimizer("adam_mini", params, lr=1e-3)
    for step in range(1, 4):
        params[0].grad, params[1].grad = ones(4, 3) * tensor([1.0, 2.0, 3.0]) * step, ones(5) * step
        optimizer.step()
    preconditioner = optimizer_preconditioner(optimizer, params)
    beta2, eps = optimizer.param_groups[0]["betas"][1], optimizer.param_groups[0]["eps"]
    for p, diagonal in zip(params, preconditioner.diagonal):
        state = optimizer.state[p]
        second = state["vmean"] if "vmean" in state else state["v"]
        assert diagonal.shape == p.shape and (second.numel() < p.numel()) == ("vmean" in state)
        per_block = ((second / (1 - beta2**3)).sqrt() + eps).reshape(-1, 1)
        torch.testing.assert_close(diagonal, per_block.expand(-1, p.numel() // second.numel()).reshape(p.shape))


def test_cames_preconditioner_is_its_factored_second_moment_times_its_factored_instability():
    params = [nn.Parameter(randn(4, 3, generator=torch.Generator().manual_seed(0))), nn.Parameter(ones(3))]
    optimizer = create_optimizer("came", params, lr=1e-3)
    for step in range(1, 4):
        for p in params:
            p.grad = randn(p.shape, generator=torch.Generator().manual_seed(step))
        optimizer.step()
    preconditioner = optimizer_preconditioner(optimizer, params)
    assert preconditioner.kind == "factored" and preconditioner.beta == optimizer.param_groups[0]["betas"][0]
    matrix, vector = (optimizer.state[p] for p in params)

    def outer_over_mean(row: torch.Tensor, col: torch.Tensor) -> torch.Tensor:
        return torch.outer(row, col) / row.mean()

    expected = (outer_over_mean(matrix["exp_avg_sq_row"], matrix["exp_avg_sq_col"])
                * outer_over_mean(matrix["exp_avg_res_row"], matrix["exp_avg_res_col"])).sqrt()
    torch.testing.assert_close(preconditioner.diagonal[0], expected)
    torch.testing.assert_close(preconditioner.diagonal[1], vector["exp_avg_sq"].sqrt())


def test_bitsandbytes_8bit_second_moment_is_dequantized():
    pytest.importorskip("bitsandbytes")
    param = nn.Parameter(torch.ones(64, 128))  # 8,192 elements: bitsandbytes quantizes states from 4,096 up
    optimizer = create_optimizer("adamw_8bit", [param], lr=1e-3)
    squares = torch.zeros(64, 128)
    generator = torch.Generator().manual_seed(0)
    for _ in range(3):
        param.grad = torch.randn(64, 128, generator=generator)
        squares = 0.999 * squares + 0.001 * param.grad**2
        optimizer.step()
    assert optimizer.state[param]["state2"].dtype == torch.uint8
    preconditioner = optimizer_preconditioner(optimizer, [param])
    exact = (squares / (1 - 0.999**3)).sqrt() + optimizer.param_groups[0]["eps"]
    assert ((preconditioner.diagonal[0] - exact).abs() / exact).median() < 0.02  # one 8-bit code's rounding


def test_lambs_preconditioner_divides_adams_by_the_trust_ratio_and_sm3s_takes_the_least_cover():
    param = nn.Parameter(randn(4, 3, generator=torch.Generator().manual_seed(0)))
    lamb = create_optimizer("lamb", [param], lr=1e-3)
    for step in range(1, 4):
        param.grad = randn(4, 3, generator=torch.Generator().manual_seed(step))
        lamb.step()
    state, eps = lamb.state[param], lamb.param_groups[0]["eps"]
    preconditioner = optimizer_preconditioner(lamb, [param])
    assert preconditioner.kind == "lamb" and 0 < float(state["trust_ratio"]) != 1
    torch.testing.assert_close(preconditioner.diagonal[0], (state["exp_avg_sq"].sqrt() + eps) / state["trust_ratio"])

    sm3 = create_optimizer("sm3", [param], lr=1e-3)
    for step in range(1, 4):
        param.grad = randn(4, 3, generator=torch.Generator().manual_seed(step))
        sm3.step()
    state, eps = sm3.state[param], sm3.param_groups[0]["eps"]
    nu = torch.minimum(state["accumulator_0"].expand(4, 3), state["accumulator_1"].expand(4, 3))
    torch.testing.assert_close(optimizer_preconditioner(sm3, [param]).diagonal[0], (nu + eps).sqrt())


def test_optimizers_whose_lr_is_not_a_step_size_are_refused_with_the_reason():
    for name, reason in (("prodigy", "sets its own step size"), ("dadapt_adam", "sets its own step size")):
        param = nn.Parameter(torch.ones(4, 3))
        optimizer = create_optimizer(name, [param], lr=1e-3)
        param.grad = torch.ones(4, 3)
        optimizer.step()
        with pytest.raises(ValueError, match=reason):
            optimizer_preconditioner(optimizer, [param])


def test_every_registered_optimizer_gets_a_finite_bound_or_a_reason():
    """On a small network, the bound of every optimizer in the registry: finite and positive, or a ValueError that
    says why there is none (the refusals are the ones listed in adamlab.stepsize.aeos)."""
    generator = torch.Generator().manual_seed(0)
    data = [(torch.randn(8, generator=generator), int(i % 2)) for i in range(32)]

    def loss(model, batch):
        inputs, labels = torch.stack([x for x, _ in batch]), torch.tensor([y for _, y in batch])
        return nn.functional.cross_entropy(model(inputs), labels)

    refused = {"prodigy", "dadapt_adam"}
    for name in available_optimizers():
        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(8, 16), nn.Tanh(), nn.Linear(16, 2))
        extra = {"phases": [{"name": "adamw"}, {"name": "sgd"}], "milestones": [100]} if name == "switch" else {}
        build = partial(lambda params, lr, name, extra: create_optimizer(name, params, lr=lr, **extra),
                        name=name, extra=extra)
        if name in refused:
            with pytest.raises(ValueError, match="no translation"):
                aeos_bound(model, loss, data, build, warmup_steps=3, n_batches=1, batch_size=8)
            continue
        bound = aeos_bound(model, loss, data, build, warmup_steps=3, n_batches=1, batch_size=8)
        assert 0 < bound.eta_max < math.inf, name


def test_aeos_bound_with_sgd_is_the_heavy_ball_edge_of_the_known_hessian():
    hessian = random_spd(4, tensor([0.5, 1.0, 4.0, 8.0]))
    model = Quadratic(hessian)
    bound = aeos_bound(model, quadratic_loss, centres(64, 4), lambda params, lr: torch.optim.SGD(params, lr, 0.9),
                       warmup_steps=3, batch_size=8, max_iter=500)
    assert bound.sharpness == pytest.approx(8.0, rel=1e-3)
    assert bound.eta_max == pytest.approx((2 + 2 * 0.9) / 8.0, rel=1e-3)
    assert torch.equal(model.x.detach(), ones(4))  # the model comes back as it was


def test_aeos_bound_with_adam_uses_the_preconditioner_its_warm_up_built():
    hessian = torch.diag(tensor([1.0, 10.0, 100.0]))
    model = Quadratic(hessian)
    data = centres(64, 3)
    bound = aeos_bound(model, quadratic_loss, data, lambda params, lr: torch.optim.Adam(params, lr), warmup_steps=4,
                       warmup_lr=1e-3, batch_size=8, max_iter=500, rtol=1e-12)
    # Replay the warm-up: same batches, same steps; with a diagonal H, lambda_max(P^-1 H) = max_i h_i / p_i.
    replay = Quadratic(hessian)
    optimizer = torch.optim.Adam(replay.parameters(), 1e-3)
    order = seeded_batches(len(data), 8, 0, "aeos")
    for _ in range(4):
        replay.zero_grad()
        quadratic_loss(replay, [data[i] for i in next(order)]).backward()
        optimizer.step()
    diagonal = optimizer_preconditioner(optimizer, [replay.x]).diagonal[0]
    expected = (torch.diag(hessian) / diagonal).max().item()
    assert bound.sharpness == pytest.approx(expected, rel=1e-6)
    assert bound.eta_max == pytest.approx(38 / expected, rel=1e-6)


def test_dds_on_a_quadratic_is_the_closed_form_step_size():
    hessian = torch.diag(tensor([0.5, 2.0, 6.0]))
    model = Quadratic(hessian)
    data = centres(64, 3, scale=0.0)  # every centre at 0: L(w0) = 0.5 * sum(diag(A)) at x = 1
    suggestion = suggest_lr("dds", model, quadratic_loss, data, lambda p, lr: torch.optim.Adam(p, lr),
                            optimizer="adam", horizon=100, settings=MethodSettings(max_iter=500))
    assert suggestion.lr == pytest.approx(math.sqrt(2 * 4.25 / (6.0 * 100)), rel=1e-3)
    assert suggestion.diagnostics["derived_for"] == "adam" and suggestion.horizon == 100
    one = suggest_lr("dds-one", model, quadratic_loss, data, lambda p, lr: torch.optim.Adam(p, lr),
                     optimizer="adam", horizon=100, settings=MethodSettings(max_iter=500))
    assert one.lr == pytest.approx(suggestion.lr * 10, rel=1e-6)


def test_suggest_is_its_fraction_of_the_bound_and_warns_above_it(tmp_path):
    model = Quadratic(torch.diag(tensor([1.0, 3.0])))
    settings = MethodSettings(batch_size=8, max_iter=200, fraction=0.1)
    make = lambda p, lr: torch.optim.SGD(p, lr)  # noqa: E731 - P = I: eta_max = 2 / 3 exactly
    suggestion = suggest_lr("suggest", model, quadratic_loss, centres(32, 2), make, optimizer="sgd", horizon=50,
                            settings=settings)
    assert suggestion.lr == pytest.approx(0.1 * 2 / 3, rel=1e-3)
    assert suggestion.cost_seconds > 0
    assert lr_warning(suggestion.lr, suggestion) is None
    warning = lr_warning(1.0, suggestion)
    assert warning is not None and "\n" not in warning and "unstable" in warning
    loaded = LRSuggestion.load(suggestion.save(tmp_path / "lr.json"))
    assert loaded == suggestion


def test_range_test_reports_its_divergence_point():
    model = Quadratic(torch.diag(tensor([1.0, 4.0])))
    settings = MethodSettings(batch_size=8, range_steps=60, range_min_lr=1e-3, range_max_lr=100.0)
    suggestion = suggest_lr("range-test", model, quadratic_loss, centres(64, 2), lambda p, lr: None,
                            optimizer="sgd", horizon=50, settings=settings)
    unstable = suggestion.diagnostics["unstable_above"]
    assert unstable is not None and 2 / 4.0 < unstable <= 100.0  # plain GD leaves the bowl above 2 / 4
    assert suggestion.lr < unstable
    assert lr_warning(unstable * 2, suggestion) is not None


def test_the_start_sets_suggests_fraction_and_an_unknown_start_lists_the_valid_ones():
    assert MethodSettings().suggest_fraction() == SUGGEST_FRACTIONS["fine-tune"]
    assert MethodSettings(start="from-scratch").suggest_fraction() == SUGGEST_FRACTIONS["from-scratch"]
    assert MethodSettings(start="from-scratch", fraction=0.3).suggest_fraction() == 0.3
    with pytest.raises(ValueError, match="valid: fine-tune, from-scratch"):
        suggest_lr("suggest", Quadratic(eye(2)), quadratic_loss, centres(8, 2), lambda p, lr: None,
                   optimizer="adam", horizon=10, settings=MethodSettings(start="pretrained"))


def test_an_unknown_method_lists_the_valid_ones():
    with pytest.raises(ValueError, match="valid: " + ", ".join(SUGGESTION_METHODS)):
        suggest_lr("magic", Quadratic(eye(2)), quadratic_loss, centres(8, 2), lambda p, lr: None,
                   optimizer="adam", horizon=10)


def test_adabelief_and_lion_translate_their_own_state():
    for name, kind, key in (("adabelief", "belief", "exp_avg_var"), ("lion", "sign", "exp_avg")):
        param = nn.Parameter(ones(3))
        optimizer = create_optimizer(name, [param], lr=1e-3)
        for step in range(3):
            param.grad = tensor([1.0, -2.0, 0.5]) * (step + 1)
            optimizer.step()
        preconditioner = optimizer_preconditioner(optimizer, [param])
        state = optimizer.state[param]
        assert preconditioner.kind == kind and preconditioner.momentum == "ema"
        if kind == "sign":
            torch.testing.assert_close(preconditioner.diagonal[0], state[key].abs() + 1e-8)
        else:
            beta2, eps = optimizer.param_groups[0]["betas"][1], optimizer.param_groups[0]["eps"]
            expected = (state[key] / (1 - beta2 ** float(state["step"]))).sqrt() + eps
            torch.testing.assert_close(preconditioner.diagonal[0], expected)


def test_aeos_bound_reports_its_progress():
    calls = []
    aeos_bound(Quadratic(eye(2)), quadratic_loss, centres(16, 2), lambda p, lr: torch.optim.SGD(p, lr),
               warmup_steps=2, batch_size=4, n_batches=2, max_iter=5, progress=lambda done, total: calls.append(
                   (done, total)))
    assert calls == [(1, 4), (2, 4), (3, 4), (4, 4)]


def test_coordinates_the_warm_up_never_moved_are_left_out_of_the_bound():
    """An embedding row no warm-up batch touched has P = eps: kept, it would make eta_max ~1e8 times too small."""
    hessian = torch.diag(tensor([1.0, 10.0, 5.0]))
    diagonal = tensor([1.0, 1.0, 1e-8])
    start = [ones(3) / math.sqrt(3)]
    kept = preconditioned_sharpness(lambda v: [hessian @ v[0]], [diagonal], start, max_iter=300, rtol=1e-12)
    masked = preconditioned_sharpness(lambda v: [hessian @ v[0]], [diagonal], start, active=[tensor([1.0, 1.0, 0.0])],
                                      max_iter=300, rtol=1e-12)
    assert kept.sharpness == pytest.approx(5e8, rel=1e-6)
    assert masked.sharpness == pytest.approx(10.0, rel=1e-6)
    param = nn.Parameter(ones(2))
    optimizer = torch.optim.Adam([param], lr=1e-3)
    param.grad = tensor([1.0, 0.0])
    optimizer.step()
    assert torch.equal(optimizer_preconditioner(optimizer, [param]).active[0], tensor([1.0, 0.0]))
