"""Hessian numbers (lambda_max / lambda_min by Lanczos, the exact diagonal and trace, Hutchinson with its standard
error) against the explicit dense Hessian of small heads in float64."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import dense_hessian, trained_head
from torch import nn

from normscape.curvature.head_loss import HeadLoss
from normscape.curvature.hessian_diagonal import SampleCouplingError, exact_trace, hessian_diagonal
from normscape.curvature.sharpness import SADDLE_FRACTION, HessianOperator, extreme_eigenvalues, hutchinson_trace
from normscape.models.norms import NORMS, NormSpec, register


class ScaleNorm(nn.Module):
    """A plugin-style norm with one 0-d gain (as tests/plugins/norms_plugin.py)."""

    def __init__(self, features: int):
        super().__init__()
        self.gain = nn.Parameter(torch.tensor(float(features) ** 0.5))

    def forward(self, x):
        return self.gain * x / x.norm(dim=-1, keepdim=True).clamp_min(1e-5)


class BatchCentre(nn.Module):
    """A norm that mixes samples even in eval mode: the exact per-sample diagonal must refuse it."""

    def __init__(self, features: int):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(features))

    def forward(self, x):
        return self.weight * (x - x.mean(0, keepdim=True))


for _name, _cls in (("test_hessian_scale", ScaleNorm), ("test_hessian_batch_centre", BatchCentre)):
    if _name not in NORMS:
        register(NormSpec(_name, _cls, _name, "#000000"))

BUILTIN = ["none", "batch", "layer", "group", "frn", "frn_learned_eps"]


def small_head(norm: str, seed: int = 0, steps: int = 30):
    """12-d input, hidden 6, 4 classes, float64."""
    return trained_head(norm, 12, 6, 4, samples=64, batch=16, steps=steps, seed=seed)


def dense(model, x, y) -> torch.Tensor:
    return dense_hessian(HeadLoss(model, x, y, dtype=torch.float64))


@pytest.mark.slow
@pytest.mark.parametrize("norm", [*BUILTIN, "test_hessian_scale"])
def test_exact_diagonal_and_trace_equal_the_dense_hessian(norm):
    model, x, y = small_head(norm)
    h = dense(model, x, y)
    loss = HeadLoss(model, x, y, dtype=torch.float64)
    np.testing.assert_allclose(hessian_diagonal(loss).numpy(), torch.diagonal(h).numpy(), rtol=1e-9, atol=1e-12)
    trace = exact_trace(loss)
    assert trace["total"] == pytest.approx(torch.trace(h).item(), rel=1e-10, abs=1e-12)
    assert sum(v for k, v in trace.items() if k != "total") == pytest.approx(trace["total"], rel=1e-12, abs=1e-12)


def test_exact_diagonal_refuses_a_norm_that_mixes_samples():
    model, x, y = small_head("test_hessian_batch_centre")
    with pytest.raises(SampleCouplingError, match="mixes samples"):
        hessian_diagonal(HeadLoss(model, x, y, dtype=torch.float64))
    model, x, y = small_head("batch")
    with pytest.raises(SampleCouplingError, match="batch statistics"):
        hessian_diagonal(HeadLoss(model, x, y, mode="train", batch_size=16, dtype=torch.float64))


@pytest.mark.slow
@pytest.mark.parametrize("norm", ["none", "batch", "layer", "frn"])
def test_lanczos_lambda_max_and_min_equal_eigh(norm):
    model, x, y = small_head(norm)
    eigs = torch.linalg.eigvalsh(dense(model, x, y))
    tol = 1e-8
    res = extreme_eigenvalues(HessianOperator(model, x, y), max_steps=400, tol=tol)
    scale = eigs.abs().max().item()
    assert res["converged"]
    assert res["lambda_max"] == pytest.approx(eigs[-1].item(), abs=10 * tol * scale)
    assert res["lambda_min"] == pytest.approx(eigs[0].item(), abs=10 * tol * scale)
    assert res["lambda_max_residual_bound"] <= tol * scale and res["lambda_min_residual_bound"] <= tol * scale
    expected_saddle = eigs[0].item() < -max(
        tol * scale, res["lambda_min_residual_bound"], SADDLE_FRACTION * max(eigs[-1].item(), 0.0)
    )
    assert res["saddle"] == expected_saddle


def test_lambda_max_is_the_largest_algebraic_eigenvalue_at_a_saddle():
    """Power iteration returns the eigenvalue of largest magnitude: at a saddle with |lambda_min| > lambda_max
    that is negative. Lanczos' lambda_max stays the largest algebraic eigenvalue and the point is flagged."""
    model, x, y = small_head("frn")  # fixed-eps FRN after a few steps: a saddle, as in the real study
    eigs = torch.linalg.eigvalsh(dense(model, x, y))
    assert -eigs[0] > 10 * eigs[-1] > 0  # the situation of the issue: the dominant eigenvalue is negative
    res = extreme_eigenvalues(HessianOperator(model, x, y), max_steps=400, tol=1e-8)
    assert res["lambda_max"] == pytest.approx(eigs[-1].item(), rel=1e-6) and res["lambda_max"] > 0
    assert res["lambda_min"] == pytest.approx(eigs[0].item(), rel=1e-6) and res["saddle"]


def test_an_unconverged_lanczos_says_so():
    model, x, y = small_head("layer")
    res = extreme_eigenvalues(HessianOperator(model, x, y), max_steps=3, tol=1e-12)
    assert not res["converged"] and res["lanczos_steps"] == 3


@pytest.mark.slow
@pytest.mark.parametrize("norm", ["layer"])
def test_hutchinson_is_unbiased_and_its_standard_error_matches_repeated_sampling(norm):
    model, x, y = small_head(norm)
    h = dense(model, x, y)
    exact = torch.trace(h).item()
    # the variance of one Rademacher probe is 2 sum_{i != j} H_ij^2
    probe_sd = np.sqrt(2 * ((h**2).sum() - (torch.diagonal(h) ** 2).sum()).item())
    op = HessianOperator(model, x, y)
    probes, repeats = 8, 150
    runs = np.array([hutchinson_trace(op, probes=probes, seed=s) for s in range(repeats)])
    means, sems = runs[:, 0], runs[:, 1]
    spread = means.std(ddof=1)
    # the reported SE is the spread of the estimate over independent repetitions (within sampling error of
    # a standard deviation from 150 repeats, ~6 %) and the theoretical probe sd / sqrt(probes)
    assert np.sqrt(np.mean(sems**2)) == pytest.approx(spread, rel=0.2)
    assert spread == pytest.approx(probe_sd / np.sqrt(probes), rel=0.2)
    assert abs(means.mean() - exact) < 4 * spread / np.sqrt(repeats)


def test_operator_products_equal_the_dense_hessian():
    model, x, y = small_head("batch")
    h = dense(model, x, y)
    op = HessianOperator(model, x, y)
    v = {k: torch.randn_like(p) for k, p in model.named_parameters()}
    hv = torch.cat([t.flatten() for t in op(v).values()])
    np.testing.assert_allclose(hv.numpy(), (h @ torch.cat([t.flatten() for t in v.values()])).numpy(), rtol=1e-9)
