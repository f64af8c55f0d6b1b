"""Sharpness of a trained head: top Hessian eigenvalue (power iteration) and Hessian trace (Hutchinson).

Both use exact Hessian-vector products of the mean cross-entropy w.r.t. all head parameters
(:meth:`normscape.headloss.HeadLoss.hvp`: through fc1's pre-activations, equal to forward-over-reverse autodiff),
with the head in eval mode (BatchNorm uses its running statistics, as in the landscapes). The Hessian is never
formed. ``tests/test_hessian.py`` checks both against the explicit Hessian of a small head.
"""

from __future__ import annotations

import logging

import torch

from normscape.headloss import HeadLoss

log = logging.getLogger(__name__)


class HessianOperator:
    """v -> H v for the loss of ``model`` on (x, y), in the model's precision; vectors are dicts shaped like the
    parameters."""

    def __init__(self, model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor):
        self.params = {k: v.detach() for k, v in model.named_parameters()}
        dtype = next(iter(self.params.values())).dtype
        self.loss = HeadLoss(model, x, y, mode="eval", dtype=dtype)

    def __call__(self, v: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        flat = self.loss.hvp(torch.cat([v[k].reshape(-1) for k in self.params]))
        return self.loss.unflatten(flat)


def _dot(a: dict, b: dict) -> torch.Tensor:
    return sum((a[k] * b[k]).sum() for k in a)


def _norm(a: dict) -> torch.Tensor:
    return torch.sqrt(_dot(a, a))


def top_eigenvalue(op: HessianOperator, iters: int = 100, tol: float = 1e-4, seed: int = 0) -> tuple[float, int]:
    """Largest-magnitude Hessian eigenvalue by power iteration; returns (eigenvalue, iterations used).

    Stops when the Rayleigh quotient changes by less than ``tol`` relative to its magnitude.
    """
    g = torch.Generator().manual_seed(seed)
    v = {k: torch.randn(p.shape, generator=g) for k, p in op.params.items()}
    n = _norm(v)
    v = {k: t / n for k, t in v.items()}
    eig = None
    for it in range(1, iters + 1):
        hv = op(v)
        new = float(_dot(v, hv))
        norm = _norm(hv)
        if float(norm) == 0.0:
            return 0.0, it
        v = {k: t / norm for k, t in hv.items()}
        if eig is not None and abs(new - eig) <= tol * max(abs(new), 1e-12):
            return new, it
        eig = new
    log.warning("power iteration did not converge to tol %g in %d iterations (last estimate %g)", tol, iters, eig)
    return float(eig), iters


def hutchinson_trace(op: HessianOperator, probes: int = 100, seed: int = 0) -> tuple[float, float]:
    """Hutchinson estimate of tr(H) with Rademacher probes: (mean, standard error of the mean)."""
    g = torch.Generator().manual_seed(seed)
    samples = []
    for _ in range(probes):
        z = {k: torch.randint(0, 2, p.shape, generator=g).float().mul_(2).sub_(1) for k, p in op.params.items()}
        samples.append(float(_dot(z, op(z))))
    t = torch.tensor(samples, dtype=torch.float64)
    sem = float(t.std(unbiased=True) / len(samples) ** 0.5) if len(samples) > 1 else float("nan")
    return float(t.mean()), sem
