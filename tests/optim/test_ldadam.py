"""LDAdamW checks: parity with a literal transcription of the official code (spec §10), the closed-form first
step, exact resume, error feedback that survives zero_grad, validation, param groups for a model, state memory,
and a short ``adamlab train`` run."""

from __future__ import annotations

import copy
import io
import json
import math
import warnings

import pytest
import torch
from torch import nn

from adamlab.optim import create_optimizer, optimizer_state_bytes
from adamlab.optim.ldadam import LDAdamW, ldadam_param_groups

# --- the official code, transcribed ---------------------------------------------------------------------------


class OfficialLDAdamW:
    """``ldadamw_torch.LDAdamW`` at f3c5daf as the spec describes it (§1-§6), written literally: one global
    ``completed_steps``, eager state in the parameter dtype, the error buffer in ``p.grad`` and a ``zero_grad`` that
    keeps it, right projection with P stored r x n, SVD and QR in float32, and the operation order of §3."""

    def __init__(
        self,
        groups,
        lr=1e-3,
        betas=(0.908, 0.99),
        eps=1e-8,
        weight_decay=0.0,
        rank=16,
        rho=0.908,
        proj_type="std",
        proj_method="power_iteration",
        error_feedback=True,
    ):
        self.completed_steps = 0
        self.entries = []
        for group in groups:
            for p in group["params"]:
                e = dict(
                    p=p,
                    lowrank=group["enable_lowrank"],
                    lr=group.get("lr", lr),
                    weight_decay=group.get("weight_decay", weight_decay),
                    eps=group.get("eps", eps),
                    beta1=group.get("beta1", betas[0]),
                    beta2=group.get("beta2", betas[1]),
                )
                if e["lowrank"]:
                    e.update(
                        rank=group.get("rank", rank),
                        rho=group.get("rho", rho),
                        proj_method=group.get("proj_method", proj_method),
                        error_feedback=group.get("error_feedback", error_feedback),
                    )
                    proj = group.get("proj_type", proj_type)
                    m, n = p.shape
                    e["right"] = {"std": m > n, "reverse_std": m < n, "left": False, "right": True}[proj]
                    r = e["rank"]
                    if r > (n if e["right"] else m):
                        raise ValueError("rank too large")
                    e["P"] = p.new_zeros(r, n) if e["right"] else p.new_zeros(m, r)
                    e["m"] = p.new_zeros(m, r) if e["right"] else p.new_zeros(r, n)
                    e["v"] = torch.zeros_like(e["m"])
                else:
                    e["m"], e["v"] = torch.zeros_like(p), torch.zeros_like(p)
                self.entries.append(e)

    def zero_grad(self):
        for e in self.entries:
            if e["lowrank"] and e["error_feedback"]:
                continue
            e["p"].grad = None

    @torch.no_grad()
    def step(self):
        k = self.completed_steps
        for e in self.entries:
            if e["p"].grad is not None:
                (self._lowrank if e["lowrank"] else self._adamw)(e, k)
        self.completed_steps += 1

    @staticmethod
    def _adamw(e, k):
        p, g, b1, b2 = e["p"], e["p"].grad, e["beta1"], e["beta2"]
        e["m"] = b1 * e["m"] + (1 - b1) * g
        e["v"] = b2 * e["v"] + (1 - b2) * g * g
        update = (e["m"] / (1 - b1 ** (k + 1))) / (torch.sqrt(e["v"] / (1 - b2 ** (k + 1))) + e["eps"])
        p.mul_(1 - e["lr"] * e["weight_decay"])
        p.sub_(e["lr"] * update)

    @staticmethod
    def _lowrank(e, k):
        p, G, right, r = e["p"], e["p"].grad, e["right"], e["rank"]
        b1, b2, rho, dtype = e["beta1"], e["beta2"], e["rho"], p.dtype
        P_old, m, v = e["P"], e["m"], e["v"]
        bc1, bc2 = 1 - b1**k, 1 - b2**k

        def project(P, M):
            return M @ P.T if right else P.T @ M

        def project_back(P, L):
            return L @ P if right else P @ L

        def svd_basis(A):
            U, _, Vh = torch.linalg.svd(A.float(), full_matrices=False)
            return (Vh[:r, :] if right else U[:, :r]).to(dtype)

        # (1) subspace
        if k == 0:
            P_new = svd_basis(G)
        else:
            B = rho * project_back(P_old, m / bc1) + (1 - rho) * G
            if e["proj_method"] == "svd":
                P_new = svd_basis(B)
            elif right:
                Q, _ = torch.linalg.qr((B.T @ (B @ P_old.T)).float())
                P_new = Q.to(dtype).T
            else:
                Q, _ = torch.linalg.qr((B @ (B.T @ P_old)).float())
                P_new = Q.to(dtype)
        # (2) project the gradient; (3) change of basis of the first moment
        g_low = project(P_new, G)
        Qc = P_old @ P_new.T if right else P_new.T @ P_old
        m_t = m @ Qc if right else Qc @ m
        # (4) error feedback, in place on p.grad
        if e["error_feedback"]:
            c = b1 / (1 - b1)
            G.sub_(project_back(P_new, g_low))
            G.add_(c * project_back(P_old, m))
            G.sub_(c * project_back(P_new, m_t))
        # (5) projection-aware second moment
        if k > 0:
            v = v * (1 / bc2)
            v = v - m**2 / bc1**2
            v = v @ (Qc * Qc) if right else (Qc * Qc) @ v
            v = v + m_t**2 / bc1**2
            v = v * bc2
            v = v.abs()
        m = m_t
        # (6) moments; (7) update
        m = b1 * m + (1 - b1) * g_low
        v = b2 * v + (1 - b2) * g_low**2
        update = v / (1 - b2 ** (k + 1))
        update = update.sqrt()
        update = update + e["eps"]
        update = 1 / update
        update = update * m
        update = update / (1 - b1 ** (k + 1))
        update = project_back(P_new, update)
        p.mul_(1 - e["lr"] * e["weight_decay"])
        p.sub_(e["lr"] * update)
        e["P"], e["m"], e["v"] = P_new, m, v


# --- the parity recipe (spec §10) -----------------------------------------------------------------------------

RECIPE = dict(lr=1e-2, betas=(0.908, 0.99), eps=1e-8, weight_decay=0.01)


def recipe_model(dtype=torch.float64):
    """Weights (40, 24) right-projected, (32, 40) left, (32, 32) left and square, (8, 32) left."""
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Linear(24, 40), nn.Tanh(), nn.Linear(40, 32), nn.Tanh(), nn.Linear(32, 32), nn.Tanh(), nn.Linear(32, 8)
    ).to(dtype)


def recipe_groups(model, **lowrank):
    return [
        {"params": [p for n, p in model.named_parameters() if n.endswith("bias")], "enable_lowrank": False},
        {
            "params": [p for n, p in model.named_parameters() if n.endswith("weight")],
            "enable_lowrank": True,
            "rank": 4,
            "rho": 0.908,
            **lowrank,
        },
    ]


def batches(steps, dtype=torch.float64):
    gen = torch.Generator().manual_seed(1234)
    target_map = torch.randn(24, 8, generator=gen, dtype=torch.float64)
    for _ in range(steps):
        x = torch.randn(64, 24, generator=gen, dtype=torch.float64)
        yield x.to(dtype), torch.sin(x @ target_map).to(dtype)


def backward(model, x, y):
    loss = nn.functional.mse_loss(model(x), y)
    loss.backward()
    return loss.item()


def weights(model):
    return [p for n, p in model.named_parameters() if n.endswith("weight")]


def ours_sign_invariant(optimizer, p, right):
    """P P^T, |m|, v and the error buffer of a matrix, laid out like the official tensors."""
    state = optimizer.state[p]
    m, v = (state["exp_avg"].mT, state["exp_avg_sq"].mT) if right else (state["exp_avg"], state["exp_avg_sq"])
    error = state["error"] if "error" in state else p.grad
    return state["projector"] @ state["projector"].mT, m.abs(), v, error


def official_sign_invariant(entry):
    P = entry["P"]
    projection = P.T @ P if entry["right"] else P @ P.T
    return projection, entry["m"].abs(), entry["v"], entry["p"].grad


def max_difference(model_a, model_b):
    return max((a - b).abs().max().item() for a, b in zip(model_a.parameters(), model_b.parameters()))


PARITY_CASES = [
    # (error_feedback, proj_method, ef_storage, proj_type)
    (True, "power_iteration", "state", "std"),
    (True, "power_iteration", "grad", "std"),
    (False, "power_iteration", "state", "std"),
    (True, "svd", "state", "std"),
    (True, "svd", "grad", "std"),
    (False, "svd", "state", "std"),
    (True, "power_iteration", "state", "reverse_std"),  # (40, 24) left, the others right (square stays left)
]


@pytest.mark.parametrize("error_feedback,proj_method,ef_storage,proj_type", PARITY_CASES)
def test_matches_the_official_transcription_over_50_steps(error_feedback, proj_method, ef_storage, proj_type):
    ours_model, ref_model = recipe_model(), recipe_model()
    options = dict(proj_method=proj_method, error_feedback=error_feedback, proj_type=proj_type)
    ours = LDAdamW(recipe_groups(ours_model, **options), ef_storage=ef_storage, **RECIPE)
    ref = OfficialLDAdamW(recipe_groups(ref_model), **options, **RECIPE)
    lowrank_refs = [e for e in ref.entries if e["lowrank"]]
    for step, (x, y) in enumerate(batches(50), start=1):
        backward(ours_model, x, y)
        backward(ref_model, x, y)
        ours.step()
        ref.step()
        if step in (1, 2, 10, 50):
            assert max_difference(ours_model, ref_model) <= 1e-10, f"step {step}"
            names = ("P P^T", "|m|", "v", "error")[: 4 if error_feedback else 3]
            for p, entry in zip(weights(ours_model), lowrank_refs):
                for what, a, b in zip(
                    names, ours_sign_invariant(ours, p, entry["right"]), official_sign_invariant(entry)
                ):
                    message = lambda s, t=step, w=what: f"step {t}, {w}: {s}"
                    torch.testing.assert_close(a, b, atol=1e-10, rtol=0, msg=message)
        ours.zero_grad()
        ref.zero_grad()
    assert {tuple(p.shape) for p in weights(ours_model)} == {(40, 24), (32, 40), (32, 32), (8, 32)}


@pytest.mark.parametrize("error_feedback", [True, False])
def test_float32_tracks_the_official_transcription(error_feedback):
    ours_model, ref_model = recipe_model(torch.float32), recipe_model(torch.float32)
    ours = LDAdamW(recipe_groups(ours_model, error_feedback=error_feedback), **RECIPE)
    ref = OfficialLDAdamW(recipe_groups(ref_model, error_feedback=error_feedback), **RECIPE)
    for x, y in batches(50, torch.float32):
        backward(ours_model, x, y)
        backward(ref_model, x, y)
        ours.step()
        ref.step()
        ours.zero_grad()
        ref.zero_grad()
    assert max_difference(ours_model, ref_model) <= 1e-5


def test_enable_lowrank_false_everywhere_is_torch_adamw():
    ours_model, ref_model = recipe_model(), recipe_model()
    ours = LDAdamW(ours_model.parameters(), **RECIPE)  # no enable_lowrank: defaults to False (official: KeyError)
    ref = torch.optim.AdamW(ref_model.parameters(), **RECIPE)
    for x, y in batches(50):
        for model, optimizer in ((ours_model, ours), (ref_model, ref)):
            backward(model, x, y)
            optimizer.step()
            optimizer.zero_grad()
    assert max_difference(ours_model, ref_model) <= 1e-12


def test_full_rank_square_svd_without_error_feedback_is_finite_and_learns():
    torch.manual_seed(0)
    model = nn.Sequential(*[nn.Linear(16, 16) for _ in range(4)]).double()
    groups = recipe_groups(model, rank=16, proj_method="svd", error_feedback=False)
    with pytest.warns(UserWarning, match="not compressed"):
        optimizer = LDAdamW(groups, **RECIPE)
    losses = []
    for x, y in batches(30):
        x, y = x[:, :16], y.repeat(1, 2)
        losses.append(backward(model, x, y))
        optimizer.step()
        optimizer.zero_grad()
    assert all(math.isfinite(loss) for loss in losses) and losses[-1] < losses[0]


# --- the first step in closed form (spec §3) ------------------------------------------------------------------


@pytest.mark.parametrize("shape", [(12, 7), (7, 12), (9, 9)])
def test_first_step_closed_form(shape):
    """P = top-r left singular vectors of X, W1 = W0 (1 - lr wd) - lr P (g/(|g| + eps)) with g = P^T X, and the
    error buffer (I - P P^T) X; X = G^T for the right-projected (12, 7)."""
    lr, wd, eps, rank = 1e-2, 0.1, 1e-8, 3
    gen = torch.Generator().manual_seed(5)
    w = torch.randn(shape, generator=gen, dtype=torch.float64, requires_grad=True)
    w0 = w.detach().clone()
    grad = torch.randn(shape, generator=gen, dtype=torch.float64)
    optimizer = LDAdamW(
        [{"params": [w], "enable_lowrank": True}], lr=lr, weight_decay=wd, eps=eps, rank=rank, decomp_dtype="param"
    )
    w.grad = grad.clone()
    optimizer.step()

    x = grad.T if shape[0] > shape[1] else grad
    u = torch.linalg.svd(x, full_matrices=False).U[:, :rank]
    g_low = u.T @ x
    step = u @ (g_low / (g_low.abs() + eps))
    expected = w0 * (1 - lr * wd) - lr * (step.T if shape[0] > shape[1] else step)
    torch.testing.assert_close(w.detach(), expected, atol=1e-12, rtol=0)
    state = optimizer.state[w]
    torch.testing.assert_close(state["projector"] @ state["projector"].T, u @ u.T, atol=1e-12, rtol=0)
    error = x - u @ u.T @ x
    torch.testing.assert_close(state["error"], error.T if shape[0] > shape[1] else error, atol=1e-12, rtol=0)


# --- resume -----------------------------------------------------------------------------------------------------


def run_recipe(model, optimizer, data, zero_grad=None):
    for x, y in data:
        backward(model, x, y)
        optimizer.step()
        (zero_grad or optimizer.zero_grad)()


@pytest.mark.parametrize("options", [dict(), dict(step_counter="per_param", proj_method="svd")])
def test_resume_after_10_steps_equals_20_straight_steps_bit_for_bit(options):
    data = list(batches(20))
    straight_model = recipe_model()
    straight = LDAdamW(recipe_groups(straight_model), **RECIPE, **options)
    run_recipe(straight_model, straight, data)

    first_model = recipe_model()
    first = LDAdamW(recipe_groups(first_model), **RECIPE, **options)
    run_recipe(first_model, first, data[:10])
    buffer = io.BytesIO()
    torch.save({"model": first_model.state_dict(), "optimizer": first.state_dict()}, buffer)
    buffer.seek(0)
    saved = torch.load(buffer, weights_only=True)
    resumed_model = recipe_model()
    resumed_model.load_state_dict(saved["model"])
    resumed = LDAdamW(recipe_groups(resumed_model), **RECIPE, **options)
    resumed.load_state_dict(saved["optimizer"])
    run_recipe(resumed_model, resumed, data[10:])

    for a, b in zip(straight_model.parameters(), resumed_model.parameters()):
        assert torch.equal(a, b)
    for p, q in zip(straight_model.parameters(), resumed_model.parameters()):
        assert straight.state[p].keys() == resumed.state[q].keys()
        for key, value in straight.state[p].items():
            assert (
                torch.equal(value, resumed.state[q][key]) if torch.is_tensor(value) else value == resumed.state[q][key]
            )
    assert resumed.param_groups[0]["completed_steps"] == 20


def test_the_official_code_does_not_resume():
    """Documents spec §8 #1: the official state_dict keeps m and v but neither k nor the error buffer, so a resumed
    run restarts at k = 0 with P = 0 and ends far from the straight run."""
    data = list(batches(20))
    straight_model = recipe_model()
    run_recipe(straight_model, OfficialLDAdamW(recipe_groups(straight_model), **RECIPE), data)
    first_model = recipe_model()
    first = OfficialLDAdamW(recipe_groups(first_model), **RECIPE)
    run_recipe(first_model, first, data[:10])
    resumed_model = copy.deepcopy(first_model)
    for p in resumed_model.parameters():
        p.grad = None  # a new process: the buffer in p.grad is gone
    resumed = OfficialLDAdamW(recipe_groups(resumed_model), **RECIPE)
    for old, new in zip(first.entries, resumed.entries):
        new["m"], new["v"] = old["m"].clone(), old["v"].clone()
    run_recipe(resumed_model, resumed, data[10:])
    assert max_difference(straight_model, resumed_model) > 1e-3


def test_state_dtype_float32_survives_a_resume_of_bf16_params():
    model = recipe_model(torch.bfloat16)
    optimizer = LDAdamW(recipe_groups(model), state_dtype=torch.float32, **RECIPE)
    run_recipe(model, optimizer, batches(3, torch.bfloat16))
    assert all(t.dtype == torch.float32 for s in optimizer.state.values() for t in s.values() if torch.is_tensor(t))
    resumed = LDAdamW(recipe_groups(model), state_dtype="float32", **RECIPE)
    resumed.load_state_dict(copy.deepcopy(optimizer.state_dict()))
    for p in model.parameters():
        for key, value in optimizer.state[p].items():
            if torch.is_tensor(value):
                assert resumed.state[p][key].dtype == torch.float32 and torch.equal(resumed.state[p][key], value)


def test_a_state_dict_without_the_format_version_is_refused():
    model = recipe_model()
    optimizer = LDAdamW(recipe_groups(model), **RECIPE)
    saved = optimizer.state_dict()
    for group in saved["param_groups"]:
        del group["format_version"]
    with pytest.raises(ValueError, match="format"):
        optimizer.load_state_dict(saved)


# --- error feedback and zero_grad ---------------------------------------------------------------------------------


@pytest.mark.parametrize("how", ["set_to_none", "model", "accelerate"])
def test_error_feedback_survives_zero_grad(how):
    """With the buffer in the optimizer state, every way of clearing gradients keeps the official trajectory."""
    ours_model, ref_model = recipe_model(), recipe_model()
    ours = LDAdamW(recipe_groups(ours_model), **RECIPE)
    ref = OfficialLDAdamW(recipe_groups(ref_model), **RECIPE)
    clear = {"set_to_none": lambda: ours.zero_grad(set_to_none=True), "model": ours_model.zero_grad}.get(how)
    run_recipe(ref_model, ref, batches(20))
    if how == "accelerate":  # AcceleratedOptimizer round-trips the state_dict and passes set_to_none through
        from accelerate import Accelerator
        from accelerate.state import AcceleratorState

        try:
            ours_model, ours = Accelerator(cpu=True).prepare(ours_model, ours)
            run_recipe(ours_model, ours, batches(20))
        finally:
            AcceleratorState._reset_state(True)
    else:
        run_recipe(ours_model, ours, batches(20), zero_grad=clear)
    assert max_difference(ours_model, ref_model) <= 1e-10


def test_grad_storage_keeps_the_buffer_in_p_grad_and_loses_it_to_model_zero_grad():
    model = recipe_model()
    optimizer = LDAdamW(recipe_groups(model), ef_storage="grad", **RECIPE)
    x, y = next(batches(1))
    backward(model, x, y)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    assert all(p.grad is not None for p in weights(model)), "the error buffer lives in p.grad"
    assert all(p.grad is None for n, p in model.named_parameters() if n.endswith("bias"))
    assert not any("error" in optimizer.state[p] for p in weights(model))
    model.zero_grad()
    assert all(p.grad is None for p in weights(model))


@pytest.mark.parametrize("ef_storage", ["state", "grad"])
def test_maximize_equals_minimizing_the_negated_loss(ef_storage):
    up_model, down_model = recipe_model(), recipe_model()
    up = LDAdamW(recipe_groups(up_model), maximize=True, ef_storage=ef_storage, **RECIPE)
    down = LDAdamW(recipe_groups(down_model), ef_storage=ef_storage, **RECIPE)
    for x, y in batches(10):
        (-nn.functional.mse_loss(up_model(x), y)).backward()
        nn.functional.mse_loss(down_model(x), y).backward()
        up.step()
        down.step()
        up.zero_grad()
        down.zero_grad()
    assert max_difference(up_model, down_model) <= 1e-12


def test_svd_lowrank_runs_and_is_reproducible_under_one_seed():
    finals = []
    for _ in range(2):
        model = recipe_model()
        optimizer = LDAdamW(recipe_groups(model, proj_method="svd_lowrank"), **RECIPE)
        torch.manual_seed(7)
        run_recipe(model, optimizer, batches(10))
        finals.append([p.detach().clone() for p in model.parameters()])
    assert all(torch.equal(a, b) and torch.isfinite(a).all() for a, b in zip(*finals))


# --- construction -------------------------------------------------------------------------------------------------


def test_validation_errors_and_warnings():
    matrix, vector = torch.zeros(6, 4, requires_grad=True), torch.zeros(4, requires_grad=True)
    with pytest.raises(ValueError, match="2-D matrices only"):
        LDAdamW([{"params": [vector], "enable_lowrank": True}])
    with pytest.raises(ValueError, match=r"rank 5 exceeds min\(m, n\) = 4 for a 6x4 matrix"):
        LDAdamW([{"params": [matrix], "enable_lowrank": True, "rank": 5}])
    with pytest.raises(ValueError, match="rho"):
        LDAdamW([{"params": [matrix], "enable_lowrank": True, "rank": 2, "rho": 1.5}])  # groups are validated
    with pytest.warns(UserWarning, match="rank 4 equals min"):
        LDAdamW([{"params": [matrix], "enable_lowrank": True, "rank": 4}])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        LDAdamW([{"params": [torch.zeros(6, requires_grad=False)], "enable_lowrank": True}])  # frozen: skipped
        LDAdamW([matrix, vector], betas=[0.9, 0.99])  # a list is fine (official: ValueError)
    optimizer = LDAdamW([matrix], rank=2)
    with pytest.raises(ValueError, match="2-D"):
        optimizer.add_param_group({"params": [vector], "enable_lowrank": True})
    assert len(optimizer.param_groups) == 1, "a rejected group is not kept"


def test_group_betas_and_the_official_beta1_beta2_keys():
    p, q, s = (torch.zeros(3, requires_grad=True) for _ in range(3))
    optimizer = LDAdamW(
        [{"params": [p], "betas": (0.5, 0.9)}, {"params": [q], "beta1": 0.7}, {"params": [s]}], betas=(0.8, 0.95)
    )
    assert [g["betas"] for g in optimizer.param_groups] == [(0.5, 0.9), (0.7, 0.95), (0.8, 0.95)]
    with pytest.raises(ValueError, match="one or the other"):
        LDAdamW([{"params": [p], "betas": (0.5, 0.9), "beta2": 0.99}])
    alone = torch.zeros(3, requires_grad=True)
    reference = torch.optim.AdamW([alone], betas=(0.5, 0.9), weight_decay=0.0)
    for _ in range(5):
        for x in (p, q, s, alone):
            x.grad = torch.linspace(-1, 1, 3)
        optimizer.step()
        reference.step()
    torch.testing.assert_close(p, alone, atol=1e-7, rtol=0)


def test_state_is_lazy_and_follows_the_parameter():
    model = recipe_model(torch.float32)
    optimizer = LDAdamW(recipe_groups(model), **RECIPE)
    assert not optimizer.state
    model.double()
    x, y = next(batches(1))
    backward(model, x, y)
    optimizer.step()
    assert all(t.dtype == torch.float64 for s in optimizer.state.values() for t in s.values() if torch.is_tensor(t))


# --- groups for a model, registry, memory -------------------------------------------------------------------------


def test_ldadam_param_groups_on_tiny_llama(capsys):
    from adamlab.models import load_model

    model = load_model("tiny-llama").model
    groups = ldadam_param_groups(model, rank=8, rho=0.5, verbose=True)
    names = {id(p): n for n, p in model.named_parameters()}
    lowrank, decay, no_decay = ([names[id(p)] for p in g["params"]] for g in groups)
    assert groups[0]["enable_lowrank"] and groups[0]["rank"] == 8 and groups[0]["rho"] == 0.5
    assert len(lowrank) == 14 and all(n.split(".")[-2].endswith("proj") for n in lowrank)
    assert sorted(decay) == ["lm_head.weight", "model.embed_tokens.weight"]
    assert all("norm" in n for n in no_decay) and groups[2]["weight_decay"] == 0.0
    printed = capsys.readouterr().out
    assert "model.layers.0.self_attn.q_proj.weight" in printed and "14 low-rank matrices" in printed
    _, summary = ldadam_param_groups(model, rank=8, return_summary=True)
    assert summary == printed.rstrip("\n")

    optimizer = create_optimizer("ldadam", model, lr=1e-3, rank=8, weight_decay=0.1)
    assert isinstance(optimizer, LDAdamW)
    assert [g["weight_decay"] for g in optimizer.param_groups] == [0.1, 0.1, 0.0]


def test_lora_factors_go_low_rank_only_below_the_lora_rank():
    from adamlab.models import LoraSettings, apply_lora, load_model

    model = apply_lora(load_model("tiny-llama"), LoraSettings(r=8)).model
    groups = ldadam_param_groups(model, rank=4)
    assert groups[0]["enable_lowrank"] and all(
        "lora_" in n for n, p in model.named_parameters() if any(p is q for q in groups[0]["params"])
    )
    assert sum(p.requires_grad for p in model.parameters()) == len(groups[0]["params"])
    with pytest.warns(UserWarning, match="no matrix goes low-rank"):
        groups = ldadam_param_groups(model, rank=8)
    assert not any(g["enable_lowrank"] for g in groups)


def test_rank_16_state_of_a_512_matrix_is_under_5_percent_of_adamw():
    def state_bytes(factory):
        w = torch.zeros(512, 512, requires_grad=True)
        optimizer = factory(w)
        w.grad = torch.randn(512, 512, generator=torch.Generator().manual_seed(0))
        optimizer.step()
        return optimizer_state_bytes(optimizer)

    def ldadam(**options):
        return lambda w: LDAdamW([{"params": [w], "enable_lowrank": True}], rank=16, **options)

    adamw = state_bytes(lambda w: torch.optim.AdamW([w]))
    assert adamw >= 2 * 512 * 512 * 4
    # m, v: 16 x 512 each; P: 512 x 16; float32
    lean = 3 * 16 * 512 * 4
    assert state_bytes(ldadam(error_feedback=False)) == lean
    assert state_bytes(ldadam(ef_storage="grad")) == lean  # the buffer lives in p.grad, as in the official code
    assert lean / adamw <= 0.05
    # The default keeps the buffer in the state, so it survives zero_grad: one more 512 x 512 tensor.
    assert state_bytes(ldadam()) == lean + 512 * 512 * 4


# --- adamlab train ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("lora", ["full", "lora"])
def test_adamlab_train_runs_ldadam(tmp_path, lora):
    """Full fine-tuning puts every attention/MLP matrix low-rank at rank 8; with LoRA (r = 16) the factors are
    16 on their small side, so rank 4 compresses them."""
    from adamlab.models import LoraSettings
    from adamlab.training import TrainConfig, train

    config = TrainConfig(
        model="tiny-llama",
        task="ag_news",
        out=str(tmp_path),
        optimizer="ldadam",
        lr=1e-3,
        optimizer_args={"rank": 8 if lora == "full" else 4, "weight_decay": 0.01},
        steps=3,
        batch_size=4,
        train_limit=16,
        eval_limit=4,
        max_seq_len=64,
        lora=None if lora == "full" else LoraSettings(),
    )
    result = train(config, show_progress=False)
    assert result.status == "done"
    record = json.loads((tmp_path / "result.json").read_text())
    assert record["optimizer"]["class"] == "LDAdamW"
    assert record["optimizer"]["param_groups"][0]["enable_lowrank"] is True


@pytest.mark.parametrize("foreach", [False, True])
def test_complex_params_train_in_adamw_groups_as_real_pairs(foreach):
    """Complex params step as their real pairs in the AdamW groups (state_dtype widening included) and are
    rejected when a low-rank group is added."""
    gen = torch.Generator().manual_seed(0)
    complex_params = [torch.randn(shape, generator=gen, dtype=torch.complex128).requires_grad_()
                      for shape in [(4, 3), (5,)]]
    real_params = [torch.view_as_real(p.detach()).clone().requires_grad_() for p in complex_params]
    on_complex = LDAdamW(complex_params, lr=1e-2, weight_decay=0.1, foreach=foreach)
    on_real = LDAdamW(real_params, lr=1e-2, weight_decay=0.1, foreach=foreach)
    for _ in range(5):
        for c, r in zip(complex_params, real_params):
            c.grad = torch.randn(c.shape, generator=gen, dtype=torch.complex128)
            r.grad = torch.view_as_real(c.grad).clone()
        on_complex.step()
        on_real.step()
    for c, r in zip(complex_params, real_params):
        assert torch.equal(torch.view_as_real(c.detach()), r.detach())
    matrix = torch.zeros(4, 3, dtype=torch.complex64, requires_grad=True)
    with pytest.raises(ValueError, match="enable_lowrank=True does not support complex parameters"):
        on_complex.add_param_group({"params": [matrix], "enable_lowrank": True, "rank": 2})
    assert len(on_complex.param_groups) == 1
