"""Sharpness of a trained head: lambda_max and lambda_min of the Hessian (Lanczos) and its trace.

* **Extreme eigenvalues.** Sharpness is lambda_max, the largest *algebraic* eigenvalue. Power iteration (the
  earlier method) converges to the eigenvalue of largest *magnitude*, which at a saddle is the most negative one
  (fixed-eps FRN: -9.6 where lambda_max = 3.1) — a different quantity, and averaging it across seeds mixes signs.
  Lanczos with full reorthogonalisation (:func:`normscape.curvature.spectrum.lanczos`) converges to both ends of the
  spectrum at once; it runs until the residual bound ``beta_m |s_{m,i}|`` of both extreme Ritz values (an
  eigenvalue of H lies within it) is at most ``tol`` times the spectral scale max(|lambda_max|, |lambda_min|),
  and records the bounds. The point is flagged a **saddle** when lambda_min < 0 by more than its bound, more
  than ``tol`` times the scale, and more than ``SADDLE_FRACTION`` of lambda_max: every trained head's Hessian is
  slightly indefinite (lambda_min a few per cent of -lambda_max on the real study: ReLU kinks, a minimum not
  quite reached), a saddle has negative curvature of the order of the positive (fixed-eps FRN: -9.6 vs 3.1).
* **Trace.** Exact, from the diagonal of :mod:`normscape.curvature.hessian_diagonal`; Hutchinson's estimate (Rademacher
  probes, with its standard error) is kept beside it, validated against the exact trace in tests/test_hessian.py.

All from exact Hessian-vector products of :class:`normscape.curvature.head_loss.HeadLoss` (eval mode: BatchNorm uses its
running statistics, as in the landscapes). ``tests/test_hessian.py`` checks every number against the explicit
dense Hessian of a small head in float64.
"""

from __future__ import annotations

import logging

import numpy as np
import torch

from normscape.curvature.head_loss import HeadLoss
from normscape.curvature.spectrum import lanczos, rademacher, ritz

log = logging.getLogger(__name__)


class HessianOperator:
    """v -> H v for the loss of ``model`` on (x, y), in the model's precision; on flat vectors (:meth:`matvec`,
    float64 out) or on dicts shaped like the parameters (call). ``mode``/``batch_size``: as
    normscape.curvature.head_loss's (eval: running statistics; train: BatchNorm's batch statistics in batches of
    ``batch_size``)."""

    def __init__(
        self,
        model: torch.nn.Module,
        x: torch.Tensor,
        y: torch.Tensor,
        dtype: torch.dtype | None = None,
        mode: str = "eval",
        batch_size: int | None = None,
    ):
        self.params = {k: v.detach() for k, v in model.named_parameters()}
        dtype = dtype or next(iter(self.params.values())).dtype
        self.loss = HeadLoss(model, x, y, mode=mode, batch_size=batch_size, dtype=dtype)
        self.dim = self.loss.dim

    def matvec(self, v: torch.Tensor) -> torch.Tensor:
        return self.loss.hvp(v.to(self.loss.dtype)).to(torch.float64)

    def __call__(self, v: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        flat = self.loss.hvp(torch.cat([v[k].reshape(-1) for k in self.params]))
        return self.loss.unflatten(flat)


def extreme_eigenvalues(op: HessianOperator, max_steps: int = 100, tol: float = 1e-4, seed: int = 0) -> dict:
    """lambda_max and lambda_min by Lanczos from a seeded Gaussian start, to relative tolerance ``tol``.

    Lanczos stops as soon as the residual bound of both extreme Ritz values is within ``tol`` times the spectral
    scale (or after ``max_steps`` products, or when the Krylov space is invariant: then they are exact). Returns
    lambda_max, lambda_min, their residual bounds, the steps used, whether they converged, and the saddle flag.
    """
    g = torch.Generator().manual_seed(seed)
    v0 = torch.randn(op.dim, generator=g, dtype=torch.float64)

    def extremes(alphas: np.ndarray, betas: np.ndarray) -> tuple[float, float, float, float]:
        r = ritz(alphas, betas[: len(alphas) - 1], betas[len(alphas) - 1] if len(betas) >= len(alphas) else 0.0)
        values, bounds = r["values"], r["residual_bounds"]
        return float(values[-1]), float(values[0]), float(bounds[-1]), float(bounds[0])

    def within_tol(alphas: np.ndarray, betas: np.ndarray) -> bool:
        hi, lo, hi_bound, lo_bound = extremes(alphas, betas)
        return max(hi_bound, lo_bound) <= tol * max(abs(hi), abs(lo), 1e-300)

    # one more product than max_steps: its beta bounds the Ritz values of the max_steps-step tridiagonal
    alphas, betas = lanczos(op.matvec, v0, max_steps + 1, within_tol)
    m = min(len(alphas), max_steps)
    hi, lo, hi_bound, lo_bound = extremes(alphas[:m], betas[:m])
    scale = max(abs(hi), abs(lo), 1e-300)
    converged = max(hi_bound, lo_bound) <= tol * scale
    if not converged:
        log.warning(
            "Lanczos: extreme eigenvalues not within tol %g after %d steps (bounds %.3g, %.3g; scale %.3g)",
            tol,
            m,
            hi_bound,
            lo_bound,
            scale,
        )
    return {
        "lambda_max": hi,
        "lambda_min": lo,
        "lambda_max_residual_bound": hi_bound,
        "lambda_min_residual_bound": lo_bound,
        "lanczos_steps": int(m),
        "tol": tol,
        "converged": bool(converged),
        "saddle": is_saddle(lo, lo_bound, scale, tol, hi),
    }


SADDLE_FRACTION = 0.1  # negative curvature this fraction of lambda_max or more makes a saddle (module docstring)


def is_saddle(lambda_min: float, bound: float, scale: float, tol: float, lambda_max: float = 0.0) -> bool:
    """Negative curvature beyond the tolerance of the number and of the order of the positive: lambda_min < 0 by
    more than its residual bound, ``tol`` times the spectral scale and ``SADDLE_FRACTION`` of lambda_max."""
    return bool(lambda_min < 0 and -lambda_min > max(bound, tol * scale, SADDLE_FRACTION * max(lambda_max, 0.0)))


def hutchinson_trace(op: HessianOperator, probes: int = 100, seed: int = 0) -> tuple[float, float]:
    """Hutchinson estimate of tr(H) with Rademacher probes: (mean, standard error of the mean).

    Each probe z^T H z is an unbiased sample of tr(H) with variance 2 sum_{i != j} H_ij^2; the standard error is
    the sample standard deviation over sqrt(probes) (tests/test_hessian.py checks it against repeated runs).
    """
    g = torch.Generator().manual_seed(seed)
    samples = []
    for _ in range(probes):
        z = rademacher(op.dim, g)
        samples.append(float(z @ op.matvec(z)))
    s = np.asarray(samples)
    sem = float(s.std(ddof=1) / np.sqrt(probes)) if probes > 1 else float("nan")
    return float(s.mean()), sem
