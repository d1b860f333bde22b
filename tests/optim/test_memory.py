import torch

from adamlab.optim import create_optimizer, optimizer_state_bytes


def test_adam_state_is_two_moments_per_param_plus_the_step_counters():
    params = [torch.nn.Parameter(torch.zeros(10, 20)), torch.nn.Parameter(torch.zeros(5))]
    for p in params:
        p.grad = torch.ones_like(p)
    optimizer = create_optimizer("adam", params, lr=1e-3)
    assert optimizer_state_bytes(optimizer) == 0
    optimizer.step()
    moments = 2 * 4 * (200 + 5)
    steps = 2 * 4  # torch keeps each step counter as a float32 tensor
    assert optimizer_state_bytes(optimizer) == moments + steps


def test_lion_keeps_one_moment_and_shared_storages_count_once():
    p = torch.nn.Parameter(torch.zeros(100, dtype=torch.float64))
    p.grad = torch.ones_like(p)
    optimizer = create_optimizer("lion", [p], lr=1e-3)
    optimizer.step()
    assert optimizer_state_bytes(optimizer) == 8 * 100
    optimizer.state[p]["alias"] = optimizer.state[p]["exp_avg"][:10]  # a view of the same storage
    assert optimizer_state_bytes(optimizer) == 8 * 100
