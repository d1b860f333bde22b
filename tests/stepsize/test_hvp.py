"""Hessian-vector products against the exact Hessian, finite differences, each other, and graph rebuilding."""

import pytest
import torch

from adamlab.stepsize.hvp import HessianVectorProduct, trainable_parameters

from .conftest import tiny_lora_lm


def flat(vector):
    return torch.cat([t.flatten() for t in vector])


def random_vector(params, seed=1):
    generator = torch.Generator().manual_seed(seed)
    return [torch.randn(p.shape, generator=generator, dtype=p.dtype) for p in params]


def mlp_loss_of_flat(problem):
    """The regression loss as a function of one flat parameter vector, for torch.autograd.functional.hessian."""
    names = [name for name, _ in problem.model.named_parameters()]
    shapes = [p.shape for p in problem.model.parameters()]

    def loss(flat_params):
        tensors, offset = {}, 0
        for name, shape in zip(names, shapes):
            tensors[name] = flat_params[offset : offset + shape.numel()].view(shape)
            offset += shape.numel()
        x, y = problem.x, problem.y
        return ((torch.func.functional_call(problem.model, tensors, (x,)) - y) ** 2).sum(-1).mean()

    return loss


@pytest.mark.parametrize("engine", ["double_backward", "jvp"])
def test_hvp_matches_the_exact_hessian_in_fp64(mlp_regression, engine):
    params = list(mlp_regression.model.parameters())
    hessian = torch.autograd.functional.hessian(mlp_loss_of_flat(mlp_regression), flat(params).detach(),
                                              vectorize=True)
    v = random_vector(params)
    product = HessianVectorProduct(mlp_regression.full_loss, params, model=mlp_regression.model, engine=engine)
    assert (flat(product(v)) - hessian @ flat(v)).abs().max().item() <= 1e-10
    assert product.engine == engine and product.fallback_reason is None


def test_hvp_matches_central_finite_differences_of_gradients(mlp_regression):
    params = list(mlp_regression.model.parameters())
    v = random_vector(params)
    h = 1e-5

    def gradient_at(step):
        with torch.no_grad():
            for p, t in zip(params, v):
                p.add_(step * t)
        gradient = torch.autograd.grad(mlp_regression.full_loss(), params)
        with torch.no_grad():
            for p, t in zip(params, v):
                p.sub_(step * t)
        return flat(gradient)

    difference = (gradient_at(h) - gradient_at(-h)) / (2 * h)
    product = HessianVectorProduct(mlp_regression.full_loss, params)(v)
    assert (flat(product) - difference).abs().max().item() <= 1e-6


def test_reusing_the_gradient_graph_equals_rebuilding_it_bit_for_bit(mlp_regression):
    params = list(mlp_regression.model.parameters())
    reused = HessianVectorProduct(mlp_regression.full_loss, params)
    for seed in (1, 2, 3):
        v = random_vector(params, seed)
        rebuilt = HessianVectorProduct(mlp_regression.full_loss, params)(v)
        assert all(torch.equal(a, b) for a, b in zip(reused(v), rebuilt))
    assert reused.count == 3


def test_jvp_and_double_backward_agree_on_a_lora_language_model(tiny_lm):
    params = [p for _, p in trainable_parameters(tiny_lm.model)]
    batch = tiny_lm.encoded[:4]
    tiny_lm.model.eval()

    def loss():
        return tiny_lm.loss_fn()(tiny_lm.model, batch)

    v = random_vector(params)
    backward = flat(HessianVectorProduct(loss, params, engine="double_backward")(v))
    forward = flat(HessianVectorProduct(loss, params, model=tiny_lm.model, engine="jvp")(v))
    assert torch.allclose(forward, backward, rtol=1e-4, atol=1e-5 * backward.abs().max().item())


def test_a_block_product_is_the_diagonal_block_of_the_full_hessian(mlp_regression):
    params = list(mlp_regression.model.parameters())
    hessian = torch.autograd.functional.hessian(mlp_loss_of_flat(mlp_regression), flat(params).detach(),
                                              vectorize=True)
    sizes = [p.numel() for p in params]
    product = HessianVectorProduct(mlp_regression.full_loss, params)
    v = random_vector(params[2:])  # the output layer's weight and bias
    start = sum(sizes[:2])
    block = hessian[start:, start:]
    assert (flat(product.block([2, 3])(v)) - block @ flat(v)).abs().max().item() <= 1e-10


class NoForwardMode(torch.autograd.Function):
    """An operator with a backward but no forward-mode (or torch.func) support."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x.sin()

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        return grad * x.cos()


def test_jvp_falls_back_to_double_backward_and_says_why():
    model = torch.nn.Linear(3, 1).double()
    x = torch.randn(5, 3, dtype=torch.float64)

    def loss():
        return NoForwardMode.apply(model(x)).pow(2).sum()

    params = list(model.parameters())
    v = random_vector(params)
    product = HessianVectorProduct(loss, params, model=model, engine="jvp")
    result = product(v)
    assert product.engine == "double_backward" and product.fallback_reason
    expected = HessianVectorProduct(loss, params)(v)
    assert all(torch.allclose(a, b) for a, b in zip(result, expected))


def test_bad_inputs_are_refused(mlp_regression):
    params = list(mlp_regression.model.parameters())
    with pytest.raises(ValueError, match="unknown HVP engine"):
        HessianVectorProduct(mlp_regression.full_loss, params, engine="forward")
    with pytest.raises(ValueError, match="needs the model"):
        HessianVectorProduct(mlp_regression.full_loss, params, engine="jvp")
    with pytest.raises(ValueError, match="scalar"):
        HessianVectorProduct(lambda: mlp_regression.model(mlp_regression.x).sum(0), params)
    with pytest.raises(ValueError, match="not finite"):
        HessianVectorProduct(lambda: mlp_regression.full_loss() * float("nan"), params)


def test_a_loss_linear_in_some_parameters_has_zero_rows_there():
    weight = torch.nn.Parameter(torch.tensor([2.0, -1.0], dtype=torch.float64))
    bias = torch.nn.Parameter(torch.tensor(0.5, dtype=torch.float64))

    def loss():
        return (weight**2).sum() + 3 * bias  # linear in bias: its gradient has no graph

    result = HessianVectorProduct(loss, [weight, bias])([torch.ones(2, dtype=torch.float64),
                                                         torch.ones((), dtype=torch.float64)])
    assert torch.equal(result[0], torch.full((2,), 2.0, dtype=torch.float64)) and result[1].item() == 0


def test_lora_adapters_are_the_default_parameter_set():
    lm = tiny_lora_lm(r=2, n_examples=1)
    names = [name for name, _ in trainable_parameters(lm.model)]
    assert names and all(".lora_A." in name or ".lora_B." in name for name in names)
