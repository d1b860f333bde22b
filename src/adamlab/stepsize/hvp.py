r"""Hessian-vector products $v \mapsto \nabla^2 L(\theta)\,v$ over a chosen set of parameters.

Two engines compute the same product:

* ``"double_backward"`` (reverse-over-reverse): the gradient graph $g = \nabla L$ is built **once**
  (``create_graph=True``) and every product is one more backward pass through it,
  $Hv = \nabla_\theta \langle g, v\rangle$ with ``retain_graph=True``. Power iteration asks for many products
  at the same $\theta$, so the forward and first backward are paid once per loss, not once per product.
* ``"jvp"`` (forward-over-reverse): $Hv = \frac{d}{d\epsilon} \nabla L(\theta + \epsilon v)\big|_{\epsilon=0}$,
  ``torch.func.jvp`` of ``torch.func.grad`` of the loss with the parameters swapped in by
  ``torch.func.functional_call``. It holds no graph between products (less memory) but re-runs the forward and
  backward, with tangents, for every product.

``"auto"`` is ``"double_backward"``: on every model measured (``benchmarks/stepsize_cost.py``) it was the faster
one, because it does not recompute the primal pass. ``"jvp"`` falls back to double backward, and says so in
``fallback_reason``, when its first product fails (an operator without a forward-mode derivative).

Both engines run the loss with PyTorch's math attention kernel: the fused (flash / memory-efficient) SDPA
kernels have neither forward-mode derivatives nor double backward.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

import torch
from torch import Tensor, nn
from torch.nn.attention import SDPBackend, sdpa_kernel

HVP_ENGINES = ("auto", "double_backward", "jvp")

Vector = list[Tensor]  # one tensor per parameter, with that parameter's shape


def trainable_parameters(model: nn.Module) -> list[tuple[str, Tensor]]:
    """``(name, parameter)`` for every parameter with ``requires_grad`` (with LoRA: the adapters' A and B, plus
    any head PEFT keeps trainable)."""
    return [(name, p) for name, p in model.named_parameters() if p.requires_grad]


def resolve_parameters(model: nn.Module | None, params: str | Sequence[Tensor]) -> list[tuple[str, Tensor]]:
    """``params="trainable"`` or an explicit list of tensors, as ``(name, tensor)`` pairs. Names come from
    ``model`` where a tensor is one of its parameters, else ``param{i}``."""
    if isinstance(params, str):
        if params != "trainable":
            raise ValueError(f"params must be 'trainable' or a list of tensors, got {params!r}")
        if model is None:
            raise ValueError("params='trainable' needs the model")
        named = trainable_parameters(model)
    else:
        names = {id(p): name for name, p in model.named_parameters()} if model is not None else {}
        named = [(names.get(id(p), f"param{i}"), p) for i, p in enumerate(params)]
    if not named:
        raise ValueError("no parameters to differentiate: the model has no trainable parameters")
    frozen = [name for name, p in named if not p.requires_grad]
    if frozen:
        raise ValueError(f"parameters must require grad; {frozen[0]!r} does not")
    return named


@contextmanager
def restored_afterwards(model: nn.Module, tensors: Sequence[Tensor], seed: int) -> Iterator[None]:
    """Take trial steps from the model's current point under a seeded RNG: the parameters, their gradients, the
    training mode and the global RNG state are put back on exit, so a probe (the range test, the AEoS warm-up)
    leaves the run it serves exactly where it was."""
    saved_values = [p.detach().clone() for p in tensors]
    saved_grads = [p.grad for p in tensors]
    was_training = model.training
    devices = sorted({p.device.index or 0 for p in tensors if p.device.type == "cuda"})
    try:
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(seed)
            yield
    finally:
        with torch.no_grad():
            for p, value, grad in zip(tensors, saved_values, saved_grads):
                p.copy_(value)
                p.grad = grad
        model.train(was_training)


class _LossAsModule(nn.Module):
    """Lets ``functional_call`` swap ``model``'s parameters while an arbitrary zero-argument closure over
    ``model`` runs: the closure calls the very module object whose attributes are being swapped."""

    def __init__(self, model: nn.Module, loss_fn: Callable[[], Tensor]):
        super().__init__()
        self.model = model
        self.loss_fn = loss_fn

    def forward(self) -> Tensor:
        return self.loss_fn()


class HessianVectorProduct:
    r"""$v \mapsto H v$ for the Hessian of ``loss_fn()`` with respect to ``params``, at their current values.

    ``loss_fn`` is a zero-argument closure returning a scalar (one example's loss or a batch's). ``model`` is the
    module that owns ``params``; the ``"jvp"`` engine needs it to substitute parameters. ``loss`` holds the loss
    value at the current parameters, ``count`` the number of products computed, ``engine`` the engine in use.
    """

    def __init__(
        self,
        loss_fn: Callable[[], Tensor],
        params: Sequence[Tensor],
        *,
        model: nn.Module | None = None,
        engine: str = "auto",
    ):
        if engine not in HVP_ENGINES:
            raise ValueError(f"unknown HVP engine {engine!r}; valid: {', '.join(HVP_ENGINES)}")
        if engine == "jvp" and model is None:
            raise ValueError("the 'jvp' engine needs the model that owns the parameters")
        self.loss_fn = loss_fn
        self.params = list(params)
        self.model = model
        self.engine = "double_backward" if engine == "auto" else engine
        self.fallback_reason: str | None = None
        self.count = 0
        self._gradient: tuple[Tensor, ...] | None = None
        if self.engine == "double_backward":
            self._build_gradient_graph()
        else:
            with torch.no_grad(), sdpa_kernel(SDPBackend.MATH):
                self.loss = _finite_scalar(loss_fn()).item()

    def _build_gradient_graph(self) -> None:
        with sdpa_kernel(SDPBackend.MATH):
            loss = _finite_scalar(self.loss_fn())
        self.loss = loss.item()
        self._gradient = torch.autograd.grad(loss, self.params, create_graph=True, allow_unused=True,
                                             materialize_grads=True)

    def __call__(self, vector: Vector) -> Vector:
        return self.block(range(len(self.params)))(vector)

    def block(self, indices: Sequence[int]) -> Callable[[Vector], Vector]:
        r"""The product with the diagonal block $H_{SS}$ of the Hessian for the parameters ``params[i]``,
        ``i`` in ``indices`` (vectors hold only those parameters). Reuses this loss's gradient graph."""
        indices = list(indices)

        def product(vector: Vector) -> Vector:
            if len(vector) != len(indices):
                raise ValueError(f"vector has {len(vector)} tensors for {len(indices)} parameters")
            self.count += 1
            if self.engine == "jvp":
                try:
                    return self._jvp_of_grad(indices, vector)
                except (NotImplementedError, RuntimeError) as error:
                    # An operator without a forward-mode derivative (or without torch.func support) fails the
                    # first product; a genuine error in the loss fails double backward too and surfaces there.
                    if self.count > 1:
                        raise
                    self.engine, self.fallback_reason = "double_backward", str(error).strip().splitlines()[0]
                    self._build_gradient_graph()
            return self._double_backward(indices, vector)

        return product

    def _double_backward(self, indices: list[int], vector: Vector) -> Vector:
        # A gradient entry without a graph is constant in every parameter, so its rows of H are zero.
        pairs = [(self._gradient[i], v) for i, v in zip(indices, vector) if self._gradient[i].requires_grad]
        inputs = [self.params[i] for i in indices]
        if not pairs:
            return [torch.zeros_like(p) for p in inputs]
        outputs, grad_outputs = zip(*pairs)
        return list(torch.autograd.grad(outputs, inputs, grad_outputs=grad_outputs, retain_graph=True,
                                        allow_unused=True, materialize_grads=True))

    def _jvp_of_grad(self, indices: list[int], vector: Vector) -> Vector:
        names = _parameter_names(self.model, [self.params[i] for i in indices])
        wrapper = _LossAsModule(self.model, self.loss_fn)

        def loss_at(tensors: tuple[Tensor, ...]) -> Tensor:
            return torch.func.functional_call(wrapper, {f"model.{name}": t for name, t in zip(names, tensors)}, ())

        primals = tuple(self.params[i].detach() for i in indices)
        tangents = tuple(v.to(p.dtype) for v, p in zip(vector, primals))
        with sdpa_kernel(SDPBackend.MATH):
            _, product = torch.func.jvp(torch.func.grad(loss_at), (primals,), (tangents,))
        return list(product)


def _parameter_names(model: nn.Module, params: Sequence[Tensor]) -> list[str]:
    names = {id(p): name for name, p in model.named_parameters(remove_duplicate=False)}
    missing = [i for i, p in enumerate(params) if id(p) not in names]
    if missing:
        raise ValueError(f"parameter {missing[0]} is not a parameter of the model; the 'jvp' engine can only "
                         "substitute the model's own parameters")
    return [names[id(p)] for p in params]


def _finite_scalar(loss: Tensor) -> Tensor:
    if not isinstance(loss, Tensor) or loss.numel() != 1:
        raise ValueError(f"the loss function must return a scalar tensor, got {type(loss).__name__}"
                         f"{' of shape ' + str(tuple(loss.shape)) if isinstance(loss, Tensor) else ''}")
    if not torch.isfinite(loss.detach()).item():
        raise ValueError(f"the loss is not finite ({loss.item()}); no curvature can be estimated there")
    return loss.reshape(())
