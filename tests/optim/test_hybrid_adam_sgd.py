"""HybridAdamSGD checks beyond the shared table: the spec's §7 tests (docs/hybrid_adam_sgd.md) and the adamlab
additions (§6): a literal transcription of §3, beta precedence, branch-norm log, variants, preset."""

import pytest
import torch

from adamlab.optim.hybrid_adam_sgd import BranchNorms, HybridAdamSGD

GOLDEN = dict(lr=0.1, betas=(0.9, 0.999), momentum=0.9, eps=1e-8, transition_steps=10, final_ratio=0.1)
# spec §7.1: step -> (a_t, p_t); weight_decay 0, then 0.1
GOLDEN_NO_DECAY = {
    1: (0.91, 0.904500001820),
    2: (0.82, 0.805400003460),
    3: (0.73, 0.695815004920),
    5: (0.55, 0.422773257300),
    10: (0.10, -0.754295354710),
    12: (0.10, -1.405987294653),
}
GOLDEN_DECAY = {1: 0.894500001820, 2: 0.786455003442, 10: -0.791888686178, 12: -1.424634188950}
SPEC_B = {1: 0.5, 2: 0.95, 3: 1.355, 5: 2.04755, 10: 3.256608, 12: 3.587852}  # rounded to 6 decimals in the spec


def random_params(seed=0, shapes=((4, 3), (7,), (0,), (2, 3, 2))):
    gen = torch.Generator().manual_seed(seed)
    return [torch.randn(shape, generator=gen, dtype=torch.float64).requires_grad_() for shape in shapes]


def set_random_grads(params, step, skip=()):
    gen = torch.Generator().manual_seed(1000 + step)
    for i, p in enumerate(params):
        grad = torch.randn(p.shape, generator=gen, dtype=torch.float64)
        p.grad = None if i in skip else grad


def spec_step(p, grad, state, *, lr, betas, momentum, eps, weight_decay, transition_steps, final_ratio,
              sgd_dampening=False, sgd_lr_scale=1.0):
    """spec §3, line by line, in its order of operations (plus the two §6 variants)."""
    beta1, beta2 = betas
    state["step"] += 1
    t = state["step"]
    if weight_decay != 0:
        p.mul_(1 - lr * weight_decay)
    state["m"].mul_(beta1).add_(grad, alpha=1 - beta1)
    state["v"].mul_(beta2).add_(grad * grad, alpha=1 - beta2)
    bc1, bc2 = 1 - beta1**t, 1 - beta2**t
    denom = state["v"].sqrt() / bc2**0.5 + eps
    adam = (state["m"] / bc1) / denom
    state["b"].mul_(momentum).add_(grad, alpha=1 - momentum if sgd_dampening else 1)
    a = 1 - min(t / transition_steps, 1) * (1 - final_ratio)
    p.add_(a * adam + sgd_lr_scale * (1 - a) * state["b"], alpha=-lr)
    return a * adam, sgd_lr_scale * (1 - a) * state["b"]


def new_spec_state(p):
    return dict(step=0, m=torch.zeros_like(p), v=torch.zeros_like(p), b=torch.zeros_like(p))


# --- §7.1 golden scalar trajectory --------------------------------------------------------------------------


@pytest.mark.parametrize("foreach", [False, True])
def test_golden_trajectory_without_decay(foreach):
    p = torch.tensor([1.0], dtype=torch.float64, requires_grad=True)
    optimizer = HybridAdamSGD([p], weight_decay=0.0, foreach=foreach, **GOLDEN)
    for t in range(1, 13):
        p.grad = torch.tensor([0.5], dtype=torch.float64)
        optimizer.step()
        b = optimizer.state[p]["momentum_buf"].item()
        assert b == pytest.approx(0.5 * (1 - 0.9**t) / (1 - 0.9), abs=1e-12)  # b_t = g (1 - mu^t) / (1 - mu)
        if t in GOLDEN_NO_DECAY:
            a_t, p_t = GOLDEN_NO_DECAY[t]
            assert optimizer.hybrid_ratio() == pytest.approx(a_t, abs=1e-15)
            assert b == pytest.approx(SPEC_B[t], abs=5e-7)
            assert p.item() == pytest.approx(p_t, abs=1e-12)


@pytest.mark.parametrize("foreach", [False, True])
def test_golden_trajectory_with_decay(foreach):
    p = torch.tensor([1.0], dtype=torch.float64, requires_grad=True)
    optimizer = HybridAdamSGD([p], weight_decay=0.1, foreach=foreach, **GOLDEN)
    for t in range(1, 13):
        p.grad = torch.tensor([0.5], dtype=torch.float64)
        optimizer.step()
        if t in GOLDEN_DECAY:
            assert p.item() == pytest.approx(GOLDEN_DECAY[t], abs=1e-12)


# --- §7.2, §7.3: the two limits, at the spec's 1e-12 (the table compares at 1e-10) -------------------------


@pytest.mark.parametrize("foreach", [False, True])
def test_final_ratio_one_is_adamw(foreach):
    ours_params, ref_params = random_params(), random_params()
    hparams = dict(lr=1e-2, betas=(0.85, 0.99), eps=1e-7, weight_decay=0.05)
    ours = HybridAdamSGD(ours_params, final_ratio=1.0, transition_steps=3, foreach=foreach, **hparams)
    ref = torch.optim.AdamW(ref_params, **hparams)
    for step in range(50):
        set_random_grads(ours_params, step)
        set_random_grads(ref_params, step)
        ours.step()
        ref.step()
    for a, b in zip(ours_params, ref_params):
        torch.testing.assert_close(a, b, atol=1e-12, rtol=0)


@pytest.mark.parametrize("foreach", [False, True])
def test_final_ratio_zero_one_transition_step_no_decay_is_sgd_with_momentum(foreach):
    ours_params, ref_params = random_params(), random_params()
    ours = HybridAdamSGD(
        ours_params, lr=1e-2, momentum=0.8, weight_decay=0.0, final_ratio=0.0, transition_steps=1, foreach=foreach
    )
    ref = torch.optim.SGD(ref_params, lr=1e-2, momentum=0.8, dampening=0, nesterov=False)
    for step in range(50):
        set_random_grads(ours_params, step)
        set_random_grads(ref_params, step)
        ours.step()
        ref.step()
        assert ours.hybrid_ratio() == 0.0
    for a, b in zip(ours_params, ref_params):
        torch.testing.assert_close(a, b, atol=1e-12, rtol=0)
    for p, q in zip(ours_params, ref_params):
        torch.testing.assert_close(ours.state[p]["momentum_buf"], ref.state[q]["momentum_buffer"], atol=1e-12, rtol=0)


# --- §3 transcribed literally: the blend phase, per-parameter counters and variants ----------------------------


@pytest.mark.parametrize("foreach", [False, True])
@pytest.mark.parametrize(
    "variant", [dict(), dict(sgd_dampening=True), dict(sgd_lr_scale=0.25)], ids=["plain", "dampening", "lr_scale"]
)
def test_matches_literal_transcription_of_the_spec(foreach, variant):
    hparams = dict(
        lr=1e-2, betas=(0.9, 0.999), momentum=0.9, eps=1e-8, weight_decay=0.01, transition_steps=30, final_ratio=0.1
    )
    ours_params, spec_params = random_params(), random_params()
    ours = HybridAdamSGD(ours_params, foreach=foreach, **hparams, **variant)
    spec_states = [new_spec_state(p) for p in spec_params]
    for step in range(50):
        skip = (1,) if step % 4 == 0 else ()  # param 1 misses every 4th gradient: its counter lags
        set_random_grads(ours_params, step, skip)
        set_random_grads(spec_params, step, skip)
        ours.step()
        with torch.no_grad():
            for i, (p, state) in enumerate(zip(spec_params, spec_states)):
                if i not in skip:
                    spec_step(p, p.grad, state, **hparams, **variant)
    for p, q, state in zip(ours_params, spec_params, spec_states):
        torch.testing.assert_close(p, q, atol=1e-12, rtol=0)
        assert ours.state[p]["step"] == state["step"]
        torch.testing.assert_close(ours.state[p]["momentum_buf"], state["b"], atol=1e-12, rtol=0)
    assert ours.state[ours_params[1]]["step"] == 50 - 13


# --- §7.4: the reference's own tests ---------------------------------------------------------------------------


def run_constant_grad(optimizer, p, steps):
    for _ in range(steps):
        p.grad = torch.ones_like(p)
        optimizer.step()


def test_ratio_is_strictly_between_final_ratio_and_one_midway():
    p = torch.zeros(3, requires_grad=True)
    optimizer = HybridAdamSGD([p], transition_steps=100, final_ratio=0.1)
    run_constant_grad(optimizer, p, 50)
    assert 0.1 < optimizer.hybrid_ratio() < 1.0
    assert optimizer.hybrid_ratio() == pytest.approx(0.55, abs=1e-12)


def test_ratio_reaches_final_ratio_after_the_transition():
    p = torch.zeros(3, requires_grad=True)
    optimizer = HybridAdamSGD([p], transition_steps=100, final_ratio=0.1)
    run_constant_grad(optimizer, p, 150)
    assert optimizer.hybrid_ratio() == pytest.approx(0.1, abs=0.01)


def test_params_change_after_one_step():
    p = torch.randn(5, requires_grad=True)
    before = p.detach().clone()
    optimizer = HybridAdamSGD([p])
    p.grad = torch.randn(5)
    optimizer.step()
    assert not torch.equal(p.detach(), before)


def test_all_hyperparameters_are_in_param_groups():
    optimizer = HybridAdamSGD([torch.zeros(2, requires_grad=True)])
    group = optimizer.param_groups[0]
    for key in ("lr", "beta1", "beta2", "momentum", "eps", "weight_decay", "transition_steps", "final_ratio"):
        assert key in group
    assert group["betas"] == (group["beta1"], group["beta2"]) == (0.9, 0.999)


# --- §7.5: per-parameter counters ------------------------------------------------------------------------------


@pytest.mark.parametrize("foreach", [False, True])
def test_a_parameter_without_gradient_lags_by_the_steps_it_missed(foreach):
    lagging, regular = torch.ones(3, requires_grad=True), torch.ones(4, requires_grad=True)
    optimizer = HybridAdamSGD([lagging, regular], transition_steps=20, foreach=foreach)
    missed, total = 4, 10
    solo_param = torch.ones(3, requires_grad=True)
    solo = HybridAdamSGD([solo_param], transition_steps=20, foreach=foreach)
    for step in range(total):
        regular.grad = torch.full_like(regular, 0.5)
        lagging.grad = None if step < missed else torch.full_like(lagging, 0.5 + step)
        optimizer.step()
        if step >= missed:
            solo_param.grad = torch.full_like(solo_param, 0.5 + step)
            solo.step()
    assert optimizer.state[regular]["step"] - optimizer.state[lagging]["step"] == missed
    # hybrid_ratio() reads the first parameter of the first group with state: the lagging one
    assert optimizer.hybrid_ratio() == pytest.approx(1 - (total - missed) / 20 * 0.9, abs=1e-15)
    assert torch.equal(lagging, solo_param)


# --- §7.6: validation ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "hparams,match",
    [
        (dict(transition_steps=0), "transition_steps"),
        (dict(transition_steps=2.5), "transition_steps"),
        (dict(transition_steps=True), "transition_steps"),
        (dict(final_ratio=1.5), "final_ratio"),
        (dict(momentum=1.0), "momentum"),
        (dict(lr=float("inf")), "learning rate"),
        (dict(lr=torch.tensor(1e-3)), "lr must be a Python float"),
    ],
)
def test_invalid_hyperparameters_raise(hparams, match):
    with pytest.raises(ValueError, match=match):
        HybridAdamSGD([torch.zeros(2, requires_grad=True)], **hparams)


def test_eps_zero_is_allowed():
    HybridAdamSGD([torch.zeros(2, requires_grad=True)], eps=0.0)


@pytest.mark.parametrize(
    "override,match",
    [(dict(final_ratio=2.0), "final_ratio"), (dict(beta1=1.0), "beta1"), (dict(betas=(0.9, 1.0)), "beta")],
)
def test_invalid_group_overrides_raise(override, match):
    with pytest.raises(ValueError, match=match):
        HybridAdamSGD([{"params": [torch.zeros(2, requires_grad=True)], **override}])


@pytest.mark.parametrize("foreach", [False, True])
def test_sparse_gradient_raises_and_leaves_the_counters(foreach):
    dense, sparse = torch.zeros(3, requires_grad=True), torch.zeros(3, requires_grad=True)
    optimizer = HybridAdamSGD([dense, sparse], foreach=foreach)
    dense.grad = torch.ones(3)
    sparse.grad = torch.ones(3).to_sparse()
    with pytest.raises(RuntimeError, match="sparse"):
        optimizer.step()
    assert optimizer.state[dense]["step"] == 0 and torch.equal(dense, torch.zeros(3))


# --- §7.7: scheduler composition -------------------------------------------------------------------------------

# Each setting isolates one term of the update: the Adam branch (a = 1), the SGD branch (a = 0), the decay (g = 0).
BRANCHES = {
    "adam": (dict(final_ratio=1.0, weight_decay=0.0), 1.0),
    "sgd": (dict(final_ratio=0.0, transition_steps=1, weight_decay=0.0), 1.0),
    "decay": (dict(weight_decay=0.3), 0.0),
}


@pytest.mark.parametrize("branch", BRANCHES)
@pytest.mark.parametrize("foreach", [False, True])
def test_lambda_lr_halving_halves_each_term(branch, foreach):
    hparams, grad_scale = BRANCHES[branch]
    start = torch.randn(6, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    moves = {}
    for halved in (False, True):
        p = start.clone().requires_grad_()
        optimizer = HybridAdamSGD([p], lr=0.1, foreach=foreach, **hparams)
        if halved:
            torch.optim.lr_scheduler.LambdaLR(optimizer, lambda epoch: 0.5)
            assert optimizer.param_groups[0]["lr"] == 0.05
        p.grad = torch.full_like(p, grad_scale)
        optimizer.step()
        moves[halved] = p.detach() - start
    assert moves[False].abs().min() > 0
    torch.testing.assert_close(moves[True], 0.5 * moves[False], atol=0, rtol=1e-12)


# --- §6: betas, diagnostics, variants, preset, state ----------------------------------------------------------


def test_group_beta1_beta2_written_for_the_reference_override_betas():
    params = random_params()
    optimizer = HybridAdamSGD(
        [{"params": params[:2], "beta1": 0.5}, {"params": params[2:], "betas": (0.8, 0.9), "beta2": 0.95}],
        betas=(0.9, 0.999),
    )
    first, second = optimizer.param_groups
    assert (first["betas"], first["beta1"], first["beta2"]) == ((0.5, 0.999), 0.5, 0.999)
    assert (second["betas"], second["beta1"], second["beta2"]) == ((0.8, 0.95), 0.8, 0.95)
    assert optimizer.defaults["beta1"] == 0.9 and optimizer.defaults["beta2"] == 0.999


def test_group_override_in_reference_form_runs_like_betas():
    reference_form, betas_form = random_params(), random_params()
    a = HybridAdamSGD([{"params": reference_form, "beta1": 0.7, "beta2": 0.99}])
    b = HybridAdamSGD(betas_form, betas=(0.7, 0.99))
    for step in range(5):
        set_random_grads(reference_form, step)
        set_random_grads(betas_form, step)
        a.step()
        b.step()
    for p, q in zip(reference_form, betas_form):
        assert torch.equal(p, q)


def test_betas_edited_after_construction_are_used_and_mirrored():
    edited, fresh = random_params(), random_params()
    a = HybridAdamSGD(edited, lr=1e-2)
    a.param_groups[0]["betas"] = (0.5, 0.9)  # as OneCycleLR(cycle_momentum=True) does
    b = HybridAdamSGD(fresh, lr=1e-2, betas=(0.5, 0.9))
    for step in range(3):
        set_random_grads(edited, step)
        set_random_grads(fresh, step)
        a.step()
        b.step()
    assert (a.param_groups[0]["beta1"], a.param_groups[0]["beta2"]) == (0.5, 0.9)
    for p, q in zip(edited, fresh):
        assert torch.equal(p, q)


def test_hybrid_ratio_before_any_step_and_without_groups():
    optimizer = HybridAdamSGD([torch.zeros(2, requires_grad=True)])
    assert optimizer.hybrid_ratio() == 1.0
    optimizer.param_groups.clear()
    assert optimizer.hybrid_ratio() == 0.0


@pytest.mark.parametrize("foreach", [False, True])
def test_branch_norms_are_opt_in_and_match_the_spec(foreach):
    hparams = dict(lr=1e-2, transition_steps=10, final_ratio=0.1, sgd_lr_scale=0.5)
    plain_params, tracked_params, spec_params = random_params(), random_params(), random_params()
    plain = HybridAdamSGD(plain_params, foreach=foreach, **hparams)
    tracked = HybridAdamSGD(tracked_params, foreach=foreach, track_branch_norms=True, **hparams)
    spec_states = [new_spec_state(p) for p in spec_params]
    spec_hparams = dict(betas=(0.9, 0.999), momentum=0.9, eps=1e-8, weight_decay=0.01, **hparams)
    for step in range(12):
        for params in (plain_params, tracked_params, spec_params):
            set_random_grads(params, step)
        plain.step()
        tracked.step()
        with torch.no_grad():
            branches = [spec_step(p, p.grad, s, **spec_hparams) for p, s in zip(spec_params, spec_states)]
        logged = tracked.branch_norms[-1]
        assert isinstance(logged, BranchNorms) and logged.adam.dim() == 0 and logged.adam.dtype == torch.float64
        adam_norm = torch.linalg.vector_norm(torch.cat([adam.flatten() for adam, _ in branches]))
        sgd_norm = torch.linalg.vector_norm(torch.cat([sgd.flatten() for _, sgd in branches]))
        torch.testing.assert_close(logged.adam, adam_norm, atol=0, rtol=1e-12)
        torch.testing.assert_close(logged.sgd, sgd_norm, atol=0, rtol=1e-12)
    assert plain.branch_norms == [] and len(tracked.branch_norms) == 12
    for p, q in zip(plain_params, tracked_params):
        assert torch.equal(p, q)


def test_branch_norms_foreach_and_single_agree():
    logs = []
    for foreach in (False, True):
        params = random_params()
        optimizer = HybridAdamSGD(params, lr=1e-2, transition_steps=5, track_branch_norms=True, foreach=foreach)
        for step in range(8):
            set_random_grads(params, step)
            optimizer.step()
        logs.append(optimizer.branch_norms)
    for single, multi in zip(*logs):
        torch.testing.assert_close(single.adam, multi.adam, atol=1e-12, rtol=0)
        torch.testing.assert_close(single.sgd, multi.sgd, atol=1e-12, rtol=0)


def test_variants_are_off_by_default_and_named_in_the_label():
    p = torch.zeros(2, requires_grad=True)
    default = HybridAdamSGD([p])
    assert default.defaults["sgd_dampening"] is False and default.defaults["sgd_lr_scale"] == 1.0
    assert default.label() == "hybrid_adam_sgd"
    assert HybridAdamSGD([p], sgd_dampening=True).label() == "hybrid_adam_sgd[sgd_dampening]"
    both = HybridAdamSGD([p], sgd_dampening=True, sgd_lr_scale=0.1)
    assert both.label() == "hybrid_adam_sgd[sgd_dampening,sgd_lr_scale=0.1]"


def test_state_is_an_int_step_and_tensors_in_the_param_dtype():
    p = torch.randn(4, dtype=torch.bfloat16, requires_grad=True)
    optimizer = HybridAdamSGD([p])
    p.grad = torch.randn(4, dtype=torch.bfloat16)
    optimizer.step()
    saved = optimizer.state_dict()
    resumed = HybridAdamSGD([p])
    resumed.load_state_dict(saved)
    state = resumed.state[p]
    assert type(state["step"]) is int and state["step"] == 1
    assert {state[key].dtype for key in ("exp_avg", "exp_avg_sq", "momentum_buf")} == {torch.bfloat16}
