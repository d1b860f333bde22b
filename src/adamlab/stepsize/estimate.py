r"""The estimation driver: ``estimate_stepsize`` runs the Hessian spectral norm batch by batch over a sample of the
data and hands the per-batch records to ``record.summarise`` (see ``formula`` for the step size it estimates and
``presets`` for its settings).

The estimate leaves the model as it found it: mode, dtype and parameter values are restored, and the global RNG
is never drawn from (every random draw has its own generator, seeded from ``seed`` and recorded).
"""

from __future__ import annotations

import contextlib
import math
import resource
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from .formula import resolve_horizon
from .hvp import HessianVectorProduct, resolve_parameters
from .presets import FROM_PRESET, check_options, resolve_settings
from .record import StepsizeEstimate, summarise
from .spectral import random_unit_vector, seeded_generator, spectral_norm


def by_lora_matrix(name: str) -> str:
    """A ``groups`` function: LoRA's A matrices, its B matrices, and every other trainable parameter. At PEFT's
    initialisation B = 0, so the loss is linear in A there and the A block of the Hessian is zero: group
    ``lora_A`` gets K = 0 and no step size (``alpha=None``)."""
    return "lora_A" if ".lora_A." in name else "lora_B" if ".lora_B." in name else "other"


def estimate_stepsize(
    model: nn.Module,
    loss_fn: Callable[[nn.Module, list], Tensor],
    data: Sequence,
    *,
    params: str | Sequence[Tensor] = "trainable",
    horizon: str | int = FROM_PRESET,
    total_steps: int | None = None,
    loss_floor: float = 0.0,
    l0_reduction: str = FROM_PRESET,
    n_examples: int | None = FROM_PRESET,
    sample: str = FROM_PRESET,
    batch_size: int = FROM_PRESET,
    max_tokens: int | None = FROM_PRESET,
    method: str = FROM_PRESET,
    max_iter: int = FROM_PRESET,
    rtol: float = FROM_PRESET,
    atol: float = FROM_PRESET,
    n_inits: int = FROM_PRESET,
    aggregate: str = FROM_PRESET,
    warm_start: bool = FROM_PRESET,
    seed: int = 0,
    hvp: str = "auto",
    compute_dtype: torch.dtype | None = None,
    preset: str = "default",
    groups: Callable[[str], str] | None = None,
    targets_fn: Callable[[list], int] | None = None,
    bootstrap: int = 1000,
    confidence: float = 0.95,
    model_id: str | None = None,
    adapter_config: dict[str, Any] | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> StepsizeEstimate:
    r"""Estimate the AdamDDS step size of ``model`` on ``data``.

    ``loss_fn(model, batch)``: the training loss of ``batch`` (a list of ``data`` items) as a scalar, with the
    training loss's masking and reduction (its mean over the batch's loss targets). ``targets_fn(batch)``: the
    number of loss targets in a batch, to weight batches into the token mean (default: the number of examples).

    Sample and batches (preset defaults in brackets): ``n_examples`` items [512; None: all], ``sample`` the first
    ones or a seeded random subset ["random"]; with ``max_tokens``, items with more ``input_ids`` are dropped and
    counted [None]; ``batch_size`` items per loss [16].

    Curvature: per batch, the spectral norm of the Hessian over ``params`` (default: the trainable ones) by
    ``method`` ["power"], ``max_iter`` [50], ``rtol`` [1e-3], ``atol`` [0] (see :mod:`adamlab.stepsize.spectral`),
    each batch starting from the previous batch's top eigenvector when ``warm_start`` [True], else from a vector
    seeded by (seed, init, batch). ``aggregate`` ["max"]: "max", "mean" or "quantile:<q>" over all batches and
    initialisations. ``n_inits`` [1]: initialisation 0 is the model's own $w_0$; the others re-draw the trainable
    parameters (LoRA A: PEFT's Kaiming-uniform, LoRA B: 0, other matrices: Kaiming-uniform; vectors keep their
    values). ``hvp``: the product engine ("auto", "double_backward", "jvp"). ``compute_dtype``: cast the model
    for the estimate (e.g. ``torch.float64``) and back afterwards.

    ``groups(name) -> label`` adds one step size per parameter group, from the Hessian block of that group (e.g.
    :func:`by_lora_matrix`). ``bootstrap`` resamples of the batches give a ``confidence`` interval of alpha;
    for ``aggregate="max"`` a resample's max can never exceed the sample's, so the interval only shows how much
    larger alpha would be on less extreme batches, not how much a larger sample would lower it.
    """
    overrides = {
        "horizon": horizon, "l0_reduction": l0_reduction, "n_examples": n_examples, "sample": sample,
        "batch_size": batch_size, "max_tokens": max_tokens, "method": method, "max_iter": max_iter, "rtol": rtol,
        "atol": atol, "n_inits": n_inits, "aggregate": aggregate, "warm_start": warm_start,
    }
    settings = resolve_settings(preset, overrides)
    T, horizon_mode = resolve_horizon(settings["horizon"], total_steps)
    check_options(loss_floor, hvp, compute_dtype, bootstrap, confidence, seed)
    named = resolve_parameters(model, params)
    tensors = [p for _, p in named]
    group_members = _group_members([name for name, _ in named], groups)
    items, n_excluded = _estimation_sample(data, settings, seed)
    size = settings["batch_size"]
    batches = [items[i : i + size] for i in range(0, len(items), size)]
    count_targets = targets_fn or len
    n_inits = settings["n_inits"]

    records: dict[str, Any] = {
        "batch_examples": [len(b) for b in batches], "batch_targets": [], "batch_loss": [],
        "example_loss_sum": [], "seconds": [0.0] * len(batches), "hvps": [0] * len(batches),
        "s": [], "lambda": [], "residual": [], "iterations": [], "converged": [], "degenerate": [],
        "group_s": {label: [] for label in group_members},
    }
    engines: set[str] = set()
    fallback = None
    with _estimation_state(model, tensors, compute_dtype, restore_values=n_inits > 1):
        for init in range(n_inits):
            if init > 0:
                _reinitialise(named, seeded_generator(seed, "init", init))
            per_init = {key: [] for key in ("s", "lambda", "residual", "iterations", "converged", "degenerate")}
            group_s = {label: [] for label in group_members}
            warm = {}
            for b, batch in enumerate(batches):
                batch_started = time.perf_counter()
                product = HessianVectorProduct(lambda batch=batch: loss_fn(model, batch), tensors, model=model,
                                               engine=hvp)
                if init == 0:
                    _record_losses(records, model, loss_fn, batch, product.loss, count_targets(batch))
                result = _spectral(product, tensors, None, warm, settings, seed, init, b)
                for key, value in (("s", result.spectral_norm), ("lambda", result.rayleigh_quotient),
                                   ("residual", result.residual), ("iterations", result.iterations),
                                   ("converged", result.converged), ("degenerate", result.degenerate)):
                    per_init[key].append(value)
                for label, members in group_members.items():
                    block = product.block(members)
                    group_result = _spectral(block, [tensors[i] for i in members], label, warm, settings, seed,
                                             init, b)
                    group_s[label].append(group_result.spectral_norm)
                engines.add(product.engine)
                fallback = fallback or product.fallback_reason
                records["hvps"][b] += product.count
                records["seconds"][b] += time.perf_counter() - batch_started
                if progress is not None:
                    progress(init * len(batches) + b + 1, n_inits * len(batches))
            for key, values in per_init.items():
                records[key].append(values)
            for label, values in group_s.items():
                records["group_s"][label].append(values)

    fields = {
        **settings, "T": T, "horizon_mode": horizon_mode, "loss_floor": float(loss_floor), "preset": preset,
        "confidence": confidence, "bootstrap": bootstrap, "seeds": _seed_record(seed),
        "n_examples_requested": settings["n_examples"], "n_examples_used": len(items), "n_excluded": n_excluded,
        "hvp_engine": "+".join(sorted(engines)), "hvp_fallback": fallback,
        "compute_dtype": str(compute_dtype or tensors[0].dtype).removeprefix("torch."), "model_id": model_id,
        "adapter_config": adapter_config, "peak_memory_bytes": _peak_memory_bytes(tensors[0].device),
        "groups": {label: sum(tensors[i].numel() for i in members) for label, members in group_members.items()},
    }
    del fields["horizon"], fields["n_examples"]
    return summarise(fields, records)


def _group_members(names: list[str], groups: Callable[[str], str] | None) -> dict[str, list[int]]:
    members: dict[str, list[int]] = {}
    for i, name in enumerate(names):
        if groups is not None:
            members.setdefault(str(groups(name)), []).append(i)
    return members


def _estimation_sample(data: Sequence, settings: dict[str, Any], seed: int) -> tuple[list, int]:
    """The examples to estimate on, in batch order, and how many ``max_tokens`` excluded. A random sample is a
    prefix of one seeded permutation, so a smaller sample is the start of a larger one."""
    data = list(data)
    if not data:
        raise ValueError("no examples to estimate on")
    n = len(data) if settings["n_examples"] is None else min(settings["n_examples"], len(data))
    if settings["sample"] == "first":
        chosen = data[:n]
    else:
        chosen = [data[i] for i in torch.randperm(len(data), generator=seeded_generator(seed, "sample"))[:n].tolist()]
    if settings["max_tokens"] is None:
        return chosen, 0
    if not all(hasattr(item, "input_ids") for item in chosen):
        raise ValueError("max_tokens needs examples with input_ids (encoded examples)")
    kept = [item for item in chosen if len(item.input_ids) <= settings["max_tokens"]]
    if not kept:
        raise ValueError(f"every one of the {n} examples is longer than max_tokens={settings['max_tokens']}")
    return kept, n - len(kept)


@contextlib.contextmanager
def _estimation_state(model: nn.Module, tensors: list[Tensor], compute_dtype: torch.dtype | None,
                      restore_values: bool) -> Iterator[None]:
    """Eval mode (dropout off; Hugging Face models checkpoint activations only in training mode, and reentrant
    checkpointing would break double backward), the compute dtype, and afterwards the caller's mode, dtype and
    parameter values."""
    was_training = model.training
    original_dtype = None
    if compute_dtype is not None:
        dtypes = {p.dtype for p in model.parameters() if p.is_floating_point()}
        if len(dtypes) != 1:
            raise ValueError(f"compute_dtype needs a model in one floating dtype; it has {sorted(map(str, dtypes))}")
        original_dtype = dtypes.pop()
    saved = [p.detach().clone() for p in tensors] if restore_values else None
    try:
        model.eval()
        if compute_dtype is not None:
            model.to(compute_dtype)
        yield
    finally:
        if original_dtype is not None:
            model.to(original_dtype)
        if saved is not None:
            with torch.no_grad():
                for p, value in zip(tensors, saved):
                    p.copy_(value)
        model.train(was_training)


def _reinitialise(named: list[tuple[str, Tensor]], generator: torch.Generator) -> None:
    """A fresh draw of the trainable parameters, as PEFT and torch.nn.Linear initialise them."""
    with torch.no_grad():
        for name, p in named:
            if ".lora_B." in name:
                p.zero_()
            elif p.ndim >= 2:
                fresh = torch.empty(p.shape, dtype=torch.float32)
                nn.init.kaiming_uniform_(fresh, a=math.sqrt(5), generator=generator)
                p.copy_(fresh)


def _record_losses(records: dict, model: nn.Module, loss_fn, batch: list, batch_loss: float, targets: int) -> None:
    records["batch_loss"].append(batch_loss)
    records["batch_targets"].append(targets)
    if len(batch) == 1:
        records["example_loss_sum"].append(batch_loss)
        return
    with torch.no_grad():  # the authors' per-example mean needs each example's own mean loss
        records["example_loss_sum"].append(math.fsum(loss_fn(model, [item]).item() for item in batch))


def _spectral(product, tensors, label, warm: dict, settings, seed, init, b):
    start = warm.get(label)
    if start is None:
        parts = (seed, init, b) if label is None else (seed, init, b, label)
        start = random_unit_vector(tensors, seeded_generator(*parts))
    result = spectral_norm(product, start, method=settings["method"], max_iter=settings["max_iter"],
                           rtol=settings["rtol"], atol=settings["atol"])
    if settings["warm_start"] and not result.degenerate:
        warm[label] = result.vector
    return result


def _seed_record(seed: int) -> dict[str, Any]:
    return {
        "seed": seed,
        "derivation": "torch.Generator seeded with int(sha256('/'.join(parts)).hexdigest()[:15], 16)",
        "sample": [seed, "sample"],
        "start_vector": [seed, "<init>", "<batch>", "[group]"],
        "init": [seed, "init", "<init>"],
        "bootstrap": [seed, "bootstrap"],
        "init_0": "the model's own weights (w0)",
    }


def _peak_memory_bytes(device: torch.device) -> int:
    """The process's peak: CUDA allocations on a GPU, resident memory otherwise."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device)
    scale = 1 if sys.platform == "darwin" else 1024  # ru_maxrss is bytes on macOS, KiB on Linux
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale
