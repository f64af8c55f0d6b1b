"""Adaptive (scale-invariant) sharpness of a trained head (Kwon et al. 2021; Andriushchenko et al. 2023).

The perturbation of every parameter is scaled by its own magnitude: delta = |theta| * eta (elementwise), with
eta in a ball of radius rho — an l-infinity ball (default; Andriushchenko et al.'s adaptive l-inf sharpness)
or an l2 ball (ASAM). Then

* **average-case**: E_eta [L(theta + |theta| eta)] - L(theta), eta ~ N(0, sigma^2 I) with sigma = rho (l-inf,
  as Andriushchenko et al.) or rho / sqrt(P) (l2, so E||eta||^2 = rho^2); ``samples`` seeded *antithetic pairs*
  (eta, -eta), the same standard-normal draws scaled to every radius (common random numbers: radii and heads are
  compared on the same noise). A pair's mean (L(theta + delta) + L(theta - delta)) / 2 has the same expectation
  (eta is symmetric) but no first-order term g . delta, which is zero on average yet dominates single draws at a
  point where the gradient is not zero (10 single draws reversed the baseline/BatchNorm order at seed 0). The
  standard error is the standard deviation of the pair means over sqrt(pairs) (tests/test_adaptive_sharpness.py
  checks it against repeated sampling);
* **worst-case**: max over the ball, lower-bounded by projected gradient ascent on eta: first the one-step
  solution (rho * sign(g) for l-inf, rho * g / ||g|| for l2, g = |theta| * grad L — SAM's step), then
  ``ascent_steps`` steps of size ``2.5 rho / ascent_steps`` (Madry et al.'s rule) projected back onto the ball;
  the largest loss seen is reported.

Why adaptive: for the baseline head (ReLU, no norm), scaling fc1's row i (and bias i) by c > 0 and fc2's
column i by 1/c leaves the function unchanged, yet changes plain (unscaled) sharpness arbitrarily; the adaptive
numbers are exactly invariant (tests/test_adaptive_sharpness.py). ``adaptive=False`` gives the plain version.

The loss is :class:`normscape.curvature.head_loss.HeadLoss` on a fixed training subset, ``mode`` eval or train
(BatchNorm's batch statistics), float64 by default.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from normscape.curvature.head_loss import HeadLoss

BALLS = ("linf", "l2")


def _project(eta: torch.Tensor, rho: float, ball: str) -> torch.Tensor:
    if ball == "linf":
        return eta.clamp(-rho, rho)
    n = float(torch.linalg.vector_norm(eta))
    return eta * (rho / n) if n > rho else eta


def _ascent_direction(g: torch.Tensor, ball: str) -> torch.Tensor:
    if ball == "linf":
        return torch.sign(g)
    n = torch.linalg.vector_norm(g)
    return g / n if float(n) > 0 else torch.zeros_like(g)


def worst_case(
    loss: HeadLoss, scale: torch.Tensor, rho: float, ball: str, steps: int, generator: torch.Generator
) -> tuple[float, list[float]]:
    """Largest loss found in {theta + scale * eta : ||eta|| <= rho} by projected gradient ascent; (max, path)."""
    theta = loss.theta

    def value_and_eta_grad(eta):
        value, g = loss.value_and_grad(theta + scale * eta)
        return value, scale * g  # chain rule: d/d eta L(theta + scale * eta)

    _, g0 = value_and_eta_grad(torch.zeros_like(theta))
    if float(torch.linalg.vector_norm(g0)) == 0.0:  # exactly stationary: start from a random point of the ball
        g0 = torch.randn(theta.shape, generator=generator, dtype=theta.dtype)
    eta = _project(rho * _ascent_direction(g0, ball), rho, ball)
    step = 2.5 * rho / max(steps, 1)
    path = []
    for _ in range(steps + 1):
        value, g = value_and_eta_grad(eta)
        path.append(value)
        eta = _project(eta + step * _ascent_direction(g, ball), rho, ball)
    return max(path), path


def adaptive_sharpness(
    model: torch.nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    radii: tuple[float, ...] | list[float],
    ball: str = "linf",
    adaptive: bool = True,
    samples: int = 10,
    ascent_steps: int = 10,
    mode: str = "eval",
    batch_size: int | None = None,
    seed: int = 0,
    dtype: torch.dtype = torch.float64,
    average_radii: tuple[float, ...] | list[float] | None = None,
) -> dict:
    """Average- and worst-case (adaptive) sharpness at each radius: a JSON-able dict.

    ``{"loss": L(theta), "radii": [...], "worst": [...], "average_radii": [...], "average": [...],
    "average_sem": [...], ...}``; sharpness values are loss increases over L(theta). ``average_radii``
    (default: ``radii``): the average case is second order in rho while the worst case is first order, so it
    needs ~10x larger radii to rise above the noise of its first-order term.
    """
    average_radii = list(radii if average_radii is None else average_radii)
    if ball not in BALLS:
        raise ValueError(f"unknown sharpness ball {ball!r}; choose one of {BALLS}")
    loss = HeadLoss(model, x, y, mode=mode, batch_size=batch_size, dtype=dtype)
    theta = loss.theta
    scale = theta.abs() if adaptive else torch.ones_like(theta)
    base = float(loss.loss(theta))
    g = torch.Generator().manual_seed(seed)
    noise = [torch.randn(theta.shape, generator=g, dtype=dtype) for _ in range(samples)]
    sigma_unit = 1.0 if ball == "linf" else 1.0 / math.sqrt(loss.dim)
    average, average_sem, worst = [], [], []
    with torch.no_grad():
        for rho in average_radii:
            values = np.array(
                [
                    0.5
                    * (
                        float(loss.loss(theta + scale * (rho * sigma_unit) * z))
                        + float(loss.loss(theta - scale * (rho * sigma_unit) * z))
                    )
                    - base
                    for z in noise
                ]
            )
            average.append(float(values.mean()))
            average_sem.append(float(values.std(ddof=1) / math.sqrt(samples)) if samples > 1 else math.nan)
    for rho in radii:
        top, _ = worst_case(loss, scale, float(rho), ball, ascent_steps, g)
        worst.append(top - base)
    return {
        "head": getattr(model, "norm_name", ""),
        "mode": mode,
        "ball": ball,
        "adaptive": adaptive,
        "samples": int(len(loss.x)),
        "noise_samples": samples,  # antithetic pairs: 2 x samples loss evaluations per radius
        "ascent_steps": ascent_steps,
        "loss": base,
        "radii": [float(r) for r in radii],
        "average_radii": [float(r) for r in average_radii],
        "average": average,
        "average_sem": average_sem,
        "worst": worst,
    }


def by_radius(result: dict) -> dict:
    """``result`` with the per-radius lists as {radius: value} maps (JSON keys readable by the claims table)."""
    out = {k: v for k, v in result.items() if k not in ("radii", "average_radii", "average", "average_sem", "worst")}
    for key in ("average", "average_sem"):
        out[key] = {f"{r:g}": v for r, v in zip(result["average_radii"], result[key])}
    out["worst"] = {f"{r:g}": v for r, v in zip(result["radii"], result["worst"])}
    return out


def write_adaptive_sharpness(path, results: dict[str, dict]) -> None:
    """adaptive_sharpness.json: {mode: result by radius} ('eval'; 'train' too for BatchNorm heads)."""
    from normscape.pipeline.atomic import write_json

    write_json(path, {mode: by_radius(res) for mode, res in results.items()})


def read_adaptive_sharpness(path) -> dict:
    import json
    from pathlib import Path

    return json.loads(Path(path).read_text())
