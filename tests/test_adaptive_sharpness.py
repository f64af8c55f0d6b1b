"""Adaptive sharpness: worst >= average, ReLU-rescaling invariance (adaptive) vs plain, quadratic reference."""

from __future__ import annotations

import conftest
import numpy as np
import pytest
import torch

from normscape.curvature.adaptive_sharpness import adaptive_sharpness
from normscape.curvature.head_loss import HeadLoss
from normscape.models.heads import build_head


def trained_head(norm: str, seed: int = 0):
    """20-d input, hidden 12, 10 classes, float64."""
    return conftest.trained_head(norm, 20, 12, 10, samples=200, batch=40, steps=60, seed=seed)


@pytest.mark.slow
@pytest.mark.parametrize("ball", ["linf", "l2"])
@pytest.mark.parametrize("norm", ["none", "batch", "layer"])
def test_worst_case_exceeds_average_case(norm, ball):
    model, x, y = trained_head(norm)
    radii = [0.01, 0.05] if ball == "linf" else [0.1, 0.5]
    res = adaptive_sharpness(model, x, y, radii, ball=ball, samples=8, ascent_steps=5)
    assert res["radii"] == radii
    for avg, sem, worst in zip(res["average"], res["average_sem"], res["worst"]):
        assert worst >= avg + 2 * sem and worst > 0
    assert res["worst"][1] > res["worst"][0]  # a larger ball holds a higher maximum


def rescaled(model, c: torch.Tensor):
    """fc1 row i (and bias i) times c_i, fc2 column i times 1/c_i: the same function for a ReLU head."""
    out = build_head("none", 20, 12, 10).double()
    out.load_state_dict(model.state_dict())
    with torch.no_grad():
        out.fc1.weight.mul_(c[:, None])
        out.fc1.bias.mul_(c)
        out.fc2.weight.div_(c[None, :])
    return out.eval()


@pytest.mark.parametrize("ball", ["linf", "l2"])
def test_adaptive_sharpness_is_invariant_to_relu_rescaling_plain_is_not(ball):
    model, x, y = trained_head("none")
    c = torch.linspace(0.2, 5.0, 12, dtype=torch.float64)
    other = rescaled(model, c)
    assert torch.allclose(model(x), other(x), rtol=1e-12, atol=1e-12)
    radii = [0.02] if ball == "linf" else [0.2]
    kw = dict(ball=ball, samples=6, ascent_steps=4, seed=3)
    a, b = adaptive_sharpness(model, x, y, radii, **kw), adaptive_sharpness(other, x, y, radii, **kw)
    np.testing.assert_allclose(a["average"], b["average"], rtol=1e-9)
    np.testing.assert_allclose(a["worst"], b["worst"], rtol=1e-6)
    plain_radii = [0.02] if ball == "linf" else [0.5]
    pa = adaptive_sharpness(model, x, y, plain_radii, adaptive=False, **kw)
    pb = adaptive_sharpness(other, x, y, plain_radii, adaptive=False, **kw)
    assert abs(pb["average"][0] / pa["average"][0] - 1) > 0.1
    assert abs(pb["worst"][0] / pa["worst"][0] - 1) > 0.1


@pytest.mark.slow
def test_small_radius_average_case_matches_the_hessian_quadratic_form():
    # L(theta + s*eta) - L(theta) ~ g.(s*eta) + 1/2 (s*eta)^T H (s*eta); E over eta ~ N(0, rho^2 I):
    # rho^2 / 2 * sum_i s_i^2 H_ii. The antithetic pairs cancel the g term exactly, so the estimate is precise
    # enough to see that a radius must be small enough that no hidden unit's pre-activation crosses ReLU's kink
    # (the Hessian does not see kinks; each unit within the perturbation's reach adds a term of the same order
    # rho^2): 1e-3 is 26 % off here, 1e-5 leaves no unit within reach.
    model, x, y = trained_head("layer")
    loss = HeadLoss(model, x, y)
    h = conftest.dense_hessian(loss)
    s2 = loss.theta.abs() ** 2
    rho = 1e-5
    expected = 0.5 * rho**2 * float((s2 * torch.diagonal(h)).sum())
    res = adaptive_sharpness(model, x, y, [rho], samples=200, ascent_steps=1)
    assert res["average_sem"][0] < 0.05 * expected
    assert res["average"][0] == pytest.approx(expected, rel=4 * res["average_sem"][0] / expected + 0.02)


@pytest.mark.slow
def test_average_case_standard_error_matches_repeated_sampling():
    """The recorded SE (sd of the antithetic pair means / sqrt(pairs)) is the spread of the estimate over
    independent seeds; and pairing removes the first-order noise that single draws carry."""
    model, x, y = trained_head("layer")
    pairs, repeats, rho = 6, 80, 0.05
    runs = [
        adaptive_sharpness(model, x, y, [0.001], average_radii=[rho], samples=pairs, ascent_steps=1, seed=s)
        for s in range(repeats)
    ]
    means = np.array([r["average"][0] for r in runs])
    sems = np.array([r["average_sem"][0] for r in runs])
    assert np.sqrt(np.mean(sems**2)) == pytest.approx(means.std(ddof=1), rel=0.25)
    # single draws at the same radius and seed: the spread of one draw's loss increase
    loss = HeadLoss(model, x, y)
    g = torch.Generator().manual_seed(0)
    scale = loss.theta.abs() * rho
    single = np.array(
        [
            float(loss.loss(loss.theta + scale * torch.randn(loss.dim, generator=g, dtype=torch.float64)))
            for _ in range(200)
        ]
    )
    assert means.std(ddof=1) * np.sqrt(pairs) < single.std(ddof=1)
