"""The step-size estimate: formula, horizon, aggregation, subsampling, determinism, model state, record."""

import copy
import json
import math

import pytest
import torch
from torch import nn

from adamlab.encoding import Encoded, collate
from adamlab.stepsize import PRESETS, StepsizeEstimate, by_lora_matrix, estimate_stepsize
from adamlab.stepsize.formula import constant_stepsize, resolve_horizon
from adamlab.training import estimate_for_training
from adamlab.training.losses import loss_targets, summed_loss

from .conftest import regression, tiny_lora_lm


class PerExampleQuadratics(nn.Module):
    """Example i has loss 1/2 w^T A_i w + c_i with A_i = Q diag(norm_i, ...) Q^T: its Hessian norm is norm_i."""

    def __init__(self, norms, dim=6, seed=0):
        super().__init__()
        generator = torch.Generator().manual_seed(seed)
        self.w = nn.Parameter(torch.randn(dim, generator=generator, dtype=torch.float64))
        self.hessians = []
        for norm in norms:
            q, _ = torch.linalg.qr(torch.randn(dim, dim, generator=generator, dtype=torch.float64))
            spectrum = torch.linspace(-0.5 * norm, 0.8 * norm, dim, dtype=torch.float64)
            spectrum[-1] = norm
            self.hessians.append(q @ torch.diag(spectrum) @ q.T)
        self.offsets = torch.linspace(1.0, 2.0, len(norms), dtype=torch.float64)

    def loss(self, model, items):
        return torch.stack([0.5 * self.w @ self.hessians[i] @ self.w + self.offsets[i] for i in items]).mean()

    def loss_at_w(self, i):
        return (0.5 * self.w @ self.hessians[i] @ self.w + self.offsets[i]).item()


EXACT = {"method": "lanczos", "rtol": 1e-10, "max_iter": 100}


def test_the_formula_and_its_inverse():
    assert constant_stepsize(2.0, 1e7, 1) == pytest.approx(6.3246e-4, rel=1e-4)
    assert constant_stepsize(2.0, 1e7, 3125) == pytest.approx(1.1314e-5, rel=1e-4)
    assert 2 / (3.22e-4**2 * 1) == pytest.approx(1.9289e7, rel=1e-4)  # K/L0 behind the authors' Llama AG News
    for loss0, smoothness, horizon in ((0.0, 1.0, 1), (1.0, 0.0, 1), (1.0, -1.0, 1), (1.0, 1.0, 0)):
        with pytest.raises(ValueError):
            constant_stepsize(loss0, smoothness, horizon)
    with pytest.raises(ValueError, match="loss_floor"):
        constant_stepsize(1.0, 1.0, 1, loss_floor=1.0)


def test_horizon_resolution():
    assert resolve_horizon("steps", total_steps=50_000 // 16) == (3125, "steps")  # the authors' 1-epoch run
    assert resolve_horizon("one") == (1, "one") == resolve_horizon(1)
    assert resolve_horizon(3125) == (3125, "fixed")
    for bad in ("epochs", 0, -3, True, 2.5):
        with pytest.raises(ValueError, match="horizon"):
            resolve_horizon(bad, 100)
    with pytest.raises(ValueError, match="needs total_steps"):
        resolve_horizon("steps")


def test_a_quadratic_gives_exactly_its_curvature_and_the_closed_form_alpha():
    quadratics = PerExampleQuadratics([5.0])
    items = [0] * 4
    estimate = estimate_stepsize(quadratics, quadratics.loss, items, batch_size=4, horizon=100, **EXACT)
    loss0 = quadratics.loss_at_w(0)
    assert estimate.K == pytest.approx(5.0, rel=1e-9)
    assert estimate.L0 == pytest.approx(loss0, rel=1e-12)
    assert estimate.alpha == pytest.approx(math.sqrt(2 * loss0 / (5.0 * 100)), rel=1e-9)
    assert estimate.alpha(0.5) == pytest.approx(estimate.alpha / 2) and estimate.T == 100


@pytest.mark.parametrize("aggregate,expected", [("max", 9.0), ("mean", 4.0), ("quantile:0.5", 3.0),
                                                 ("quantile:0.25", 2.0)])
def test_aggregation_over_per_example_hessians(aggregate, expected):
    norms = [1.0, 3.0, 9.0, 2.0, 5.0]
    quadratics = PerExampleQuadratics(norms)
    estimate = estimate_stepsize(quadratics, quadratics.loss, list(range(5)), batch_size=1, horizon="one",
                                 aggregate=aggregate, n_examples=None, **EXACT)
    assert sorted(estimate.sigma) == pytest.approx(sorted(norms), rel=1e-9)
    assert estimate.K == pytest.approx(expected, rel=1e-9)
    assert estimate.sigma_quantiles["max"] == pytest.approx(9.0)
    assert estimate.sigma_quantiles["min"] == pytest.approx(1.0)


def test_the_subsample_estimate_converges_to_the_all_data_estimate():
    problem = regression(n=256)
    data = list(range(256))
    full = estimate_stepsize(problem.model, problem.loss, data, batch_size=4, n_examples=None, horizon=1000,
                             aggregate="mean", bootstrap=200)
    errors = {n: abs(full.subsample(n).alpha / full.alpha - 1) for n in (8, 32, 128, 256)}
    # Stated tolerance: the mean-aggregated alpha from half the data is within 5% of the all-data one.
    assert errors[256] == 0 and errors[128] <= 0.05
    assert errors[8] > errors[128]
    # The interval narrows as samples grow and holds the all-data value from 32 samples on (with 2 batches, at
    # n = 8, the bootstrap has too little to resample to mean anything).
    widths = {n: full.subsample(n).alpha_interval[1] - full.subsample(n).alpha_interval[0] for n in (32, 128, 256)}
    assert widths[32] > widths[128] > widths[256]
    for n in (32, 128):
        low, high = full.subsample(n).alpha_interval
        assert low <= full.alpha <= high


def test_a_subsample_is_exactly_the_estimate_from_fewer_examples():
    problem = regression(n=64)
    options = dict(batch_size=4, horizon=10, seed=5)
    full = estimate_stepsize(problem.model, problem.loss, list(range(64)), n_examples=32, **options)
    direct = estimate_stepsize(problem.model, problem.loss, list(range(64)), n_examples=12, **options)
    derived = full.subsample(12)
    assert derived.records["s"] == direct.records["s"]
    assert (derived.alpha, derived.K, derived.L0, derived.alpha_interval) == (
        direct.alpha, direct.K, direct.L0, direct.alpha_interval)
    assert full.subsample(8).K <= full.subsample(16).K <= full.K  # the max can only grow with the sample
    with pytest.raises(ValueError, match="end a batch"):
        full.subsample(10)
    assert full.subsample(4).alpha_interval is None  # one batch: nothing to resample


def test_the_same_seed_gives_the_same_estimate_and_leaves_the_global_rng_alone():
    problem = regression(n=32)
    state = torch.get_rng_state()
    runs = [estimate_stepsize(problem.model, problem.loss, list(range(32)), batch_size=4, horizon=10, seed=s,
                              n_examples=16) for s in (7, 7, 8)]
    assert torch.equal(state, torch.get_rng_state())
    assert (runs[0].K, runs[0].L0) == (runs[1].K, runs[1].L0)
    assert runs[0].records["s"] != runs[2].records["s"]


def test_dropout_is_off_during_the_estimate_and_the_mode_is_restored():
    problem = regression(n=16)
    model = nn.Sequential(problem.model, nn.Dropout(0.5))
    modes = []

    def loss(model_, items):
        modes.append(model_.training)
        return problem.loss(model_, items)

    for training in (True, False):
        model.train(training)
        estimate_stepsize(model, loss, list(range(16)), batch_size=4, horizon=10, max_iter=3)
        assert model.training is training
    assert modes and not any(modes)


def test_the_lora_estimate_is_finite_and_reports_convergence(tiny_lm):
    estimate = estimate_for_training(tiny_lm.model, "causal_lm", tiny_lm.encoded, tiny_lm.pad_id, batch_size=4,
                                     total_steps=3125, samples=16, seed=0, max_iter=20, bootstrap=100)
    assert math.isfinite(estimate.K) and estimate.K > 0 and 0 < estimate.alpha < 1
    assert 0 <= estimate.converged_fraction <= 1 and sum(estimate.iterations_histogram.values()) == 4
    assert (estimate.T, estimate.horizon_mode, estimate.hvp_engine) == (3125, "steps", "double_backward")


def test_l0_is_the_training_loss_of_the_sample(tiny_lm):
    estimate = estimate_for_training(tiny_lm.model, "causal_lm", tiny_lm.encoded, tiny_lm.pad_id, batch_size=8,
                                     total_steps=10, samples=None, seed=0, max_iter=2, bootstrap=0)
    model = tiny_lm.model.eval()
    with torch.no_grad():
        summed = sum(summed_loss(model, collate([e], tiny_lm.pad_id), "causal_lm").item() for e in tiny_lm.encoded)
        per_example = [summed_loss(model, collate([e], tiny_lm.pad_id), "causal_lm").item() / loss_targets([e])
                       for e in tiny_lm.encoded]
    assert estimate.L0 == pytest.approx(summed / loss_targets(tiny_lm.encoded), rel=1e-5)
    assert estimate.L0_per_example_mean == pytest.approx(sum(per_example) / len(per_example), rel=1e-5)
    assert estimate.n_examples_used == len(tiny_lm.encoded) and estimate.alpha_interval is None


def test_several_initialisations_take_the_max_and_restore_the_weights():
    lm = tiny_lora_lm(r=2, n_examples=8)
    before = {name: p.detach().clone() for name, p in lm.model.named_parameters()}
    one = estimate_for_training(lm.model, "causal_lm", lm.encoded, lm.pad_id, batch_size=4, total_steps=100,
                                samples=8, seed=0, max_iter=10, bootstrap=0)
    three = estimate_for_training(lm.model, "causal_lm", lm.encoded, lm.pad_id, batch_size=4, total_steps=100,
                                  samples=8, seed=0, max_iter=10, bootstrap=0, n_inits=3)
    assert all(torch.equal(p, before[name]) for name, p in lm.model.named_parameters())
    assert three.records["s"][0] == one.records["s"][0] and len(three.records["s"]) == 3
    assert three.K == max(three.sigma) >= one.K and three.L0 == one.L0
    assert three.records["s"][1] != three.records["s"][0]


def test_per_group_estimates_come_from_hessian_blocks(tiny_lm):
    estimate = estimate_for_training(tiny_lm.model, "causal_lm", tiny_lm.encoded, tiny_lm.pad_id, batch_size=8,
                                     total_steps=100, samples=16, seed=0, max_iter=30, groups=by_lora_matrix,
                                     bootstrap=0)
    lora_a, lora_b = estimate.groups["lora_A"], estimate.groups["lora_B"]
    assert lora_a.K == 0 and lora_a.alpha is None  # B = 0 at PEFT's init: the loss is linear in A
    assert 0 < lora_b.K <= estimate.K * 1.001 and lora_b.alpha >= estimate.alpha / 1.001
    assert lora_a.n_params + lora_b.n_params == sum(p.numel() for p in tiny_lm.model.parameters() if p.requires_grad)


def test_the_authors_preset_follows_their_procedure(tiny_lm):
    shortened = [Encoded(e.input_ids[-40:], e.labels[-40:], True) for e in tiny_lm.encoded[:4]]
    data = shortened + tiny_lm.encoded[4:6]  # 40 and 64 tokens
    estimate = estimate_for_training(tiny_lm.model, "causal_lm", data, tiny_lm.pad_id, total_steps=None, seed=0,
                                     preset="authors_llm", max_tokens=50, bootstrap=0)
    assert (estimate.method, estimate.batch_size, estimate.max_iter, estimate.atol) == ("power_h2", 1, 5, 1e-5)
    assert (estimate.T, estimate.horizon_mode, estimate.l0_reduction) == (1, "one", "per_example_mean")
    assert estimate.L0 == estimate.L0_per_example_mean and PRESETS["authors_llm"]["sample"] == estimate.sample
    assert (estimate.n_examples_used, estimate.n_excluded, estimate.n_examples_requested) == (4, 2, 50_000)
    assert estimate.sigma == pytest.approx(estimate.records["s"][0]) and len(estimate.sigma) == 4
    assert set(estimate.iterations_histogram) <= {"1", "2", "3", "4", "5"} and estimate.hvp_count % 2 == 0


def test_every_example_excluded_is_an_error(tiny_lm):
    with pytest.raises(ValueError, match="longer than max_tokens"):
        estimate_for_training(tiny_lm.model, "causal_lm", tiny_lm.encoded[:2], tiny_lm.pad_id, total_steps=None,
                              seed=0, preset="authors_llm", max_tokens=1)


def test_the_record_has_the_spec_fields_and_loads_back(tmp_path):
    problem = regression(n=16)
    estimate = estimate_stepsize(problem.model, problem.loss, list(range(16)), batch_size=4, horizon=10,
                                 max_iter=5, model_id="mlp", adapter_config={"r": 4})
    record = json.loads(estimate.to_json())
    for key in ("alpha", "multipliers", "L0", "L0_token_mean", "L0_per_example_mean", "loss_floor", "K_hat",
                "aggregate", "T", "horizon_mode", "preset", "method", "max_iter", "rtol", "n_inits", "seeds",
                "n_examples_requested", "n_examples_used", "n_excluded", "batch_size", "compute_dtype", "model_id",
                "adapter_config", "hvp_count", "wall_time_s", "peak_memory_bytes", "s", "lambda",
                "converged_fraction", "iterations", "degenerate_batches"):
        assert key in record, key
    assert record["multipliers"] == {"0.5": estimate.alpha / 2, "1": estimate.alpha, "2": estimate.alpha * 2}
    loaded = StepsizeEstimate.load(estimate.save(tmp_path / "lr.json"))
    assert loaded == estimate and loaded.alpha(2) == estimate.alpha(2)
    with pytest.raises(FileNotFoundError):
        StepsizeEstimate.load(tmp_path / "missing.json")
    (tmp_path / "other.json").write_text('{"status": "done"}')
    with pytest.raises(ValueError, match="not a step-size estimate"):
        StepsizeEstimate.load(tmp_path / "other.json")


def test_fp64_compute_dtype_casts_for_the_estimate_and_back():
    problem = regression(n=8)
    model = copy.deepcopy(problem.model).float()
    x32 = problem.x.float()

    def loss(model_, items):
        assert next(model_.parameters()).dtype == torch.float64
        return ((model_(x32[items].double()) - problem.y[items]) ** 2).sum(-1).mean()

    estimate = estimate_stepsize(model, loss, list(range(8)), batch_size=4, horizon=10, max_iter=3,
                                 compute_dtype=torch.float64)
    assert next(model.parameters()).dtype == torch.float32 and estimate.compute_dtype == "float64"


@pytest.mark.parametrize("change,message", [
    ({"preset": "authors"}, "Did you mean 'authors_llm'"),
    ({"aggregate": "quantile:1.5"}, "aggregate"),
    ({"aggregate": "median"}, "aggregate"),
    ({"horizon": "epochs"}, "horizon"),
    ({"horizon": "steps"}, "needs total_steps"),
    ({"batch_size": 0}, "batch_size"),
    ({"method": "arnoldi"}, "unknown method"),
    ({"hvp": "reverse"}, "HVP engine"),
    ({"l0_reduction": "sum"}, "l0_reduction"),
    ({"rtol": -1.0}, "rtol"),
    ({"confidence": 1.0}, "confidence"),
    ({"params": []}, "no parameters"),
])
def test_bad_settings_are_refused_before_any_work(change, message):
    problem = regression(n=4)
    calls = []

    def loss(model, items):
        calls.append(items)
        return problem.loss(model, items)

    options = {"horizon": 10, **change}
    with pytest.raises(ValueError, match=message):
        estimate_stepsize(problem.model, loss, list(range(4)), **options)
    assert not calls
