"""Hessian numbers against the explicit Hessian of a small head."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch.func import functional_call

from normscape.heads import build_head
from normscape.hessian import HessianOperator, hutchinson_trace, top_eigenvalue


def explicit_hessian(model, x, y):
    names = [n for n, _ in model.named_parameters()]
    shapes = [p.shape for _, p in model.named_parameters()]
    sizes = [p.numel() for _, p in model.named_parameters()]
    flat0 = torch.cat([p.detach().flatten() for _, p in model.named_parameters()])
    buffers = dict(model.named_buffers())

    def loss(flat):
        parts = torch.split(flat, sizes)
        params = {n: t.view(s) for n, t, s in zip(names, parts, shapes)}
        return F.cross_entropy(functional_call(model, (params, buffers), (x,)), y)

    return torch.autograd.functional.hessian(loss, flat0)


@pytest.mark.parametrize("norm", ["none", "batch", "layer"])
def test_eigenvalue_and_trace_match_the_explicit_hessian(norm):
    torch.manual_seed(0)
    model = build_head(norm, in_features=6, hidden=4, num_classes=3)
    x, y = torch.randn(40, 6), torch.randint(0, 3, (40,))
    if norm == "batch":
        model.train()
        model(x)
    model.eval()
    h = explicit_hessian(model, x, y).double()
    eigs = torch.linalg.eigvalsh(h)
    top = eigs[eigs.abs().argmax()].item()
    op = HessianOperator(model, x, y)
    est, iters = top_eigenvalue(op, iters=500, tol=1e-9)
    assert est == pytest.approx(top, rel=1e-3) and iters < 500
    trace, sem = hutchinson_trace(op, probes=300, seed=1)
    assert abs(trace - torch.trace(h).item()) < 4 * sem + 1e-6
    # the HVP itself is exact
    v = {k: torch.randn_like(p) for k, p in model.named_parameters()}
    hv = torch.cat([t.flatten() for t in op(v).values()]).double()
    np.testing.assert_allclose(
        hv.numpy(), (h @ torch.cat([t.flatten() for t in v.values()]).double()).numpy(), rtol=1e-4, atol=1e-6
    )
