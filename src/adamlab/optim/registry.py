"""One name registry for every optimizer adamlab offers: torch.optim's, adamlab's own and third-party peers.

``create_optimizer(name, params_or_model, **hparams)`` is the single entry point. Names are case-insensitive;
Hugging Face ``TrainingArguments.optim`` names are accepted as aliases where they exist. Hyperparameters are
checked against the optimizer's signature before anything is built, and third-party packages are imported
only when their optimizer is asked for.
"""

from __future__ import annotations

import difflib
import importlib
import importlib.util
import inspect
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.optim import Optimizer

from ..extras import MissingDependencyError
from ._common import check_beta, check_betas, check_eps, check_lr, check_nonnegative
from .adabelief import AdaBelief
from .adabound import AdaBound
from .adam_mini import AdamMini
from .came import CAME
from .hparams import coerce_hparams
from .hybrid_adam_sgd import HybridAdamSGD
from .ldadam import LDAdamW
from .lion import Lion
from .lookahead import Lookahead
from .param_groups import no_weight_decay, param_groups
from .switch import Switch
from .yogi import Yogi


@dataclass(frozen=True)
class OptimizerSpec:
    name: str
    summary: str
    source: str  # "torch", "adamlab", or the third-party package that implements it
    target: str | type[Optimizer]  # the class, or "module:Class" imported on first use
    fixed: dict[str, Any] = field(default_factory=dict)  # hyperparameters the name implies (amsgrad=True, ...)
    extra: str | None = None  # the adamlab extra that installs ``source``
    aliases: tuple[str, ...] = ()
    # Builds the optimizer from a model when it needs more than parameters (names, its own groups); the default
    # policy is ``param_groups``.
    from_model: Callable[..., Optimizer] | None = None
    # Where the learning rate comes from when the name implies one ("dds": the data-dependent step size, resolved by
    # the training layer's lr resolver); None: the caller's lr=.
    lr_source: str | None = None
    # Hyperparameters set unless given (unlike ``fixed``): the Hugging Face Trainer's choices for its optim= name.
    defaults: dict[str, Any] = field(default_factory=dict)
    # Hyperparameter values under which the optimizer computes its own step size and takes no lr (HF Adafactor's
    # relative_step=True), and the "module:Class" LR scheduler that reports the step size it uses; train, studies and
    # recommend then neither take nor search an lr.
    own_lr_when: dict[str, Any] = field(default_factory=dict)
    own_lr_scheduler: str | None = None

    def computes_own_lr(self, hparams: dict[str, Any]) -> bool:
        """Whether ``hparams`` (the caller's, before defaults) put the optimizer in its learning-rate-free mode."""
        chosen = {**self.defaults, **hparams, **self.fixed}
        return bool(self.own_lr_when) and all(chosen.get(k) == v for k, v in self.own_lr_when.items())

    @property
    def installed(self) -> bool:
        if not isinstance(self.target, str):
            return True
        return importlib.util.find_spec(self.target.split(":")[0].split(".")[0]) is not None

    def resolve(self) -> type[Optimizer]:
        if not isinstance(self.target, str):
            return self.target
        module_name, class_name = self.target.split(":")
        try:
            module = importlib.import_module(module_name)
        except ImportError as error:
            raise MissingDependencyError(
                f"optimizer {self.name!r} needs the {self.source!r} package: pip install 'adamlab[{self.extra}]'"
            ) from error
        return getattr(module, class_name)


def _spec(name, summary, source, target, fixed=None, extra=None, aliases=(), from_model=None,
          lr_source=None, defaults=None, own_lr_when=None, own_lr_scheduler=None) -> OptimizerSpec:
    return OptimizerSpec(name, summary, source, target, fixed or {}, extra, tuple(aliases), from_model, lr_source,
                         defaults=defaults or {}, own_lr_when=own_lr_when or {}, own_lr_scheduler=own_lr_scheduler)


_SPECS = [
    # torch.optim has these algorithms: never re-implemented here.
    _spec("adam", "Adam (Kingma & Ba 2015)", "torch", torch.optim.Adam),
    _spec("adamw", "Adam with decoupled weight decay (Loshchilov & Hutter 2019)", "torch", torch.optim.AdamW,
          aliases=["adamw_torch"]),
    _spec("adamw_fused", "AdamW, fused kernel", "torch", torch.optim.AdamW, {"fused": True},
          aliases=["adamw_torch_fused"]),
    _spec("amsgrad", "Adam with the AMSGrad max of second moments (Reddi et al. 2018)", "torch", torch.optim.Adam,
          {"amsgrad": True}),
    _spec("sgd", "SGD with optional momentum / Nesterov", "torch", torch.optim.SGD),
    _spec("radam", "Rectified Adam (Liu et al. 2020)", "torch", torch.optim.RAdam),
    _spec("nadam", "Adam with Nesterov momentum (Dozat 2016)", "torch", torch.optim.NAdam),
    _spec("adafactor", "Adafactor, factored second moments (Shazeer & Stern 2018)", "torch", torch.optim.Adafactor),
    _spec("adagrad", "Adagrad (Duchi et al. 2011)", "torch", torch.optim.Adagrad),
    # adamlab's own implementations.
    _spec("adabelief", "AdaBelief: second moment of the gradient's surprise (Zhuang et al. 2020)", "adamlab",
          AdaBelief),
    _spec("adabound", "AdaBound: Adam clipped into bounds that converge to SGD (Luo et al. 2019)", "adamlab",
          AdaBound),
    _spec("yogi", "Yogi: additive second-moment update (Zaheer et al. 2018)", "adamlab", Yogi),
    _spec("lion", "Lion: sign momentum (Chen et al. 2023)", "adamlab", Lion, aliases=["lion_32bit"]),
    _spec("came", "CAME: confidence-guided factored moments (Luo et al. 2023)", "adamlab", CAME),
    _spec("hybrid_adam_sgd", "Adam blended linearly into SGD with momentum", "adamlab", HybridAdamSGD),
    # Memory-efficient Adam: LDAdam (below this line)
    _spec("ldadam", "LDAdam: low-rank Adam with error feedback (Robert et al. 2025)", "adamlab", LDAdamW, from_model=LDAdamW.from_model),
    # Memory-efficient Adam: Adam-mini (below this line)
    _spec("adam_mini", "Adam-mini: one second moment per head, neuron or tensor (Zhang et al. 2025)", "adamlab",
          AdamMini, from_model=AdamMini.from_model),
    # Data-dependent step size: adam_dds (below this line)
    _spec("adam_dds", "Adam at the data-dependent step size (AdamDDS), resolved before training", "torch",
          torch.optim.Adam, lr_source="dds"),
    # Learning-rate-free and quantized peers, through their own packages.
    _spec("schedulefree_adamw", "Schedule-free AdamW (Defazio et al. 2024); call optimizer.train()/eval()",
          "schedulefree", "schedulefree:AdamWScheduleFree", extra="lrfree", aliases=["schedule_free_adamw"]),
    _spec("prodigy", "Prodigy: learning-rate-free Adam (Mishchenko & Defazio 2024)", "prodigyopt",
          "prodigyopt:Prodigy", extra="lrfree"),
    _spec("dadapt_adam", "D-Adaptation Adam (Defazio & Mishchenko 2023)", "dadaptation",
          "dadaptation:DAdaptAdam", extra="lrfree"),
    _spec("adamw_8bit", "AdamW with 8-bit block-wise quantized states (Dettmers et al. 2022)", "bitsandbytes",
          "bitsandbytes.optim:AdamW8bit", extra="bnb", aliases=["adamw_bnb_8bit"]),
    _spec("paged_adamw_8bit", "8-bit AdamW with states paged to CPU memory under pressure", "bitsandbytes",
          "bitsandbytes.optim:PagedAdamW8bit", extra="bnb"),
    _spec("adam_8bit", "Adam (L2 weight decay) with 8-bit block-wise quantized states", "bitsandbytes",
          "bitsandbytes.optim:Adam8bit", extra="bnb"),
    _spec("paged_adamw_32bit", "AdamW with 32-bit states paged to CPU memory under pressure (QLoRA's optimizer)",
          "bitsandbytes", "bitsandbytes.optim:PagedAdamW32bit", extra="bnb"),
    # transformers' Adafactor (T5, PaLM): relative_step=True is its lr-free mode (no lr; warmup_init to ramp up),
    # beta1 adds first-moment momentum. The defaults are the HF Trainer's optim="adafactor": an explicit lr.
    _spec("adafactor_hf", "Adafactor as transformers ships it: lr-free relative_step mode, optional beta1 momentum",
          "transformers", "transformers.optimization:Adafactor",
          defaults={"relative_step": False, "scale_parameter": False, "warmup_init": False},
          own_lr_when={"relative_step": True}, own_lr_scheduler="transformers.optimization:AdafactorSchedule"),
    # Baselines of the Adam-mini paper, from pytorch-optimizer.
    _spec("lamb", "LAMB: Adam with a layer-wise trust ratio (You et al. 2020)", "pytorch_optimizer",
          "pytorch_optimizer:Lamb", extra="baselines"),
    _spec("sm3", "SM3: second moments kept as cover-set maxima (Anil et al. 2019)", "pytorch_optimizer",
          "pytorch_optimizer:SM3", extra="baselines"),
]

REGISTRY: dict[str, OptimizerSpec] = {spec.name: spec for spec in _SPECS}
ALIASES: dict[str, str] = {alias: spec.name for spec in _SPECS for alias in spec.aliases}
LOOKAHEAD_HPARAMS = ("k", "alpha")
# Names that build other registered optimizers and wrap them.
WRAPPERS = ("lookahead", "switch")


def available_optimizers(installed_only: bool = True) -> list[str]:
    """Registered names (plus the wrappers ``lookahead`` and ``switch``); by default only those whose package is
    installed."""
    names = [name for name, spec in REGISTRY.items() if spec.installed or not installed_only]
    return sorted(names + list(WRAPPERS))


def resolve_name(name: str) -> str:
    """The canonical registry name for ``name`` or an alias of it; ``ValueError`` listing close matches."""
    key = name.strip().lower().replace("-", "_")
    key = ALIASES.get(key, key)
    if key in REGISTRY or key in WRAPPERS:
        return key
    known = sorted([*REGISTRY, *ALIASES, *WRAPPERS])
    close = difflib.get_close_matches(key, known, n=3, cutoff=0.6)
    hint = f" Did you mean {', '.join(map(repr, close))}?" if close else ""
    raise ValueError(f"Unknown optimizer {name!r}.{hint} Valid names: {', '.join(sorted([*REGISTRY, *WRAPPERS]))}")


def accepted_hparams(cls: type[Optimizer]) -> list[str]:
    return [n for n in inspect.signature(cls.__init__).parameters if n not in ("self", "params", "args", "kwargs")]


def _check_hparams(name: str, cls: type[Optimizer], hparams: dict[str, Any]) -> None:
    # Checked against the named parameters even when the class also takes **kwargs: pytorch-optimizer's classes
    # swallow unknown keywords, so a typo would otherwise train with the default.
    valid = accepted_hparams(cls)
    for key in hparams:
        if key not in valid:
            close = difflib.get_close_matches(key, valid, n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise ValueError(f"Unknown hyperparameter {key!r} for optimizer {name!r}.{hint} Valid: {', '.join(valid)}")


def _check_common_hparams(hparams: dict[str, Any]) -> None:
    """The checks every optimizer gets, whatever its implementation validates: torch and third-party classes
    accept some values (eps = 0, NaN weight decay, momentum >= 1) that only fail later, mid-training."""
    if "lr" in hparams:
        check_lr(hparams["lr"])
    if "betas" in hparams:
        betas = hparams["betas"]
        check_betas(betas, len(betas) if isinstance(betas, (tuple, list)) else 2)
    if isinstance(hparams.get("eps"), (int, float)):  # Adafactor and CAME take a pair
        check_eps(hparams["eps"])
    for name in ("weight_decay", "momentum"):
        if name in hparams:
            check_nonnegative(hparams[name], name)
    if "momentum" in hparams:
        check_beta(hparams["momentum"], "momentum")


def create_optimizer(
    name: str,
    params_or_model: nn.Module | Iterable[torch.Tensor] | Iterable[dict[str, Any]],
    *,
    no_decay: Callable[[str, torch.Tensor, nn.Module], bool] = no_weight_decay,
    **hparams: Any,
) -> Optimizer:
    """Build optimizer ``name`` for a model or for params / param groups.

    Given a model, its trainable parameters are grouped by ``no_decay`` (see ``no_weight_decay``) and the
    optimizer's weight decay applies to the decayed group only. ``lookahead`` takes ``base`` (an optimizer name,
    default ``"adam"``), ``k`` and ``alpha``; its other hyperparameters go to the base optimizer.
    """
    key = resolve_name(name)
    if key == "switch":
        return _create_switch(params_or_model, no_decay, **hparams)
    if key == "lookahead":
        base = hparams.pop("base", "adam")
        if resolve_name(base) == "lookahead":
            raise ValueError("lookahead cannot wrap lookahead")
        wrapper = {k: hparams.pop(k) for k in LOOKAHEAD_HPARAMS if k in hparams}
        return Lookahead(create_optimizer(base, params_or_model, no_decay=no_decay, **hparams), **wrapper)

    spec = REGISTRY[key]
    cls = spec.resolve()
    clashing = sorted(set(hparams) & set(spec.fixed))
    if clashing:
        raise ValueError(f"optimizer {key!r} fixes {', '.join(f'{k}={spec.fixed[k]!r}' for k in clashing)}")
    hparams = {**spec.defaults, **hparams, **spec.fixed}
    _check_hparams(key, cls, hparams)
    hparams = coerce_hparams(key, cls, hparams)
    _check_common_hparams(hparams)

    params = params_or_model
    if isinstance(params_or_model, nn.Module) and spec.from_model is not None:
        return spec.from_model(params_or_model, **hparams)
    if isinstance(params_or_model, nn.Module):
        decay_param = inspect.signature(cls.__init__).parameters.get("weight_decay")
        if decay_param is None:
            params = [p for p in params_or_model.parameters() if p.requires_grad]
        else:
            weight_decay = hparams.pop("weight_decay", decay_param.default)
            params = param_groups(params_or_model, weight_decay, no_decay)
    return cls(params, **hparams)


def _create_switch(params_or_model, no_decay, *, phases=None, milestones=(), carry=True, **shared) -> Switch:
    """``switch``: ``phases`` lists each optimizer as ``{"name": <registry name>, **hyperparameters}``, built like
    ``create_optimizer`` with the shared hyperparameters (``lr``, ``weight_decay``, ...) overridden by its own (a
    phase's ``None`` drops a shared one: ``{"name": "adafactor_hf", "lr": None, "relative_step": True}``);
    ``milestones`` are the steps at which each next phase takes over."""
    if (not isinstance(phases, (list, tuple)) or len(phases) < 2
            or not all(isinstance(phase, dict) and isinstance(phase.get("name"), str) for phase in phases)):
        raise ValueError("switch needs phases=[{'name': 'sgd', ...}, {'name': 'adamw', ...}] (two or more, each "
                         f"with a registry name) and milestones=[step, ...]; got phases={phases!r}")
    if not isinstance(params_or_model, nn.Module):
        params_or_model = list(params_or_model)  # every phase goes through it
    optimizers = []
    for phase in phases:
        hparams = {key: value for key, value in {**shared, **phase}.items() if value is not None}
        name = hparams.pop("name")
        if resolve_name(name) == "switch":
            raise ValueError("a switch phase cannot be a switch")
        # fresh copies of param-group dicts for each phase: torch.optim writes its defaults into the dicts it gets
        params = params_or_model if isinstance(params_or_model, nn.Module) else [
            dict(item) if isinstance(item, dict) else item for item in params_or_model
        ]
        optimizers.append(create_optimizer(name, params, no_decay=no_decay, **hparams))
    return Switch(optimizers, list(milestones), carry=carry)
