import sys

import pytest
import torch
from torch import nn

from adamlab.optim import available_optimizers, create_optimizer, param_groups, registry
from adamlab.optim.lookahead import Lookahead


class TinyModel(nn.Module):
    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(11, 8)
        self.proj = nn.Linear(8, 8)
        self.norm = nn.LayerNorm(8)
        self.head = nn.Linear(8, 3, bias=False)
        self.scale = nn.Parameter(torch.ones(8))  # 1-D but not a bias or norm: still no decay
        self.frozen = nn.Linear(8, 8)
        self.frozen.requires_grad_(False)

    def forward(self, tokens):
        return self.head(self.norm(self.proj(self.embed(tokens)) * self.scale + self.frozen(self.embed(tokens))))


def loss_of(model):
    tokens = torch.arange(10).reshape(2, 5)
    return model(tokens).logsumexp(-1).mean()


@pytest.mark.parametrize("name", available_optimizers())
def test_every_available_name_builds_and_steps_on_a_model(name):
    torch.manual_seed(0)
    model = TinyModel()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    hparams = {}
    if name == "switch":
        hparams = dict(phases=[{"name": "sgd", "momentum": 0.9}, {"name": "adamw"}], milestones=[2])
    optimizer = create_optimizer(name, model, lr=1e-2, **hparams)
    if hasattr(optimizer, "train"):  # schedule-free optimizers must be put in train mode
        optimizer.train()
    for _ in range(3):
        optimizer.zero_grad()
        loss_of(model).backward()
        optimizer.step()
    for n, p in model.named_parameters():
        changed = not torch.equal(p, before[n])
        assert changed == p.requires_grad, f"{name}: {n} {'moved' if changed else 'did not move'}"


def test_default_policy_decays_matrices_only():
    model = TinyModel()
    decay, no_decay = param_groups(model, weight_decay=0.1)
    names = {id(p): n for n, p in model.named_parameters()}
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
    assert sorted(names[id(p)] for p in decay["params"]) == ["embed.weight", "head.weight", "proj.weight"]
    assert sorted(names[id(p)] for p in no_decay["params"]) == ["norm.bias", "norm.weight", "proj.bias", "scale"]


def test_optimizer_weight_decay_goes_to_the_decayed_group_and_the_policy_is_overridable():
    optimizer = create_optimizer("adamw", TinyModel(), lr=1e-3, weight_decay=0.05)
    assert [g["weight_decay"] for g in optimizer.param_groups] == [0.05, 0.0]
    everything = create_optimizer("adamw", TinyModel(), weight_decay=0.05, no_decay=lambda name, p, module: False)
    assert [g["weight_decay"] for g in everything.param_groups] == [0.05]
    assert len(everything.param_groups[0]["params"]) == 7


def test_tied_weights_are_placed_once():
    model = TinyModel()
    model.head.weight = nn.Parameter(torch.randn(3, 8))
    model.embed.weight = model.head.weight  # tie
    groups = param_groups(model, 0.1)
    ids = [id(p) for g in groups for p in g["params"]]
    assert len(ids) == len(set(ids))


@pytest.mark.parametrize(
    "alias,name,check",
    [
        ("adamw_torch", "adamw", lambda o: isinstance(o, torch.optim.AdamW)),
        ("adamw_torch_fused", "adamw_fused", lambda o: o.defaults["fused"] is True),
        ("AMSGrad", "amsgrad", lambda o: o.defaults["amsgrad"] is True),
        ("lion_32bit", "lion", lambda o: type(o).__name__ == "Lion"),
        ("schedule_free_adamw", "schedulefree_adamw", lambda o: type(o).__name__ == "AdamWScheduleFree"),
    ],
)
def test_hugging_face_names_are_aliases(alias, name, check):
    assert registry.resolve_name(alias) == name
    assert check(create_optimizer(alias, TinyModel()))


def test_unknown_name_lists_close_matches_and_valid_names():
    with pytest.raises(ValueError, match=r"Did you mean 'adabelief'.*Valid names: .*adamw, .*yogi"):
        create_optimizer("adabeleif", TinyModel())


@pytest.mark.parametrize(
    "hparams,match",
    [
        (dict(lr=-1e-3), "learning rate"),
        (dict(lr=float("inf")), "learning rate"),
        (dict(betas=(0.9, 1.0)), "beta"),
        (dict(betas=(-0.1, 0.999)), "beta"),
        (dict(eps=0.0), "eps"),
        (dict(weight_decay=-1.0), "weight_decay"),
        (dict(betaz=(0.9, 0.99)), r"Unknown hyperparameter 'betaz'.*Did you mean 'betas'"),
    ],
)
@pytest.mark.parametrize("name", ["adam", "adamw", "nadam", "radam", "adabelief", "yogi", "hybrid_adam_sgd", "prodigy"])
def test_invalid_hyperparameters_fail_before_any_work(name, hparams, match):
    with pytest.raises(ValueError, match=match):
        create_optimizer(name, TinyModel(), **hparams)


def test_fixed_hyperparameters_cannot_be_overridden():
    with pytest.raises(ValueError, match="fixes amsgrad=True"):
        create_optimizer("amsgrad", TinyModel(), amsgrad=False)


def test_sgd_momentum_must_be_below_one():
    with pytest.raises(ValueError, match="momentum"):
        create_optimizer("sgd", TinyModel(), lr=0.1, momentum=1.0)


def test_missing_third_party_package_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "prodigyopt", None)  # import prodigyopt now raises ImportError
    with pytest.raises(registry.MissingDependencyError, match=r"pip install 'adamlab\[lrfree\]'"):
        create_optimizer("prodigy", TinyModel())


def test_lookahead_wraps_a_named_base_and_routes_its_hyperparameters():
    optimizer = create_optimizer("lookahead", TinyModel(), base="radam", k=3, alpha=0.8, lr=2e-3)
    assert isinstance(optimizer, Lookahead) and isinstance(optimizer.optimizer, torch.optim.RAdam)
    assert optimizer.param_groups[0]["lr"] == 2e-3
    with pytest.raises(ValueError, match="Unknown optimizer"):
        create_optimizer("lookahead", TinyModel(), base="nope")


def train_steps(optimizer, model, steps=5):
    losses = []
    for _ in range(steps):
        optimizer.zero_grad()
        loss = loss_of(model)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return losses


def test_adafactor_hf_lr_free_mode_trains_without_an_lr():
    """relative_step=True: the step size comes from the step count and the parameter's scale, not from lr."""
    torch.manual_seed(0)
    model = TinyModel()
    optimizer = create_optimizer("adafactor_hf", model, relative_step=True, scale_parameter=True, warmup_init=True)
    assert optimizer.param_groups[0]["lr"] is None
    losses = train_steps(optimizer, model, steps=20)
    assert losses[-1] < losses[0]
    with pytest.raises(ValueError, match="relative_step"):  # transformers refuses an lr in the lr-free mode
        create_optimizer("adafactor_hf", TinyModel(), lr=1e-3, relative_step=True)


def test_adafactor_hf_defaults_to_the_trainers_explicit_lr_and_takes_beta1_momentum():
    torch.manual_seed(0)
    model = TinyModel()
    optimizer = create_optimizer("adafactor_hf", model, lr=1e-2, beta1=0.9)
    group = optimizer.param_groups[0]
    assert (group["relative_step"], group["scale_parameter"], group["warmup_init"]) == (False, False, False)
    train_steps(optimizer, model, steps=2)
    assert all("exp_avg" in state for state in optimizer.state.values())  # the first moment, with beta1
    assert create_optimizer("adafactor_hf", TinyModel(), relative_step=True).param_groups[0]["relative_step"]


@pytest.mark.parametrize("name", ["lamb", "sm3"])
def test_pytorch_optimizer_baselines_reject_typos_and_name_their_extra(name, monkeypatch):
    """pytorch-optimizer's classes take **kwargs and ignore unknown ones: the registry checks names itself."""
    with pytest.raises(ValueError, match="Unknown hyperparameter 'lrr'"):
        create_optimizer(name, TinyModel(), lrr=1e-3)
    monkeypatch.setitem(sys.modules, "pytorch_optimizer", None)
    with pytest.raises(registry.MissingDependencyError, match=r"pip install 'adamlab\[baselines\]'"):
        create_optimizer(name, TinyModel())


def test_bitsandbytes_names_and_their_hugging_face_aliases():
    assert registry.resolve_name("adamw_bnb_8bit") == "adamw_8bit"
    assert registry.resolve_name("paged_adamw_32bit") == "paged_adamw_32bit"
    assert registry.REGISTRY["adam_8bit"].target == "bitsandbytes.optim:Adam8bit"
