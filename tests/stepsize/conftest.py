"""Small problems with known or exactly computable curvature, and a tiny LoRA language model."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch
from torch import nn

from adamlab.encoding import encode_causal
from adamlab.models import LoraSettings, apply_lora, load_model
from adamlab.tasks import get_task
from adamlab.training.losses import training_loss


class MLP(nn.Module):
    """A tanh MLP in fp64 (about 1,500 parameters): small enough to form its Hessian exactly."""

    def __init__(self, seed: int = 0, inputs: int = 12, hidden: int = 96, outputs: int = 3):
        super().__init__()
        generator = torch.Generator().manual_seed(seed)
        self.hidden = nn.Linear(inputs, hidden).double()
        self.out = nn.Linear(hidden, outputs).double()
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=generator, dtype=torch.float64) * 0.5)

    def forward(self, x):
        return self.out(torch.tanh(self.hidden(x)))


@dataclass
class Regression:
    model: MLP
    x: torch.Tensor
    y: torch.Tensor

    def loss(self, model: nn.Module, items: list[int]) -> torch.Tensor:
        """The mean squared error of the examples ``items`` (indices): the estimator's loss_fn form."""
        index = torch.tensor(items)
        return ((model(self.x[index]) - self.y[index]) ** 2).sum(-1).mean()

    def full_loss(self) -> torch.Tensor:
        return self.loss(self.model, list(range(len(self.x))))


def regression(n: int = 64, seed: int = 0) -> Regression:
    generator = torch.Generator().manual_seed(seed + 1)
    x = torch.randn(n, 12, generator=generator, dtype=torch.float64)
    y = torch.randn(n, 3, generator=generator, dtype=torch.float64)
    return Regression(MLP(seed), x, y)


@pytest.fixture
def mlp_regression() -> Regression:
    return regression()


@dataclass
class TinyLM:
    model: nn.Module
    encoded: list
    pad_id: int
    head: str = "causal_lm"

    def loss_fn(self):
        return training_loss(self.head, self.pad_id, torch.device("cpu"))


def tiny_lora_lm(r: int = 4, targets=("q_proj", "v_proj"), n_examples: int = 32, max_seq_len: int = 64,
                 dropout: float = 0.1) -> TinyLM:
    """tiny-llama with LoRA on q/v at a fixed initialisation, and encoded AG News examples."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        loaded = apply_lora(load_model("tiny-llama"), LoraSettings(r=r, alpha=2 * r, dropout=dropout, targets=targets))
    examples = get_task("ag_news").load("train", limit=n_examples)
    encoded = [encode_causal(loaded.tokenizer, e, max_seq_len) for e in examples]
    return TinyLM(loaded.model, encoded, loaded.tokenizer.pad_token_id)


@pytest.fixture(scope="session")
def tiny_lm() -> TinyLM:
    """Shared by the tests that leave the model as they found it (which the estimator guarantees)."""
    return tiny_lora_lm()
