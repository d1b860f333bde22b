"""CAME-specific checks: hand-computed steps, factored state shapes and memory, clipping, the unfactored
branch, >2-D factoring over the last two dims, zero-size params."""

from __future__ import annotations

import math

import pytest
import torch

from adamlab.optim.came import CAME

BETAS = (0.9, 0.999, 0.9999)
EPS = (1e-30, 1e-16)


def mean(xs):
    return sum(xs) / len(xs)


def came_matrix_by_hand(p, grads, *, lr, betas=BETAS, eps=EPS, d=1.0, weight_decay=0.0):
    """came-pytorch's factored step on an n x m matrix (lists of rows), in Python floats."""
    beta1, beta2, beta3 = betas
    n, m_ = len(p), len(p[0])
    p = [row[:] for row in p]
    exp_avg = [[0.0] * m_ for _ in range(n)]
    r, c, big_r, big_c = [0.0] * n, [0.0] * m_, [0.0] * n, [0.0] * m_
    for g in grads:
        sq = [[g[i][j] ** 2 + eps[0] for j in range(m_)] for i in range(n)]
        r = [beta2 * r[i] + (1 - beta2) * mean(sq[i]) for i in range(n)]
        c = [beta2 * c[j] + (1 - beta2) * mean([sq[i][j] for i in range(n)]) for j in range(m_)]
        u = [[g[i][j] / math.sqrt(r[i] / mean(r) * c[j]) for j in range(m_)] for i in range(n)]
        rms = math.sqrt(mean([x * x for row in u for x in row]))
        u = [[x / max(1.0, rms / d) for x in row] for row in u]
        exp_avg = [[beta1 * exp_avg[i][j] + (1 - beta1) * u[i][j] for j in range(m_)] for i in range(n)]
        res = [[(u[i][j] - exp_avg[i][j]) ** 2 + eps[1] for j in range(m_)] for i in range(n)]
        big_r = [beta3 * big_r[i] + (1 - beta3) * mean(res[i]) for i in range(n)]
        big_c = [beta3 * big_c[j] + (1 - beta3) * mean([res[i][j] for i in range(n)]) for j in range(m_)]
        step = [[exp_avg[i][j] / math.sqrt(big_r[i] / mean(big_r) * big_c[j]) for j in range(m_)] for i in range(n)]
        p = [[p[i][j] * (1 - lr * weight_decay) - lr * step[i][j] for j in range(m_)] for i in range(n)]
    return p, exp_avg, (r, c, big_r, big_c)


def came_vector_by_hand(p, grads, *, lr, betas=BETAS, eps=EPS, d=1.0, weight_decay=0.0):
    """came-pytorch's unfactored step on a vector: full second moment, no confidence correction."""
    beta1, beta2, _ = betas
    p = p[:]
    exp_avg, v = [0.0] * len(p), [0.0] * len(p)
    for g in grads:
        v = [beta2 * v[i] + (1 - beta2) * (g[i] ** 2 + eps[0]) for i in range(len(p))]
        u = [g[i] / math.sqrt(v[i]) for i in range(len(p))]
        rms = math.sqrt(mean([x * x for x in u]))
        u = [x / max(1.0, rms / d) for x in u]
        exp_avg = [beta1 * exp_avg[i] + (1 - beta1) * u[i] for i in range(len(p))]
        p = [p[i] * (1 - lr * weight_decay) - lr * exp_avg[i] for i in range(len(p))]
    return p, exp_avg, v


MATRIX = [[0.5, -1.0, 2.0], [0.0, 1.5, -0.5]]
MATRIX_GRADS = [[[0.1, -0.2, 0.3], [0.05, 0.4, -0.1]], [[-0.3, 0.1, 0.2], [0.2, -0.1, 0.0]]]
VECTOR = [1.0, -2.0, 0.5]
VECTOR_GRADS = [[0.1, -0.3, 2.0], [0.2, 0.1, -1.0]]
HAND_HPARAMS = [
    dict(lr=0.1),
    dict(lr=0.05, betas=(0.8, 0.9, 0.95), eps=(1e-3, 1e-2), d=0.5, weight_decay=0.2),
    dict(lr=0.1, d=100.0),  # no clipping
]


def _kwargs(hparams):
    return {("clip_threshold" if k == "d" else k): v for k, v in hparams.items()}


def _t(x):
    return torch.tensor(x, dtype=torch.float64)


@pytest.mark.parametrize("foreach", [False, True])
@pytest.mark.parametrize("hparams", HAND_HPARAMS)
def test_first_two_steps_match_hand_computation(foreach, hparams):
    matrix = _t(MATRIX).requires_grad_()
    vector = _t(VECTOR).requires_grad_()
    opt = CAME([matrix, vector], foreach=foreach, **_kwargs(hparams))
    for t in (1, 2):
        matrix.grad, vector.grad = _t(MATRIX_GRADS[t - 1]), _t(VECTOR_GRADS[t - 1])
        opt.step()
        want_p, want_m, (r, c, big_r, big_c) = came_matrix_by_hand(MATRIX, MATRIX_GRADS[:t], **hparams)
        state = opt.state[matrix]
        torch.testing.assert_close(matrix.detach(), _t(want_p), rtol=1e-13, atol=1e-15)
        torch.testing.assert_close(state["exp_avg"], _t(want_m), rtol=1e-13, atol=1e-15)
        factors = {"exp_avg_sq_row": r, "exp_avg_sq_col": c, "exp_avg_res_row": big_r, "exp_avg_res_col": big_c}
        for key, want in factors.items():
            torch.testing.assert_close(state[key], _t(want), rtol=1e-13, atol=1e-30)
        want_p, want_m, want_v = came_vector_by_hand(VECTOR, VECTOR_GRADS[:t], **hparams)
        torch.testing.assert_close(vector.detach(), _t(want_p), rtol=1e-13, atol=1e-15)
        torch.testing.assert_close(opt.state[vector]["exp_avg"], _t(want_m), rtol=1e-13, atol=1e-15)
        torch.testing.assert_close(opt.state[vector]["exp_avg_sq"], _t(want_v), rtol=1e-13, atol=1e-30)
    assert opt.state[matrix]["step"] == 2 and type(opt.state[matrix]["step"]) is int


def test_factored_state_shapes_and_memory():
    matrix = torch.zeros(64, 96, requires_grad=True)
    stack = torch.zeros(3, 8, 5, requires_grad=True)
    vector = torch.zeros(7, requires_grad=True)
    opt = CAME([matrix, stack, vector])
    for p in (matrix, stack, vector):
        p.grad = torch.randn_like(p)
    opt.step()

    shapes = {p: {k: tuple(v.shape) for k, v in opt.state[p].items() if torch.is_tensor(v)} for p in opt.state}
    assert shapes[matrix] == {
        "exp_avg": (64, 96),
        "exp_avg_sq_row": (64,),
        "exp_avg_sq_col": (96,),
        "exp_avg_res_row": (64,),
        "exp_avg_res_col": (96,),
    }
    # Leading dims are a batch: each 8 x 5 slice keeps its own row and column statistics.
    assert shapes[stack]["exp_avg_sq_row"] == (3, 8) and shapes[stack]["exp_avg_sq_col"] == (3, 5)
    assert shapes[vector] == {"exp_avg": (7,), "exp_avg_sq": (7,)}

    came_bytes = sum(v.nbytes for v in opt.state[matrix].values() if torch.is_tensor(v))
    adamw = torch.optim.AdamW([matrix])
    adamw.step()
    adamw_bytes = sum(v.nbytes for v in adamw.state[matrix].values() if torch.is_tensor(v) and v.dim() > 0)
    assert came_bytes == 4 * (64 * 96 + 2 * (64 + 96))  # one full moment plus four vectors
    assert came_bytes < 0.55 * adamw_bytes


@pytest.mark.parametrize("foreach", [False, True])
def test_update_is_clipped_to_rms_d(foreach):
    """At step 1 the unclipped update has RMS ~ 1/sqrt(1 - beta2) ~ 32, so exp_avg = (1 - beta1) u_hat has RMS
    exactly (1 - beta1) d when clipped, and the raw value when the threshold is above it."""
    for d, clipped in ((1.0, True), (0.25, True), (100.0, False)):
        p = torch.zeros(16, 24, dtype=torch.float64, requires_grad=True)
        opt = CAME([p], clip_threshold=d, foreach=foreach)
        p.grad = torch.randn(16, 24, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
        opt.step()
        rms = opt.state[p]["exp_avg"].square().mean().sqrt().item() / (1 - BETAS[0])
        if clipped:
            assert rms == pytest.approx(d, rel=1e-12)
        else:
            assert 20 < rms < d


@pytest.mark.parametrize("foreach", [False, True])
def test_unfactored_params_skip_the_confidence_step(foreach):
    """For < 2-D params the step is exactly -lr * exp_avg (plus decay), as in the reference."""
    p = torch.randn(10, dtype=torch.float64, requires_grad=True)
    opt = CAME([p], lr=0.01, foreach=foreach)
    for _ in range(3):
        before = p.detach().clone()
        p.grad = torch.randn_like(p)
        opt.step()
        torch.testing.assert_close(p.detach() - before, -0.01 * opt.state[p]["exp_avg"], rtol=0, atol=1e-15)


@pytest.mark.parametrize("foreach", [False, True])
def test_higher_dim_params_factor_over_the_last_two_dims(foreach):
    """Without clipping (whose RMS spans the whole tensor), a (2, 3, 4) param steps exactly like two 3 x 4 params."""
    gen = torch.Generator().manual_seed(0)
    stack = torch.randn(2, 3, 4, dtype=torch.float64, generator=gen).requires_grad_()
    slices = [stack[i].detach().clone().requires_grad_() for i in range(2)]
    hparams = dict(lr=0.01, clip_threshold=1e6, weight_decay=0.1, foreach=foreach)
    joint, separate = CAME([stack], **hparams), CAME(slices, **hparams)
    for _ in range(5):
        grad = torch.randn(2, 3, 4, dtype=torch.float64, generator=gen)
        stack.grad = grad
        for i, s in enumerate(slices):
            s.grad = grad[i].clone()
        joint.step()
        separate.step()
    torch.testing.assert_close(stack.detach(), torch.stack([s.detach() for s in slices]), rtol=0, atol=1e-15)


@pytest.mark.parametrize("foreach", [False, True])
def test_zero_size_params_only_advance_the_step(foreach):
    params = [torch.zeros(shape, requires_grad=True) for shape in ((0,), (0, 3), (3, 0), (2, 0, 4))]
    ordinary = torch.ones(2, 2, requires_grad=True)
    opt = CAME([*params, ordinary], weight_decay=0.1, foreach=foreach)
    for _ in range(2):
        for p in (*params, ordinary):
            p.grad = torch.ones_like(p)
        opt.step()
    for p in params:
        state = opt.state[p]
        assert state["step"] == 2
        assert all(torch.isfinite(v).all() for v in state.values() if torch.is_tensor(v))
    assert opt.state[params[1]]["exp_avg_sq_col"].shape == (3,)
    assert not torch.equal(ordinary, torch.ones(2, 2))


@pytest.mark.parametrize("foreach", [False, True])
def test_state_keeps_the_param_dtype(foreach):
    """came-pytorch computes and stores bf16 params' state in fp32; adamlab keeps the param dtype."""
    matrix = torch.randn(4, 6, dtype=torch.bfloat16, requires_grad=True)
    vector = torch.randn(6, dtype=torch.bfloat16, requires_grad=True)
    opt = CAME([matrix, vector], foreach=foreach)
    for p in (matrix, vector):
        p.grad = torch.randn_like(p)
    opt.step()
    for p in (matrix, vector):
        assert all(v.dtype == torch.bfloat16 for v in opt.state[p].values() if torch.is_tensor(v))
        assert torch.isfinite(p).all()


def test_converges_on_a_matrix_least_squares_problem():
    """The shared Rosenbrock test only reaches the unfactored branch; this exercises the factored one."""
    gen = torch.Generator().manual_seed(0)
    target = torch.randn(8, 6, dtype=torch.float64, generator=gen)
    w = torch.zeros(8, 6, dtype=torch.float64, requires_grad=True)
    opt = CAME([w], lr=1e-2)
    for _ in range(1000):
        opt.zero_grad()
        loss = 0.5 * (w - target).square().sum()
        loss.backward()
        opt.step()
    assert (w - target).abs().max().item() < 1e-2
