"""The capability table that drives the shared optimizer tests (like torch's OptimizerInfo).

One ``OptimizerInfo`` per adamlab optimizer: how to build it, the hyperparameter sets the shared tests run,
the published reference implementation it must match, the inputs it must reject, and the Rosenbrock
settings it converges with. Algorithm-specific checks (hand-computed first steps, golden values) live in
``test_<name>.py`` beside this file.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from adamlab.optim import CAME, AdaBelief, AdaBound, AdamMini, HybridAdamSGD, LDAdamW, Lion, Lookahead, Switch, Yogi


@dataclass(frozen=True)
class Reference:
    """A published implementation the optimizer must match in float64.

    ``build(params, **hparams)`` constructs it from adamlab's hyperparameters (translating names where the
    reference differs); ``hparam_sets`` are the adamlab hyperparameter sets compared (default: the info's own);
    ``note`` documents any default that differs."""

    package: str
    build: Callable[..., torch.optim.Optimizer]
    hparam_sets: list[dict[str, Any]] | None = None
    note: str = ""


@dataclass(frozen=True)
class OptimizerInfo:
    name: str
    build: Callable[..., torch.optim.Optimizer]  # build(params, **hparams); accepts foreach=
    hparam_sets: list[dict[str, Any]]  # each set runs every shared test
    references: list[Reference] = field(default_factory=list)
    invalid: list[tuple[dict[str, Any], str]] = field(default_factory=list)  # (hparams, error regex)
    rosenbrock: dict[str, Any] = field(default_factory=dict)  # hparams, steps, tol
    # Capabilities, as in torch's OptimizerInfo: each one decides which shared tests run and what they expect.
    supports_maximize: bool = True  # a maximize= option, equal to minimizing the negated objective
    supports_foreach: bool = True  # a foreach= option whose multi-tensor path equals the single-tensor one
    supports_fused: bool = False  # a fused= option (compiled update); flipped by the fused path for its optimizers
    supports_complex: bool = True  # complex params step as their real pairs; False: rejected at construction
    supports_sparse: bool = False  # sparse gradients; False: step() raises naming them
    step_requires_closure: bool = False  # step() needs a closure; False: step() works without one
    supports_float64: bool = True  # float64 params, which the parity and foreach tests run in
    supports_bf16: bool = True  # bf16 params, stepping with state in the param's dtype
    builds_from_model: bool = False  # create_optimizer(name, model) goes through the class's from_model
    registry_hparams: dict[str, Any] = field(default_factory=dict)  # what create_optimizer(name, model) needs

    def __repr__(self) -> str:  # readable pytest ids
        return self.name


# --- Lion ---------------------------------------------------------------------------------------------


def _lion_pytorch(params, lr=1e-4, betas=(0.9, 0.99), weight_decay=0.0):
    from lion_pytorch import Lion as ReferenceLion

    return ReferenceLion(params, lr=lr, betas=betas, weight_decay=weight_decay)


LION = OptimizerInfo(
    name="lion",
    supports_fused=True,
    build=Lion,
    hparam_sets=[
        dict(lr=1e-3),
        dict(lr=1e-3, betas=(0.95, 0.98), weight_decay=0.1),
    ],
    references=[Reference("lion-pytorch", _lion_pytorch)],
    invalid=[
        (dict(lr=-1.0), "learning rate"),
        (dict(lr=float("nan")), "learning rate"),
        (dict(betas=(1.0, 0.99)), "beta"),
        (dict(betas=(0.9,)), "betas"),
        (dict(weight_decay=-0.1), "weight_decay"),
    ],
    # Every coordinate moves by lr each step, so Lion ends in a limit cycle of a few lr around the minimum.
    rosenbrock=dict(hparams=dict(lr=1e-3, betas=(0.9, 0.99)), steps=4000, tol=3e-2),
)

# --- AdaBelief ------------------------------------------------------------------------------------


def _adabelief_pytorch(params, **hparams):
    from adabelief_pytorch import AdaBelief as ReferenceAdaBelief

    return ReferenceAdaBelief(params, print_change_log=False, **hparams)


ADABELIEF = OptimizerInfo(
    name="adabelief",
    supports_fused=True,
    build=AdaBelief,
    hparam_sets=[
        dict(lr=1e-3),  # the reference defaults: rectified, decoupled decay (of 0), eps 1e-16
        dict(lr=1e-3, weight_decay=0.1),  # decoupled, lr * wd
        dict(lr=1e-2, weight_decay=0.01, fixed_decay=True, betas=(0.8, 0.99)),  # decoupled, wd alone
        dict(lr=1e-3, rectify=False, weight_decouple=False, weight_decay=0.1, eps=1e-8),  # L2, plain update
        dict(lr=1e-3, rectify=False, amsgrad=True, betas=(0.9, 0.99)),
        dict(lr=1e-3, amsgrad=True, betas=(0.9, 0.99)),  # rectified: maintains the max, does not use it
        dict(lr=1e-3, betas=(0.9, 0.99), degenerated_to_sgd=False),  # no step while rho_t < 5 (t <= 5)
        dict(lr=1e-3, betas=(0.9, 0.6)),  # rho_inf < 5: SGD with momentum on every step
    ],
    references=[
        Reference(
            "adabelief-pytorch",
            _adabelief_pytorch,
            note="same defaults; the reference also accepts eps=0 and negative weight_decay, adamlab rejects them",
        )
    ],
    invalid=[
        (dict(lr=-1.0), "learning rate"),
        (dict(lr=float("nan")), "learning rate"),
        (dict(betas=(1.0, 0.999)), "beta"),
        (dict(betas=(0.9, -0.1)), "beta"),
        (dict(betas=(0.9,)), "betas"),
        (dict(eps=0.0), "eps"),
        (dict(eps=-1e-16), "eps"),
        (dict(weight_decay=-0.1), "weight_decay"),
    ],
    # The rectified default starts with ~5 plain SGD steps (lr * m_t / (1 - beta1^t)); a larger lr throws
    # the iterate off on Rosenbrock's steep walls before the adaptive steps begin.
    rosenbrock=dict(hparams=dict(lr=1e-2, betas=(0.9, 0.99)), steps=3000, tol=1e-2),
)


# --- AdaBound -------------------------------------------------------------------------------------


def _adabound(params, **hparams):
    from adabound import AdaBound as ReferenceAdaBound

    return ReferenceAdaBound(params, **hparams)


ADABOUND = OptimizerInfo(
    name="adabound",
    supports_fused=True,
    build=AdaBound,
    hparam_sets=[
        dict(lr=1e-3),  # the reference defaults: final_lr 0.1, gamma 1e-3
        dict(lr=1e-3, amsbound=True, weight_decay=1e-2),
        # gamma 0.1 closes the bounds within the 50 compared steps, so clipping (mostly from below) is exercised
        dict(lr=1e-2, final_lr=0.05, gamma=0.1, betas=(0.8, 0.99), eps=1e-6),
        dict(lr=1e-2, final_lr=0.05, gamma=0.1, amsbound=True),
        dict(lr=1e-3, final_lr=0.0),  # both bounds 0: moments update, params stay
    ],
    references=[
        Reference(
            "adabound",
            _adabound,
            note="same defaults; the reference also accepts eps=0, gamma=0 (then fails on step) and negative "
            "weight_decay, adamlab rejects them",
        )
    ],
    invalid=[
        (dict(lr=-1.0), "learning rate"),
        (dict(lr=float("inf")), "learning rate"),
        (dict(betas=(0.9, 1.0)), "beta"),
        (dict(betas=(0.9, 0.999, 0.9)), "betas"),
        (dict(final_lr=-0.1), "final_lr"),
        (dict(gamma=0.0), "gamma"),  # the reference accepts it, then divides by zero on the first step
        (dict(gamma=1.0), "gamma"),
        (dict(gamma=-1e-3), "gamma"),
        (dict(eps=0.0), "eps"),
        (dict(eps=-1e-8), "eps"),
        (dict(weight_decay=-1e-2), "weight_decay"),
    ],
    rosenbrock=dict(hparams=dict(lr=1e-2, final_lr=1e-2), steps=3000, tol=1e-2),
)


# --- Yogi -----------------------------------------------------------------------------------------


def _torch_optimizer_yogi(params, **hparams):
    from torch_optimizer import Yogi as ReferenceYogi

    return ReferenceYogi(params, **hparams)  # same hyperparameter names and defaults


YOGI = OptimizerInfo(
    name="yogi",
    supports_fused=True,
    build=Yogi,
    hparam_sets=[
        dict(lr=1e-2),
        dict(lr=5e-3, betas=(0.8, 0.99), eps=1e-4, initial_accumulator=1e-2, weight_decay=0.1),
        dict(lr=1e-2, initial_accumulator=0.0),
    ],
    references=[
        Reference(
            "torch-optimizer",
            _torch_optimizer_yogi,
            note=(
                "same defaults; torch-optimizer also accepts eps=0 and a negative initial_accumulator (adamlab "
                "rejects both) and rejects lr=0 (adamlab allows it)"
            ),
        )
    ],
    invalid=[
        (dict(lr=-1.0), "learning rate"),
        (dict(lr=float("inf")), "learning rate"),
        (dict(betas=(0.9, 1.0)), "beta"),
        (dict(betas=(0.9,)), "betas"),
        (dict(eps=0.0), "eps"),
        (dict(eps=-1e-3), "eps"),
        (dict(initial_accumulator=-1e-6), "initial_accumulator"),
        (dict(weight_decay=-0.1), "weight_decay"),
    ],
    # The default lr 1e-2 is still 0.07 away after 4000 steps; 5e-2 reaches 1e-5 in 3000.
    rosenbrock=dict(hparams=dict(lr=5e-2), steps=3000, tol=1e-3),
)


# --- CAME -----------------------------------------------------------------------------------------


def _came_pytorch(params, **hparams):
    from came_pytorch import CAME as ReferenceCAME

    return ReferenceCAME(params, **hparams)  # same hyperparameter names; every set passes lr


CAME_INFO = OptimizerInfo(
    name="came",
    supports_fused=True,
    build=CAME,
    hparam_sets=[
        dict(lr=1e-3),
        dict(lr=1e-3, eps=(1e-20, 1e-12), clip_threshold=0.5, betas=(0.8, 0.99, 0.995), weight_decay=0.1),
        # RMS(u) starts near 1/sqrt(1 - beta2) ~ 32, so a threshold of 100 runs the unclipped branch.
        dict(lr=1e-3, clip_threshold=100.0),
    ],
    references=[
        Reference(
            "came-pytorch",
            _came_pytorch,
            note=(
                "came-pytorch has lr=None (unusable; adamlab defaults to its README's 2e-4), keeps fp32 state for "
                "bf16/fp16 params and an unused RMS entry; on a zero-size param it fills the factored statistics "
                "with NaN where adamlab leaves them at zero (params are unchanged in both)"
            ),
        )
    ],
    invalid=[
        (dict(lr=-1.0), "learning rate"),
        (dict(lr=float("nan")), "learning rate"),
        (dict(eps=1e-30), "eps"),
        (dict(eps=(1e-30,)), "eps"),
        (dict(eps=(0.0, 1e-16)), "eps1"),
        (dict(eps=(1e-30, -1e-16)), "eps2"),
        (dict(clip_threshold=0.0), "clip_threshold"),
        (dict(betas=(0.9, 0.999)), "betas"),
        (dict(betas=(0.9, 0.999, 1.0)), "beta"),
        (dict(weight_decay=-0.1), "weight_decay"),
    ],
    # xy is 1-D, so this runs the unfactored branch (clipped RMSProp-like momentum, no bias correction).
    rosenbrock=dict(hparams=dict(lr=2e-2), steps=3000, tol=1e-3),
    # Row and column statistics of a complex matrix have no agreed meaning (torch.optim.Adafactor rejects them too).
    supports_complex=False,
)


# --- HybridAdamSGD --------------------------------------------------------------------------------


# The study's code (ivrejchik/qwen3-optimizer-study) is not installable; its two limits are the references here,
# the blend itself is checked against the spec's golden values and a literal §3 transcription in
# test_hybrid_adam_sgd.py.


def _hybrid_as_adamw(
    params, lr, final_ratio, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01, momentum=0.9, transition_steps=1000
):
    """final_ratio = 1 gives a_t = 1 at every step: the SGD branch (momentum, transition_steps) has weight 0."""
    assert final_ratio == 1
    return torch.optim.AdamW(params, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay)


def _hybrid_as_sgd(
    params, lr, final_ratio, transition_steps, weight_decay, momentum=0.9, betas=(0.9, 0.999), eps=1e-8
):
    """final_ratio = 0 with transition_steps = 1 gives a_t = 0 from the first step: the Adam branch has weight 0."""
    assert final_ratio == 0 and transition_steps == 1 and weight_decay == 0
    return torch.optim.SGD(params, lr=lr, momentum=momentum, dampening=0, nesterov=False)


HYBRID_ADAM_SGD = OptimizerInfo(
    name="hybrid_adam_sgd",
    supports_fused=True,
    build=HybridAdamSGD,
    hparam_sets=[
        # Default weight decay 0.01; the blend falls from 0.955 to 0.1 within the 50 compared steps.
        dict(lr=1e-2, transition_steps=20, final_ratio=0.1),
        # Every knob moved, both variants on.
        dict(
            lr=1e-3,
            betas=(0.8, 0.99),
            momentum=0.5,
            eps=1e-6,
            weight_decay=0.1,
            transition_steps=7,
            final_ratio=0.3,
            sgd_dampening=True,
            sgd_lr_scale=0.5,
        ),
    ],
    references=[
        Reference(
            "torch.optim.AdamW",
            _hybrid_as_adamw,
            hparam_sets=[
                dict(lr=1e-2, final_ratio=1.0),
                dict(lr=1e-3, betas=(0.8, 0.99), eps=1e-6, weight_decay=0.1, momentum=0.5, final_ratio=1.0),
            ],
            note="final_ratio=1 only (spec §7.2)",
        ),
        Reference(
            "torch.optim.SGD",
            _hybrid_as_sgd,
            hparam_sets=[
                dict(lr=1e-2, final_ratio=0.0, transition_steps=1, weight_decay=0.0),
                dict(lr=1e-3, momentum=0.5, betas=(0.8, 0.99), final_ratio=0.0, transition_steps=1, weight_decay=0.0),
            ],
            note="final_ratio=0, transition_steps=1, weight_decay=0 only (spec §7.3); torch's first buffer is g too",
        ),
    ],
    invalid=[
        (dict(lr=-1.0), "learning rate"),
        (dict(lr=float("nan")), "learning rate"),
        (dict(betas=(1.0, 0.999)), "beta"),
        (dict(betas=(0.9,)), "betas"),
        (dict(momentum=1.0), "momentum"),
        (dict(momentum=-0.1), "momentum"),
        (dict(eps=-1e-8), "eps"),
        (dict(weight_decay=-0.01), "weight_decay"),
        (dict(transition_steps=0), "transition_steps"),  # the reference divides by zero on the first step
        (dict(transition_steps=-5), "transition_steps"),
        (dict(transition_steps=10.0), "transition_steps"),
        (dict(final_ratio=1.5), "final_ratio"),
        (dict(final_ratio=-0.1), "final_ratio"),
        (dict(sgd_lr_scale=-1.0), "sgd_lr_scale"),
    ],
    # The unnormalised SGD branch runs up to ~10 |g|: lr 1e-3 keeps it stable on Rosenbrock's steep walls.
    rosenbrock=dict(hparams=dict(lr=1e-3, weight_decay=0.0), steps=3000, tol=1e-2),
)


# --- Lookahead ------------------------------------------------------------------------------------


# Lookahead's own hyperparameters are k and alpha; the rest (and inner="adam" | "lion") build the inner optimizer.
_LOOKAHEAD_INNER = {"adam": torch.optim.Adam, "lion": Lion}


def _lookahead(params, k=5, alpha=0.5, inner="adam", foreach=None, fused=None, **inner_hparams):
    """foreach= goes to both optimizers; fused= to Lookahead's own sync only (torch's Adam has a fused path)."""
    inner_optimizer = _LOOKAHEAD_INNER[inner](params, foreach=foreach, **inner_hparams)
    own = {} if fused is None else {"fused": fused}
    return Lookahead(inner_optimizer, k=k, alpha=alpha, foreach=foreach, **own)


def _pytorch_optimizer_lookahead(params, k=5, alpha=0.5, inner="adam", **inner_hparams):
    from pytorch_optimizer import Lookahead as ReferenceLookahead

    return ReferenceLookahead(_LOOKAHEAD_INNER[inner](params, **inner_hparams), k=k, alpha=alpha)


def _torch_optimizer_lookahead(params, k=5, alpha=0.5, inner="adam", **inner_hparams):
    from torch_optimizer import Lookahead as ReferenceLookahead

    reference = ReferenceLookahead(_LOOKAHEAD_INNER[inner](params, **inner_hparams), k=k, alpha=alpha)
    # torch-optimizer takes the slow weights after the first inner step and syncs at steps 1, k + 1, ...; slow
    # weights seeded with the initial params and a counter started one step on give the textbook syncs at k, 2k, ...
    for group in reference.param_groups:
        group["counter"] = 1 % k
        for p in group["params"]:
            reference.state[p]["slow_param"] = p.detach().clone()
    return reference


LOOKAHEAD = OptimizerInfo(
    name="lookahead",
    build=_lookahead,
    hparam_sets=[
        dict(lr=1e-2, k=3, alpha=0.5),
        dict(inner="lion", lr=1e-3, weight_decay=0.1, k=5, alpha=0.8),
        dict(lr=1e-2, betas=(0.8, 0.99), k=1, alpha=0.3),  # a sync after every inner step
    ],
    references=[
        Reference(
            "pytorch-optimizer",
            _pytorch_optimizer_lookahead,
            note="pytorch-optimizer takes the slow weights at construction and syncs only params with a gradient at "
            "the sync step; the compared params always have one",
        ),
        Reference(
            "torch-optimizer",
            _torch_optimizer_lookahead,
            note="torch-optimizer's first sync is after step 1; the builder shifts it to the textbook schedule",
        ),
    ],
    invalid=[
        (dict(k=0), r"Invalid k\b"),
        (dict(k=-3), r"Invalid k\b"),
        (dict(k=2.0), r"Invalid k\b"),
        (dict(alpha=1.5), "alpha"),
        (dict(alpha=-0.1), "alpha"),
        (dict(alpha=float("nan")), "alpha"),
    ],
    rosenbrock=dict(hparams=dict(lr=1e-2, k=5, alpha=0.5), steps=5000, tol=1e-2),
)


# --- LDAdamW --------------------------------------------------------------------------------------


def _ldadam(params, foreach=None, **hparams):
    """2-D params in a low-rank group, the rest in an AdamW group; given groups, those holding only matrices go
    low-rank. The official code is not installable: test_ldadam.py checks parity with a transcription of it."""
    params = list(params)
    if params and isinstance(params[0], dict):
        groups = [dict(g, enable_lowrank=True) if all(p.dim() == 2 for p in g["params"]) else g for g in params]
    else:
        groups = [
            {"params": [p for p in params if p.dim() == 2], "enable_lowrank": True},
            {"params": [p for p in params if p.dim() != 2]},  # enable_lowrank from the constructor (False)
        ]
    return LDAdamW([g for g in groups if g["params"]], foreach=foreach, **hparams)


LDADAM = OptimizerInfo(
    name="ldadam",
    supports_fused=True,
    build=_ldadam,
    # The (4, 3) matrix is the low-rank one: ranks below min(4, 3) compress it.
    hparam_sets=[
        dict(lr=1e-2, rank=2),  # the official defaults: std (right) projection, power iteration, error feedback
        dict(lr=1e-2, rank=2, error_feedback=False, weight_decay=0.1, betas=(0.9, 0.999), rho=0.5, eps=1e-6),
        dict(lr=1e-2, rank=2, proj_method="svd", proj_type="left", weight_decay=0.01),
        dict(lr=1e-2, rank=1, proj_method="svd", error_feedback=False, step_counter="per_param",
             state_dtype=torch.float32),
    ],
    invalid=[
        (dict(lr=-1.0), "learning rate"),
        (dict(lr=float("nan")), "learning rate"),
        (dict(betas=(1.0, 0.99)), "beta"),
        (dict(betas=(0.9,)), "betas"),
        (dict(eps=0.0), "eps"),
        (dict(weight_decay=-0.1), "weight_decay"),
        (dict(rank=0), "rank"),
        (dict(rank=2.0), "rank"),
        (dict(rank=4), r"rank 4 exceeds min\(m, n\) = 3"),
        (dict(rho=1.0), "rho"),
        (dict(proj_type="up"), "proj_type"),
        (dict(proj_method="qr"), "proj_method"),
        (dict(error_feedback=1), "error_feedback"),
        (dict(rank=2, enable_lowrank=True), "2-D matrices only"),  # every group low-rank: the vectors fail
        (dict(ef_storage="disk"), "ef_storage"),
        (dict(step_counter="local"), "step_counter"),
        (dict(state_dtype=torch.bfloat16), "state_dtype"),
        (dict(decomp_dtype="float16"), "decomp_dtype"),
    ],
    # xy is 1-D, so this runs the AdamW branch, with the official betas (0.908, 0.99).
    rosenbrock=dict(hparams=dict(lr=1e-2), steps=2000, tol=1e-2),
    # The low-rank groups project matrices (SVD/QR); complex ones are rejected. Its AdamW groups take complex
    # params: test_ldadam.py checks them.
    supports_complex=False,
    builds_from_model=True,
    registry_hparams=dict(rank=2),
)


# --- AdamMini -------------------------------------------------------------------------------------


def _adam_mini_name(index: int, tensor: torch.Tensor) -> str:
    """Adam-mini routes by name; these names spread the shared tests' tensors over three of its rules: matrices
    get one second moment per row ("mlp"), vectors are plain Adam ("bias", not decayed), anything else has an
    unknown name and falls back to one second moment per tensor."""
    if tensor.dim() == 2:
        return f"layers.{index}.mlp.weight"
    if tensor.dim() == 1:
        return f"layers.{index}.bias"
    return f"layers.{index}.weight"


def _adam_mini_named(params):
    """Plain tensors, or param-group dicts of them, as the (name, tensor) pairs Adam-mini takes."""
    index = itertools.count()
    named = []
    for item in params:
        if isinstance(item, dict):
            named.append({**item, "params": [(_adam_mini_name(next(index), p), p) for p in item["params"]]})
        else:
            named.append((_adam_mini_name(next(index), item), item))
    return named


def _adam_mini(params, **hparams):
    return AdamMini(_adam_mini_named(params), verbose=False, **hparams)


def _official_adam_mini(params, **hparams):
    from adam_mini import Adam_mini

    return Adam_mini(_adam_mini_named(params), verbose=False, **hparams)


ADAM_MINI = OptimizerInfo(
    name="adam_mini",
    supports_fused=True,
    build=_adam_mini,
    hparam_sets=[
        dict(lr=1e-3),
        dict(lr=1e-2, betas=(0.8, 0.99), eps=1e-6, weight_decay=0.1),
    ],
    references=[
        Reference(
            "adam-mini",
            _official_adam_mini,
            note="adam-mini 1.1.1; its world size is torch.cuda.device_count(), so on a machine with several "
            "GPUs and no process group it fails (issue #35); adamlab also rejects eps <= 0 and non-int dim/heads",
        )
    ],
    invalid=[
        (dict(lr=-1.0), "learning rate"),
        (dict(lr=float("nan")), "learning rate"),
        (dict(betas=(1.0, 0.999)), "beta"),
        (dict(betas=(0.9,)), "betas"),
        (dict(eps=0.0), "eps"),
        (dict(eps=-1e-8), "eps"),
        (dict(weight_decay=-0.1), "weight_decay"),
        (dict(dim=0), "dim"),
        (dict(dim=64.5), "dim"),
        (dict(n_heads=0), "n_heads"),
        (dict(n_kv_heads=3), "n_kv_heads"),  # does not divide the default n_heads=32
        (dict(partition="per_row"), "partition"),
    ],
    # The 1-D xy is named as a bias, so this is Adam-mini's per-element (plain Adam) rule.
    rosenbrock=dict(hparams=dict(lr=1e-2), steps=3000, tol=1e-2),
    # Blocks follow the architecture's real layout (heads, rows): complex params are rejected.
    supports_complex=False,
    builds_from_model=True,
)


# --- Switch -------------------------------------------------------------------------------------------------


def _switch(params, milestones=(3, 7), carry=True, foreach=None, fused=None, **hparams):
    """Adam, then AdamW (which takes Adam's state over), then Lion (a fresh state); fused= goes to the Switch."""
    params = list(params)
    # each phase gets its own copies of group dicts: torch.optim writes its defaults into the dicts it is given
    phases = [cls([dict(p) if isinstance(p, dict) else p for p in params], foreach=foreach, **hparams)
              for cls in (torch.optim.Adam, torch.optim.AdamW, Lion)]
    own = {} if fused is None else {"fused": fused}
    return Switch(phases, milestones, carry=carry, **own)


SWITCH = OptimizerInfo(
    name="switch",
    build=_switch,
    hparam_sets=[
        dict(lr=1e-2),
        dict(lr=1e-3, weight_decay=0.1, milestones=(1, 12)),
        dict(lr=1e-3, milestones=(5, 6), carry=False),
    ],
    invalid=[
        (dict(milestones=(3,)), "milestones"),
        (dict(milestones=(3, 3)), "milestones"),
        (dict(milestones=(0, 3)), "milestone"),
        (dict(milestones=(2.0, 3)), "milestone"),
        (dict(carry=1), "carry"),
    ],
    # Adam and AdamW for 200 steps, then Lion's limit cycle of a few lr around the minimum.
    rosenbrock=dict(hparams=dict(lr=1e-3, milestones=(100, 200)), steps=4000, tol=3e-2),
    registry_hparams=dict(phases=[dict(name="sgd", momentum=0.9), dict(name="adamw")], milestones=[5]),
)


# --- the table: every optimizer adamlab implements, in the README's order -----------------------------------------

OPTIMIZER_INFOS: list[OptimizerInfo] = [
    ADABELIEF,
    ADABOUND,
    YOGI,
    LION,
    CAME_INFO,
    HYBRID_ADAM_SGD,
    LDADAM,
    ADAM_MINI,
    LOOKAHEAD,
    SWITCH,
]
