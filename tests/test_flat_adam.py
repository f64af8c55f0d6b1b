"""FlatAdam (the trainer's fast path) against the plain path it replaces, torch.optim.Adam."""

import pytest
import torch

from normscape.flat_adam import FlatAdam


def gradients(n_steps: int, size: int, seed: int = 0) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    # gradients spanning several orders of magnitude, like a head's (and a few exact zeros)
    return [
        torch.randn(size, generator=generator)
        * torch.logspace(-6, 1, size)
        * (torch.rand(size, generator=generator) > 0.05)
        for _ in range(n_steps)
    ]


def run(optimizer_factory, n_steps: int = 25, size: int = 1000, load_from: dict | None = None):
    param = torch.nn.Parameter(torch.linspace(-1, 1, size))
    optimizer = optimizer_factory(param)
    if load_from is not None:
        optimizer.load_state_dict(load_from)
    for grad in gradients(n_steps, size):
        param.grad = grad.clone()
        optimizer.step()
    return param.detach().clone(), optimizer


@pytest.mark.parametrize("fused", [True, False])
@pytest.mark.parametrize("weight_decay", [0.0, 1e-2])
def test_flat_adam_equals_torch_adam_bit_for_bit(fused, weight_decay):
    """Same parameters and state after every configuration of steps; the fused kernel is exactly torch's
    fused Adam, and within float rounding of the for-loop implementation."""
    ours, ours_opt = run(lambda p: FlatAdam(p, lr=3e-3, weight_decay=weight_decay))
    ref, ref_opt = run(lambda p: torch.optim.Adam([p], lr=3e-3, weight_decay=weight_decay, fused=fused))
    ours_state, ref_state = ours_opt.state_dict()["state"][0], ref_opt.state_dict()["state"][0]
    assert float(ours_state["step"]) == float(ref_state["step"]) == 25
    if fused:
        assert torch.equal(ours, ref)
        for key in ("exp_avg", "exp_avg_sq"):
            assert torch.equal(ours_state[key], ref_state[key])
    else:
        torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-7)
    assert not torch.equal(ours, torch.linspace(-1, 1, 1000))  # it did train


def test_state_dict_round_trips_with_torch_adam():
    """A checkpoint written by either optimiser resumes in the other with the identical continuation."""
    _, ref_opt = run(lambda p: torch.optim.Adam([p], lr=3e-3, fused=True), n_steps=10)
    _, ours_opt = run(lambda p: FlatAdam(p, lr=3e-3), n_steps=10)
    ref_sd, ours_sd = ref_opt.state_dict(), ours_opt.state_dict()
    assert ours_sd["param_groups"] == ref_sd["param_groups"]
    assert set(ours_sd["state"][0]) == set(ref_sd["state"][0])
    a, _ = run(lambda p: FlatAdam(p, lr=3e-3), load_from=ref_sd)
    b, _ = run(lambda p: torch.optim.Adam([p], lr=3e-3, fused=True), load_from=ours_sd)
    assert torch.equal(a, b)


def test_empty_state_and_hooks_behave_like_torch_optim():
    param = torch.nn.Parameter(torch.zeros(3))
    optimizer = FlatAdam(param, lr=0.1)
    assert optimizer.state_dict()["state"] == {} and optimizer.state == {}
    seen = []
    handle = optimizer.register_step_pre_hook(lambda opt, args, kwargs: seen.append(param.grad))
    optimizer.step()  # no gradient yet: the hook runs (as in torch.optim), nothing changes
    assert seen == [None] and optimizer.state == {}
    param.grad = torch.tensor([1.0, -1.0, 0.0])
    optimizer.step()
    assert len(seen) == 2 and torch.equal(seen[1], param.grad)  # the hook saw the gradient about to be applied
    assert torch.allclose(param.detach(), torch.tensor([-0.1, 0.1, 0.0]))  # Adam's first step: lr * sign(g)
    handle.remove()
    optimizer.step()
    assert len(seen) == 2


def test_rejects_state_it_cannot_continue():
    param = torch.nn.Parameter(torch.zeros(4))
    _, other = run(lambda p: torch.optim.Adam([p], lr=1e-3, amsgrad=True), n_steps=2, size=4)
    with pytest.raises(ValueError, match="amsgrad"):
        FlatAdam(param).load_state_dict(other.state_dict())
    _, wrong_size = run(lambda p: FlatAdam(p), n_steps=2, size=5)
    with pytest.raises(ValueError, match="shape"):
        FlatAdam(param).load_state_dict(wrong_size.state_dict())
