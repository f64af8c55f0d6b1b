"""Heads and norms against their formulas on known inputs, and the FRN collapse on vectors."""

from __future__ import annotations

import pytest
import torch

from normscape.models.heads import NORM_NAMES, FilterResponseNorm, build_head, make_norm


def test_heads_differ_only_in_the_norm():
    shapes = {}
    for name in NORM_NAMES:
        head = build_head(name, hidden=32)
        assert head(torch.randn(5, 1280)).shape == (5, 10)
        shapes[name] = {k: tuple(v.shape) for k, v in head.state_dict().items() if not k.startswith("norm.")}
    assert all(s == shapes["none"] for s in shapes.values())
    with pytest.raises(ValueError, match="unknown norm"):
        build_head("weight")


def test_batchnorm_training_formula():
    torch.manual_seed(0)
    x = torch.randn(16, 8)
    bn = make_norm("batch", 8).train()
    mu, var = x.mean(0), x.var(0, unbiased=False)
    torch.testing.assert_close(bn(x), (x - mu) / torch.sqrt(var + bn.eps))


def test_layernorm_formula():
    x = torch.randn(4, 8)
    ln = make_norm("layer", 8)
    mu, var = x.mean(1, keepdim=True), x.var(1, unbiased=False, keepdim=True)
    torch.testing.assert_close(ln(x), (x - mu) / torch.sqrt(var + ln.eps))


def test_groupnorm_formula():
    x = torch.randn(3, 64)
    gn = make_norm("group", 64)
    g = x.view(3, gn.num_groups, -1)
    ref = ((g - g.mean(-1, keepdim=True)) / torch.sqrt(g.var(-1, unbiased=False, keepdim=True) + gn.eps)).view(3, 64)
    torch.testing.assert_close(gn(x), ref)


def test_frn_formula_on_feature_maps():
    torch.manual_seed(0)
    frn = FilterResponseNorm(3, eps=1e-6)
    with torch.no_grad():
        frn.weight.copy_(torch.tensor([1.0, 2.0, 0.5]))
        frn.bias.copy_(torch.tensor([0.0, 0.1, -0.2]))
        frn.tau.copy_(torch.tensor([-1.0, 0.0, 0.3]))
    x = torch.randn(2, 3, 4, 5)
    nu2 = (x**2).mean(dim=(2, 3), keepdim=True)
    y = frn.weight.view(1, 3, 1, 1) * x / torch.sqrt(nu2 + 1e-6) + frn.bias.view(1, 3, 1, 1)
    torch.testing.assert_close(frn(x), torch.maximum(y, frn.tau.view(1, 3, 1, 1)))


def test_tlu_has_torch_maximums_values_and_derivatives():
    """ThresholdedLinearUnit equals torch.maximum: values, the gradient (larger input; half each at a tie; a NaN
    passes it to both) with tau broadcast on vectors and feature maps, and second-order terms (a Hessian-vector
    product through a loss that uses the output nonlinearly), bit for bit."""
    from normscape.models.frn import ThresholdedLinearUnit

    def derivatives(op, y, tau, direction):
        y, tau = y.clone().requires_grad_(), tau.clone().requires_grad_()
        out = op(y, tau)
        loss = (out**3 * torch.linspace(-1, 1, out.numel()).view_as(out)).sum()
        gy, gt = torch.autograd.grad(loss, (y, tau), create_graph=True)
        hy, ht = torch.autograd.grad((gy * direction).sum(), (y, tau))
        return out.detach(), gy.detach(), gt.detach(), hy, ht

    torch.manual_seed(0)
    for shape, tau_shape in [((6, 4), (1, 4)), ((3, 4, 2, 5), (1, 4, 1, 1))]:
        y = torch.randn(shape)
        tau = torch.randn(tau_shape)
        y.view(shape[0], 4, -1)[:, 1] = tau.flatten()[1]  # ties in one channel
        y.view(-1)[0] = float("nan")
        direction = torch.randn(shape)
        ours = derivatives(ThresholdedLinearUnit.apply, y, tau, direction)
        reference = derivatives(torch.maximum, y, tau, direction)
        # forward mode too (torch.func.jvp: the diagnostics' independent reference uses it)
        tangents = (torch.randn(shape), torch.randn(tau_shape))
        ours += torch.func.jvp(ThresholdedLinearUnit.apply, (y, tau), tangents)
        reference += torch.func.jvp(torch.maximum, (y, tau), tangents)
        for a, b in zip(ours, reference):
            torch.testing.assert_close(a, b, rtol=0, atol=0, equal_nan=True)


def test_frn_on_vectors_is_a_sign_function():
    # (N, C) == (N, C, 1, 1): nu2 = x^2, so x / sqrt(x^2 + eps) ~ sign(x) away from 0.
    frn = FilterResponseNorm(4)
    x = torch.tensor([[3.0, -2.0, 0.5, -0.01]])
    torch.testing.assert_close(frn(x), torch.maximum(x / torch.sqrt(x**2 + 1e-6), torch.zeros(1)))
    assert torch.allclose(frn(x)[0, :3], torch.tensor([1.0, 0.0, 1.0]), atol=1e-5)


def test_learned_eps_is_a_parameter_and_used():
    frn = FilterResponseNorm(4, learnable_eps=True)
    names = dict(frn.named_parameters())
    assert {"weight", "bias", "tau", "eps_l"} <= set(names)
    assert frn.effective_eps().item() == pytest.approx(1e-6 + 1e-4)
    x = torch.tensor([[0.01, -0.02, 0.5, 1.0]])
    torch.testing.assert_close(frn(x), torch.clamp(x / torch.sqrt(x**2 + 1e-6 + 1e-4), min=0.0))


def preactivation_grads(norm: str) -> torch.Tensor:
    """|dL/dz| for z = fc1(x), the signal that trains fc1, on post-ReLU-like features."""
    torch.manual_seed(0)
    head = build_head(norm, hidden=64)
    x = torch.relu(torch.randn(256, 1280))
    y = torch.randint(0, 10, (256,))
    z = head.fc1(x)
    z.retain_grad()
    torch.nn.functional.cross_entropy(head.fc2(head.act(head.norm(z))), y).backward()
    return z.grad.abs().flatten()


def test_frn_collapse_on_vectors():
    # On (N, C) vectors FRN computes x / sqrt(x^2 + eps) ~ sign(x): its derivative eps / (x^2 + eps)^1.5 is ~0
    # for |x| >> sqrt(eps) = 1e-3 and ~1/sqrt(eps) = 1000 for the rare |x| << sqrt(eps). So almost every unit
    # passes no gradient to fc1, and the few that do pass huge, erratic ones.
    base = preactivation_grads("none")
    frn = preactivation_grads("frn")
    learned = preactivation_grads("frn_learned_eps")
    assert frn.median() < 1e-3 * base[base > 0].median()  # the typical unit is starved
    assert frn.max() > 1e3 * frn.median()  # ... while a few spike
    assert (frn > 1e-6).float().mean() < 0.1  # < 10% of units carry any gradient
    # learnable eps (1e-6 + 1e-4 at init) widens the band 10x: more units pass gradient
    assert (learned > 1e-6).float().mean() > 2 * (frn > 1e-6).float().mean()
