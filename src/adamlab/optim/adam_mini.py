"""Adam-mini: Adam with one second moment per block (attention head, output neuron, or whole tensor).

``AdamMini`` routes every named parameter to a block rule, keeps the per-block mean of g² and hands the
elementwise rest to the shared AdamW kernel (``_adamw``). ``PartitionEntry`` is one row of its partition report.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.optim import Optimizer

from ._adamw import multi_tensor_adamw, single_tensor_adamw
from ._common import (
    check_betas,
    check_eps,
    check_lr,
    check_nonnegative,
    check_positive_int,
    document_args,
    evaluate_closure,
    reject_complex,
    use_foreach,
)
from ._fused import check_fused, fused_adamw, use_fused

__all__ = ["AdamMini", "PartitionEntry"]

logger = logging.getLogger(__name__)

# The rules a parameter can be routed to, in the order they are tried.
ADAM, HEAD, ROW, TENSOR = "adam", "head", "row", "tensor"
PARTITIONS = ("official", "lora")
# peft's LoRA factors; partition="lora" gives each of them one second moment per row.
LORA_FACTOR_NAMES = ("lora_a", "lora_b", "lora_embedding_a", "lora_embedding_b")
# Lower-cased names containing any of these are not decayed (as in adam-mini 1.1.1, "ln" included).
NO_DECAY_NAMES = ("norm", "ln", "bias")


# Set in __init__ and needed by step(), beyond what torch.optim pickles (defaults, state, param_groups).
_CONFIGURATION = ("dim", "n_heads", "n_kv_heads", "head_numel", "world_size", "adam_block_names", "wqk_names",
                  "embd_names", "output_names", "wv_names", "mlp_names", "attn_proj_names", "lora_names",
                  "_routed_sets", "_shared_numel")


@dataclass(frozen=True)
class PartitionEntry:
    """How one parameter is partitioned: ``blocks`` second-moment scalars (learning rates) for ``numel`` elements."""

    name: str  # the lower-cased full name
    rule: str  # "adam" (per element), "head", "row" or "tensor" (one block)
    matched: str | None  # the name substring that chose the rule; None for the fallback
    blocks: int
    numel: int
    weight_decay: float


@document_args("maximize", "foreach", "fused")
class AdamMini(Optimizer):
    r"""Adam-mini (Zhang et al., 2025, ICLR, "Adam-mini: Use Fewer Learning Rates To Gain More",
    arXiv:2406.16793). Semantics of the authors' ``adam-mini`` 1.1.1 (``adam_mini.Adam_mini``).

    Each parameter :math:`\theta_p` is cut into blocks :math:`b` by its name, and all elements of a block share
    one second moment: the mean of the squared gradient over the block.

    .. math::
        \begin{aligned}
            &\textbf{input}: \gamma \text{ (lr)}, \beta_1, \beta_2, \epsilon, \lambda \text{ (weight decay)},
                \theta_0, f(\theta), \text{ blocks } b \text{ of every } \theta_p \\
            &\textbf{initialize}: m_0 \leftarrow 0, \ v_{0,b} \leftarrow 0 \\
            &\textbf{for}\ t = 1, 2, \ldots\ \textbf{do} \\
            &\quad g_t \leftarrow \nabla_\theta f_t(\theta_{t-1})
                \quad (\text{negated if maximize}) \\
            &\quad v_{t,b} \leftarrow \beta_2 v_{t-1,b}
                + (1 - \beta_2)\, \tfrac{1}{|b|} \textstyle\sum_{i \in b} g_{t,i}^2 \\
            &\quad m_t \leftarrow \beta_1 m_{t-1} + (1 - \beta_1) g_t \\
            &\quad \theta_{t,i} \leftarrow \theta_{t-1,i} (1 - \gamma\lambda_p)
                - \frac{\gamma}{1 - \beta_1^t} \, \frac{m_{t,i}}{\sqrt{v_{t,b(i)}} / \sqrt{1 - \beta_2^t}
                + \epsilon} \\
            &\textbf{return}\ \theta_t
        \end{aligned}

    The first rule whose name set has a substring of the lower-cased parameter name wins:

    ===========  ===================================================  =========================================
    rule         name substrings (editable sets, before ``step()``)    blocks
    ===========  ===================================================  =========================================
    ``adam``     ``adam_block_names``: bias                            every element (plain Adam)
    ``head``     ``wqk_names``: q_proj, k_proj, wq, wk, query, key      ``dim**2 // n_heads`` contiguous elements
    ``row``      ``embd_names``, ``output_names``, ``wv_names``,        each row of a 2-D weight (output neuron,
                 ``mlp_names``, ``attn_proj_names``                     token)
    ``tensor``   anything else (norms, unknown names)                  the whole tensor
    ===========  ===================================================  =========================================

    With ``partition="lora"`` (adamlab's, no published reference) peft's LoRA factors (``lora_A``, ``lora_B``) use
    the ``row`` rule, checked right after ``adam``: under the official rules a ``q_proj`` / ``k_proj`` factor is
    rarely a whole number of head blocks. :meth:`partition_report` lists every parameter's rule and block count;
    with ``verbose`` it is logged once at construction. A name that matches no rule, or a tensor given without a
    name, gets the ``tensor`` rule: one learning rate per tensor.

    Weight decay :math:`\lambda_p` is 0 for names containing ``norm``, ``ln`` or ``bias`` and ``weight_decay``
    otherwise (embeddings and the LM head are decayed). Every parameter is its own param group (keys ``name``,
    ``rule``, ``weight_decay`` and the defaults), so schedulers and per-parameter edits work as in the reference.

    State, in the parameter's dtype: ``step`` (a Python int, per parameter), ``m`` (full size; for ``head``
    viewed as one row per head block) and ``v`` (full size, ``adam``) or ``vmean`` (``(blocks, 1)`` for
    ``head`` / ``row``, 0-dim for ``tensor``): about half of AdamW's state.

    Distributed: a ``tensor``-rule parameter held by several ranks (DDP replicas, or shards) takes its mean over
    the elements of all ranks, with one ``all_reduce`` per step (redundant but exact under DDP). The world size is
    the process group's, not ``torch.cuda.device_count()`` as in the reference (which crashes without a process
    group on a multi-GPU machine and mis-sizes its collectives when the two differ). ``head`` and ``row`` blocks
    need every rank to hold whole blocks; flattened shards (FSDP1 flat params, DeepSpeed ZeRO) and DTensor
    parameters are not supported.

    Differences from the reference: every check fails at construction with a ``ValueError`` (``eps > 0``;
    ``dim``, ``n_heads``, ``n_kv_heads`` ints >= 1 and ``n_kv_heads`` dividing ``n_heads``; a ``head``-rule tensor
    that is not a whole number of head blocks; a ``row``-rule tensor that is not 2-D) where the reference asserts
    or fails at the first step; groups keep ``betas`` rather than ``beta1`` / ``beta2``; progress goes to
    ``logging`` instead of ``print``; a ``tensor``-rule parameter without a gradient gets no state (the
    reference creates it to take part in its collectives); an empty ``tensor``-rule parameter keeps ``vmean`` at
    0 (the reference's is 0/0); ``maximize`` and ``foreach`` are added.

    Args:
        named_parameters: ``(name, tensor)`` pairs, usually ``model.named_parameters()``, or dicts whose
            ``params`` are such pairs and whose other keys override the defaults for them. Parameters that do
            not require grad are skipped. A tensor given without a name is named ``#<index>``, which matches no
            rule: one block per tensor, decayed.
        lr: learning rate :math:`\gamma` (default 1e-3).
        betas: :math:`(\beta_1, \beta_2)` (default (0.9, 0.999)).
        eps: :math:`\epsilon`, added to the bias-corrected root second moment (default 1e-8).
        weight_decay: decoupled weight decay :math:`\lambda` for the decayed names (default 0).
        model_sharding: deprecated in the reference since 1.0.2 and ignored (a warning when given).
        dim: hidden size; the head block is ``dim * dim // n_heads`` elements (default 2048).
        n_heads: attention heads (default 32).
        n_kv_heads: key/value heads (GQA); only checked to divide ``n_heads``: K's size already gives its
            number of head blocks (default ``n_heads``).
        verbose: log the partition table and warnings once, at construction.
        partition: ``"official"`` (the v1.1.1 rules) or ``"lora"`` (LoRA factors per row).
    """

    def __init__(
        self,
        named_parameters: Iterable[tuple[str, Tensor]] | Iterable[Tensor] | Iterable[dict[str, Any]],
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        *,
        model_sharding: bool | None = None,
        dim: int = 2048,
        n_heads: int = 32,
        n_kv_heads: int | None = None,
        verbose: bool = True,
        partition: str = "official",
        maximize: bool = False,
        foreach: bool | None = None,
        fused: bool | None = None,
    ) -> None:
        check_lr(lr)
        check_betas(betas)
        check_eps(eps)
        check_nonnegative(weight_decay, "weight_decay")
        check_positive_int(dim, "dim")
        check_positive_int(n_heads, "n_heads")
        if n_kv_heads is not None:
            check_positive_int(n_kv_heads, "n_kv_heads")
            if n_heads % n_kv_heads:
                raise ValueError(f"Invalid n_kv_heads: {n_kv_heads} does not divide n_heads={n_heads}")
        if partition not in PARTITIONS:
            raise ValueError(f"Invalid partition: {partition!r} (expected one of {', '.join(PARTITIONS)})")
        if model_sharding is not None:
            warnings.warn("model_sharding is deprecated (adam-mini >= 1.0.2) and ignored", FutureWarning, stacklevel=2)

        self.dim, self.n_heads = dim, n_heads
        self.n_kv_heads = n_heads if n_kv_heads is None else n_kv_heads
        self.head_numel = dim * dim // n_heads
        self.world_size = dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1
        # The reference's name sets, in its attribute names, so its documented edits (optimizer.wv_names = {})
        # work here too.
        self.adam_block_names = {"bias"}
        self.wqk_names = {"k_proj", "q_proj", "wq", "wk", "query", "key"}
        self.embd_names = {"embed", "embd", "wte"}
        self.output_names = {"lm_head", "output", "final_layer"}
        self.wv_names = {"v_proj", "wv", "value"}
        self.mlp_names = {"feed_forward", "linear", "mlp"}
        self.attn_proj_names = {"o_proj", "wo", "attn.proj"}
        self.lora_names = set(LORA_FACTOR_NAMES)

        groups, named = _parameter_groups(named_parameters, weight_decay)
        check_fused(fused, foreach)
        defaults = dict(
            lr=lr,
            betas=betas,
            eps=eps,
            weight_decay=weight_decay,
            partition=partition,
            maximize=maximize,
            foreach=foreach,
            fused=fused,
        )
        super().__init__(groups, defaults)
        self._route()
        if verbose:
            self._log_partition(warn_unmatched=named)

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        """Add parameters as the constructor takes them: ``params`` holds ``(name, tensor)`` pairs or tensors, the
        other keys override the defaults. Each parameter becomes its own group and is routed to its rule at once."""
        if "name" not in param_group:
            groups, _ = _parameter_groups([param_group], self.defaults["weight_decay"], start=len(self.param_groups))
            for group in groups:
                self.add_param_group(group)
            return
        super().add_param_group(param_group)  # one parameter's group, with its name
        if hasattr(self, "_routed_sets"):  # added after construction; the constructor routes all groups at once
            self._route()

    def __getstate__(self) -> dict[str, Any]:
        # torch.optim keeps only defaults, state and param_groups: copy.deepcopy and pickle would drop the
        # configuration the next step() needs.
        return {**super().__getstate__(), **{name: getattr(self, name) for name in _CONFIGURATION}}

    @classmethod
    def from_model(cls, model: nn.Module, **hparams: Any) -> AdamMini:
        """Build for ``model``'s named parameters. ``dim``, ``n_heads`` and ``n_kv_heads`` come from its Hugging
        Face config (a peft model forwards to its base model's) unless given. A model with trainable LoRA factors
        gets ``partition="lora"`` unless ``partition`` is given: the official rules cannot split them per head."""
        config = getattr(model, "config", None)
        if config is not None:
            text_config = config.get_text_config() if hasattr(config, "get_text_config") else config
            for key, attribute in (("dim", "hidden_size"), ("n_heads", "num_attention_heads"),
                                   ("n_kv_heads", "num_key_value_heads")):
                value = getattr(text_config, attribute, None)
                if value is not None:
                    hparams.setdefault(key, value)
        named = list(model.named_parameters())
        if "partition" not in hparams and any(
            param.requires_grad and _match(name.lower(), LORA_FACTOR_NAMES) for name, param in named
        ):
            hparams["partition"] = "lora"
        return cls(named, **hparams)

    # --- partition ------------------------------------------------------------------------------------------

    def _name_sets(self) -> tuple[frozenset[str], ...]:
        return tuple(
            frozenset(names)
            for names in (self.adam_block_names, self.lora_names, self.wqk_names, self.embd_names,
                          self.output_names, self.wv_names, self.mlp_names, self.attn_proj_names)
        )

    def _rule_for(self, name: str) -> tuple[str, str | None]:
        """The rule for a lower-cased name and the substring that chose it."""
        row_names = [*self.embd_names, *self.output_names, *self.wv_names, *self.mlp_names, *self.attn_proj_names]
        rules = [(ADAM, self.adam_block_names)]
        if self.defaults["partition"] == "lora":
            rules.append((ROW, self.lora_names))
        rules += [(HEAD, self.wqk_names), (ROW, row_names)]
        for rule, names in rules:
            matched = _match(name, names)
            if matched is not None:
                return rule, matched
        return TENSOR, None

    def _block_count(self, param: Tensor, rule: str) -> int:
        if rule == ADAM:
            return param.numel()
        if rule == HEAD:
            return param.numel() // self.head_numel
        return param.shape[0] if rule == ROW else 1

    def _route(self) -> None:
        """Give every parameter its rule (checking the shape the rule needs) and find the ``tensor``-rule
        parameters held by several ranks. A collective when the world size is > 1: every rank routes together."""
        self._routed_sets = self._name_sets()
        for group in self.param_groups:
            (param,) = group["params"]
            name = group["name"]
            rule, matched = self._rule_for(name)
            if rule == HEAD and (self.dim * self.dim) % self.n_heads:
                raise ValueError(f"{name} is split per head, but dim * dim = {self.dim ** 2} is not a multiple of "
                                 f"n_heads = {self.n_heads}")
            if rule == HEAD and param.numel() % self.head_numel:
                hint = " (LoRA factors: use partition='lora')" if _match(name, LORA_FACTOR_NAMES) else ""
                raise ValueError(
                    f"{name} {tuple(param.shape)} is split per head ({matched!r} in its name), but its "
                    f"{param.numel()} elements are not a whole number of head blocks of dim * dim // n_heads = "
                    f"{self.head_numel} (dim={self.dim}, n_heads={self.n_heads}){hint}"
                )
            if rule == ROW and param.dim() != 2:
                raise ValueError(
                    f"{name} {tuple(param.shape)} gets one second moment per row ({matched!r} in its name), which "
                    f"needs a 2-D tensor; remove {matched!r} from the optimizer's name sets or rename the parameter"
                )
            if self.state.get(param) and group.get("rule", rule) != rule:
                raise RuntimeError(f"{name} moved from rule {group['rule']!r} to {rule!r} after its state was "
                                   "created: edit the name sets before the first step()")
            group["rule"] = rule

        # Element counts summed over ranks, for the tensor-rule parameters at least two ranks hold a part of.
        self._shared_numel: dict[Tensor, float] = {}
        whole = [group["params"][0] for group in self.param_groups if group["rule"] == TENSOR]
        if self.world_size > 1 and whole:
            local = torch.tensor([p.numel() for p in whole], dtype=torch.float64, device=_collective_device())
            gathered = [torch.empty_like(local) for _ in range(self.world_size)]
            dist.all_gather(gathered, local)
            counts = torch.stack(gathered)
            for param, total, holders in zip(whole, counts.sum(0).tolist(), (counts > 0).sum(0).tolist()):
                if holders >= 2:
                    self._shared_numel[param] = total

    def partition_report(self) -> list[PartitionEntry]:
        """Every trainable parameter with the rule, matching substring and block count the next step uses."""
        entries = []
        for group in self.param_groups:
            (param,) = group["params"]
            rule, matched = self._rule_for(group["name"])
            entries.append(PartitionEntry(group["name"], rule, matched, self._block_count(param, rule),
                                          param.numel(), group["weight_decay"]))
        return entries

    def _log_partition(self, warn_unmatched: bool) -> None:
        entries = self.partition_report()
        width = max(len(e.name) for e in entries)
        lines = [f"{e.name:<{width}}  {e.rule:<6}  {e.blocks:>9,} blocks  wd={e.weight_decay:g}  "
                 f"({e.matched or 'no match'})" for e in entries]
        blocks, numel = sum(e.blocks for e in entries), sum(e.numel for e in entries)
        logger.info("Adam-mini partition (%s, world size %d): %d tensors, %s second-moment scalars for %s "
                    "elements\n%s", self.defaults["partition"], self.world_size, len(entries), f"{blocks:,}",
                    f"{numel:,}", "\n".join(lines))
        if warn_unmatched and all(e.rule in (ADAM, TENSOR) for e in entries):
            logger.warning("Adam-mini: no parameter name matched an attention, MLP, embedding or output rule, so "
                           "every tensor gets one learning rate; adam-mini warns this can destabilise large "
                           "Transformers. Add the names' substrings to the optimizer's name sets.")

    # --- step -----------------------------------------------------------------------------------------------

    def _sum_shared_squares(self) -> dict[Tensor, Tensor]:
        """Sum of squared gradients over all ranks for the tensor-rule parameters several ranks hold, in one
        collective. A rank without a gradient for one of them adds 0, so every rank makes the same call."""
        if not self._shared_numel:
            return {}
        device = _collective_device()
        sums = torch.stack([
            (p.grad * p.grad).sum().to(device, torch.float64) if p.grad is not None
            else torch.zeros((), dtype=torch.float64, device=device)
            for p in self._shared_numel
        ])
        dist.all_reduce(sums)
        return {p: s.to(p.device, p.dtype) for p, s in zip(self._shared_numel, sums) if p.grad is not None}

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:
        loss = evaluate_closure(closure)
        if self._name_sets() != self._routed_sets:
            self._route()
        shared_sums = self._sum_shared_squares()
        # Params travel in buckets of equal hyperparameters (typically two: decayed or not) so the update takes
        # scalars; every param is its own group.
        buckets: dict[tuple, tuple[dict, list, list, list, list, list, list, list]] = {}
        for group in self.param_groups:
            (param,) = group["params"]
            grad = param.grad
            if grad is None:
                continue
            if grad.is_sparse:
                raise RuntimeError("AdamMini does not support sparse gradients")
            rule, state = group["rule"], self.state[param]
            if not state:
                _init_state(state, param, rule, self.head_numel)
            state["step"] += 1
            m = state["m"]
            grad_blocks = grad.view_as(m)
            # None: the block means of g^2 are still to take (inside the fused update)
            shared_mean = shared_sums[param] / self._shared_numel[param] if param in shared_sums else None
            key = (group["lr"], tuple(group["betas"]), group["eps"], group["weight_decay"], group["maximize"],
                   group["foreach"], group.get("fused"))
            bucket = buckets.setdefault(key, (group, [], [], [], [], [], [], []))
            values = (param.view_as(m), grad_blocks, m, state["v" if rule == ADAM else "vmean"], shared_mean,
                      state["step"], rule)
            for tensor_list, value in zip(bucket[1:], values):
                tensor_list.append(value)

        for group, params, grads, ms, vs, mean_squares, steps, rules in buckets.values():
            # The AdamW update, each rule's second moment (full size, (blocks, 1) or 0-dim) broadcasting over m
            # viewed with one row per block.
            update = multi_tensor_adamw if use_foreach(group, params) else single_tensor_adamw
            if use_fused(group, params):
                # the fused update takes the block means itself (from each second moment's shape): on CPU a
                # hand-written kernel reduces and updates each block in one sweep; elsewhere a first compiled
                # graph reduces g^2 per block into the blocks' step factors, a second applies them
                update = fused_adamw
            else:
                mean_squares = [_block_mean_square(grad, rule) if mean is None else mean
                                for grad, rule, mean in zip(grads, rules, mean_squares)]
            beta1, beta2 = group["betas"]
            update(
                params,
                grads,
                ms,
                vs,
                steps,
                grad_squares=mean_squares,
                lr=group["lr"],
                beta1=beta1,
                beta2=beta2,
                eps=group["eps"],
                weight_decay=group["weight_decay"],
                maximize=group["maximize"],
            )
        return loss


def _match(name: str, substrings: Iterable[str]) -> str | None:
    return next((s for s in sorted(substrings) if s in name), None)


def _parameter_groups(named_parameters, weight_decay: float, start: int = 0) -> tuple[list[dict[str, Any]], bool]:
    """One group per trainable parameter (its ``name`` lower-cased, no weight decay for the no-decay names), and
    whether any parameter came with a name. Unnamed tensors are named ``#<index>``, counted from ``start``."""
    groups, named = [], False
    for index, (name, param, overrides) in enumerate(_named_entries(named_parameters), start=start):
        if not param.requires_grad:
            continue
        named = named or name is not None
        name = f"#{index}" if name is None else name.lower()
        reject_complex([param], "AdamMini", f"the blocks of {name} (heads, rows) are laid out over real entries")
        decay = 0.0 if any(s in name for s in NO_DECAY_NAMES) else overrides.get("weight_decay", weight_decay)
        groups.append({**overrides, "params": [param], "name": name, "weight_decay": decay})
    return groups, named


def _named_entries(named_parameters) -> Iterator[tuple[str | None, Tensor, dict[str, Any]]]:
    """(name or None, tensor, group overrides) for each pair or bare tensor, alone or inside a param-group dict."""
    if isinstance(named_parameters, Tensor):
        named_parameters = [named_parameters]
    for item in named_parameters:
        if isinstance(item, dict):
            overrides, entries = {k: v for k, v in item.items() if k != "params"}, item["params"]
        else:
            overrides, entries = {}, [item]
        for entry in [entries] if isinstance(entries, Tensor) else entries:
            if isinstance(entry, Tensor):
                yield None, entry, overrides
            elif (isinstance(entry, (tuple, list)) and len(entry) == 2 and isinstance(entry[0], str)
                  and isinstance(entry[1], Tensor)):
                yield entry[0], entry[1], overrides
            else:
                raise TypeError("AdamMini takes (name, tensor) pairs such as model.named_parameters(), tensors, or "
                                f"param-group dicts of them; got {type(entry).__name__}")


def _collective_device() -> torch.device:
    """NCCL moves only CUDA tensors (the reference reduced CPU-resident scalars wrongly); gloo moves CPU ones."""
    return torch.device("cuda", torch.cuda.current_device()) if "nccl" in dist.get_backend() else torch.device("cpu")


def _init_state(state: dict, param: Tensor, rule: str, head_numel: int) -> None:
    state["step"] = 0
    if rule == HEAD:  # m viewed as one row per head block, so each row's mean is its block's
        state["m"] = param.new_zeros(param.numel() // head_numel, head_numel)
        state["vmean"] = param.new_zeros(state["m"].shape[0], 1)
        return
    state["m"] = torch.zeros_like(param, memory_format=torch.preserve_format)
    if rule == ADAM:
        state["v"] = torch.zeros_like(param, memory_format=torch.preserve_format)
    elif rule == ROW:
        state["vmean"] = param.new_zeros(param.shape[0], 1)
    else:
        state["vmean"] = param.new_zeros(())


def _block_mean_square(grad_blocks: Tensor, rule: str) -> Tensor:
    """Mean of the squared gradient over each block, shaped like the rule's second moment."""
    square = grad_blocks * grad_blocks
    if rule == ADAM:
        return square
    if rule == TENSOR:
        return square.sum() / max(square.numel(), 1)  # an empty tensor's second moment stays 0, not 0/0
    return square.mean(dim=1, keepdim=True)
