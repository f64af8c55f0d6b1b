"""Hessian spectrum of a head: top-k eigenvalues, the eigenvalue spectral density (SLQ), per-layer blocks.

All from exact Hessian-vector products of :class:`normscape.curvature.head_loss.HeadLoss` (the Hessian is never formed):

* **Lanczos with full reorthogonalisation** (float64 basis; after the three-term recurrence, classical Gram-Schmidt
  against the whole basis, repeated only when it removed much of the vector — Daniel, Gragg, Kaufman and Stewart's
  criterion, "twice is enough"): ``m`` steps
  from a unit start vector give a tridiagonal T_m whose eigenvalues (Ritz values) converge to the extreme
  eigenvalues first. The residual bound ``beta_m |s_{m,i}|`` of each Ritz value is reported with it.
* **Stochastic Lanczos quadrature** (Ubaru et al. 2017; PyHessian's ``density``): for a Rademacher start v,
  the Ritz values theta_i with weights w_i = s_{1,i}^2 are the Gauss quadrature rule of the spectral measure
  of v, so sum_i w_i theta_i^j = v^T H^j v / v^T v exactly for j < 2m; averaged over starts its expectation is
  tr(H^j) / P. The density is that discrete measure smoothed by a Gaussian of width ``sigma`` (an explicit
  width here: PyHessian passes its ``sigma_squared`` where a variance is expected).
  The top-k eigenvalues are read off the first SLQ run (the same Lanczos process), so they cost nothing extra.
* **Per-layer blocks** (fc1, norm, fc2): top eigenvalue of each diagonal block H_bb (Lanczos on the operator
  restricted to the block) and its trace (Hutchinson with Rademacher probes restricted to the block; the block
  traces sum to the trace).

BatchNorm heads are measured in both modes (``eval``: running statistics; ``train``: batch statistics of
training-size batches — see :mod:`normscape.curvature.head_loss`); every output carries its ``mode``.
``tests/test_spectrum.py`` checks every number against the explicit Hessian of a small head.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import numpy as np
import torch

from normscape.curvature.head_loss import HeadLoss

log = logging.getLogger(__name__)

MatVec = Callable[[torch.Tensor], torch.Tensor]
BREAKDOWN = 1e-10  # relative beta below which the Krylov space is invariant (Lanczos stops early)
# A Gram-Schmidt pass is repeated when the vector kept less than this share of its norm: then rounding in the pass may
# have left components along the basis. Each pass reads the whole basis twice (it costs about what the
# Hessian-vector product does at SLQ's 60 steps), and after the three-term recurrence one pass is usually enough.
REORTHOGONALISE_BELOW = 0.5**0.5


def rademacher(dim: int, generator: torch.Generator) -> torch.Tensor:
    return torch.randint(0, 2, (dim,), generator=generator).to(torch.float64).mul_(2).sub_(1)


def lanczos(
    matvec: MatVec, v0: torch.Tensor, steps: int, converged: Callable[[np.ndarray, np.ndarray], bool] | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Lanczos tridiagonalisation with full reorthogonalisation: (alpha (m,), beta (m-1,)), m <= steps.

    ``matvec`` maps a float64 vector to a vector of the same length (any precision; it is cast to float64).
    Stops early when the Krylov space becomes invariant (beta ~ 0): then T_m's eigenvalues are exact — or when
    ``converged(alphas, betas)`` (with beta_m, len(betas) == len(alphas)) says the Ritz values wanted are; then
    beta_m is returned too (len(betas) == len(alphas)).
    """
    dim = v0.numel()
    steps = min(steps, dim)
    basis = torch.zeros(steps, dim, dtype=torch.float64)
    v = v0.to(torch.float64) / torch.linalg.vector_norm(v0.to(torch.float64))
    alphas, betas = [], []
    scale = 0.0
    for j in range(steps):
        basis[j] = v
        w = matvec(v).to(torch.float64)
        alpha = float(w @ v)
        alphas.append(alpha)
        # the three-term recurrence, then full reorthogonalisation against every basis vector
        w -= alpha * v
        if j > 0:
            w -= betas[-1] * basis[j - 1]
        q = basis[: j + 1]
        norm = torch.linalg.vector_norm(w)
        for _ in range(2):
            before = norm
            w -= q.t() @ (q @ w)
            norm = torch.linalg.vector_norm(w)
            if norm >= REORTHOGONALISE_BELOW * before:
                break
        beta = float(norm)
        scale = max(scale, abs(alpha), beta)
        if j == steps - 1 or beta <= BREAKDOWN * max(scale, 1e-300):
            break
        if converged is not None and converged(np.asarray(alphas), np.asarray([*betas, beta])):
            betas.append(beta)  # returned too: it bounds the Ritz values of this tridiagonal
            break
        betas.append(beta)
        v = w / beta
    return np.asarray(alphas), np.asarray(betas)


def ritz(alphas: np.ndarray, betas: np.ndarray, last_beta: float = 0.0) -> dict[str, np.ndarray]:
    """Eigen-decomposition of T: Ritz values (ascending), quadrature weights s_{1,i}^2, residual bounds."""
    t = np.diag(alphas) + np.diag(betas, 1) + np.diag(betas, -1)
    values, vectors = np.linalg.eigh(t)
    return {"values": values, "weights": vectors[0] ** 2, "residual_bounds": abs(last_beta) * np.abs(vectors[-1])}


def _lanczos_ritz(matvec: MatVec, v0: torch.Tensor, steps: int) -> dict[str, np.ndarray]:
    # one extra product would give beta_m for the residual bound; instead run m+1 steps and bound the m-step
    # Ritz values by beta_m of the (m+1)-step run
    alphas, betas = lanczos(matvec, v0, steps + 1)
    m = min(steps, len(alphas))
    last_beta = betas[m - 1] if len(betas) >= m else 0.0
    return ritz(alphas[:m], betas[: m - 1], last_beta)


def top_eigenvalues(matvec: MatVec, dim: int, k: int, steps: int, seed: int = 0) -> dict[str, np.ndarray]:
    """The k largest eigenvalues (descending) by Lanczos from a seeded Gaussian start, with residual bounds."""
    g = torch.Generator().manual_seed(seed)
    r = _lanczos_ritz(matvec, torch.randn(dim, generator=g, dtype=torch.float64), steps)
    order = np.argsort(r["values"])[::-1][:k]
    return {"values": r["values"][order], "residual_bounds": r["residual_bounds"][order]}


def slq(matvec: MatVec, dim: int, steps: int, runs: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Stochastic Lanczos quadrature: (nodes (runs, m), weights (runs, m), residual bounds (runs, m)).

    Runs that stop early (invariant Krylov space) are padded with zero-weight nodes, so every row sums to 1.
    """
    g = torch.Generator().manual_seed(seed)
    rows = [_lanczos_ritz(matvec, rademacher(dim, g), steps) for _ in range(runs)]
    m = max(len(r["values"]) for r in rows)
    nodes, weights, bounds = (np.zeros((runs, m)) for _ in range(3))
    for i, r in enumerate(rows):
        n = len(r["values"])
        nodes[i, :n], weights[i, :n], bounds[i, :n] = r["values"], r["weights"], r["residual_bounds"]
        nodes[i, n:] = r["values"][-1]
    return nodes, weights, bounds


def density_moments(nodes: np.ndarray, weights: np.ndarray, orders: tuple[int, ...] = (1, 2, 3, 4)) -> np.ndarray:
    """Mean over SLQ runs of sum_i w_i theta_i^j: estimates of tr(H^j) / P."""
    return np.array([np.mean(np.sum(weights * nodes**j, axis=1)) for j in orders])


def density_moments_sem(nodes: np.ndarray, weights: np.ndarray, orders: tuple[int, ...] = (1, 2, 3, 4)) -> np.ndarray:
    """Standard errors of :func:`density_moments`: the runs are independent (one Rademacher start each), so the
    sample standard deviation of the per-run moments over sqrt(runs); NaN with one run."""
    runs = nodes.shape[0]
    if runs < 2:
        return np.full(len(orders), np.nan)
    return np.array([np.std(np.sum(weights * nodes**j, axis=1), ddof=1) / np.sqrt(runs) for j in orders])


def _finite_or_none(value: float) -> float | None:
    return float(value) if np.isfinite(value) else None


def spectral_density(nodes: np.ndarray, weights: np.ndarray, grid: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian-smoothed SLQ density on ``grid`` (integrates to ~1 over the whole real line)."""
    diff = grid[None, None, :] - nodes[:, :, None]
    kernel = np.exp(-0.5 * (diff / sigma) ** 2) / (sigma * np.sqrt(2 * np.pi))
    return np.mean(np.sum(weights[:, :, None] * kernel, axis=1), axis=0)


def density_grid(nodes: np.ndarray, points: int = 1000, margin: float = 0.05) -> np.ndarray:
    lo, hi = float(nodes.min()), float(nodes.max())
    pad = margin * max(hi - lo, 1e-12)
    return np.linspace(lo - pad, hi + pad, points)


def restricted(matvec: MatVec, mask: torch.Tensor) -> MatVec:
    """The diagonal block P H P of ``matvec`` for a 0/1 ``mask`` (zero outside the block)."""
    return lambda v: matvec(v * mask) * mask


def _tail_operator(loss: HeadLoss) -> MatVec:
    n1 = loss.fc1_size

    def matvec(v: torch.Tensor) -> torch.Tensor:
        out = torch.zeros(loss.dim, dtype=torch.float64)
        out[n1:] = loss.tail_hvp(v[n1:]).to(torch.float64)
        return out

    return matvec


def block_numbers(
    loss: HeadLoss, matvec: MatVec, steps: int, probes: int, seed: int = 0
) -> dict[str, dict[str, float]]:
    """Per block (fc1, norm, fc2): top eigenvalue, its residual bound, Hutchinson trace and its standard error."""
    out = {}
    for b, block in enumerate(loss.block_slices()):
        mask = loss.block_mask(block).to(torch.float64)
        size = int(mask.sum())
        if block == "fc1":
            op = restricted(matvec, mask)
        else:  # fc1 fixed: the cheap tail operator (same numbers, tests/test_spectrum.py)
            op = restricted(_tail_operator(loss), mask)
        # Lanczos inside the block: start vector supported on the block (the rest of the space is H's kernel)
        g = torch.Generator().manual_seed(seed * 1000 + b)
        r = _lanczos_ritz(op, torch.randn(loss.dim, generator=g, dtype=torch.float64) * mask, min(steps, size))
        i = int(np.argmax(r["values"]))
        samples = []
        for _ in range(probes):
            z = rademacher(loss.dim, g) * mask
            samples.append(float(z @ op(z).to(torch.float64)))
        s = np.asarray(samples)
        out[block] = {
            "size": size,
            "top_eigenvalue": float(r["values"][i]),
            "top_eigenvalue_residual_bound": float(r["residual_bounds"][i]),
            "trace": float(s.mean()) if probes else float("nan"),
            "trace_sem": float(s.std(ddof=1) / np.sqrt(probes)) if probes > 1 else float("nan"),
        }
    return out


def hessian_spectrum(
    model: torch.nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    mode: str = "eval",
    batch_size: int | None = None,
    top_k: int = 5,
    slq_steps: int = 60,
    slq_runs: int = 1,
    block_steps: int = 20,
    block_probes: int = 10,
    dtype: torch.dtype = torch.float64,
    seed: int = 0,
) -> dict:
    """Every spectrum number of one head in one mode: a JSON-able summary plus the SLQ arrays.

    Returns ``{"summary": {...}, "nodes": (runs, m), "weights": (runs, m)}``; the summary holds ``mode``,
    ``top_eigenvalues`` (descending) and their residual bounds, ``slq_trace`` (P * first moment; with one
    Rademacher start per run it is Hutchinson's estimator, ``slq_trace_sem`` its standard error over runs),
    ``moments`` (estimates of tr(H^j)/P, j = 1..4, and ``moments_sem``), the most negative Ritz value, and ``blocks``.
    ``dtype`` is the precision of the Hessian-vector products (the Lanczos basis is always float64).
    """
    loss = HeadLoss(model, x, y, mode=mode, batch_size=batch_size, dtype=dtype)
    matvec = lambda v: loss.hvp(v.to(dtype))  # noqa: E731 -- cast in, lanczos casts out
    nodes, weights, bounds = slq(matvec, loss.dim, slq_steps, slq_runs, seed)
    order = np.argsort(nodes[0])[::-1][:top_k]
    moments = density_moments(nodes, weights)
    moments_sem = density_moments_sem(nodes, weights)
    summary = {
        "mode": mode,
        "head": getattr(model, "norm_name", ""),
        "samples": int(len(loss.x)),
        "batch_size": loss.chunk_size if loss.batch_stats else None,
        "parameters": loss.dim,
        "dtype": str(dtype).replace("torch.", ""),
        "top_eigenvalues": [float(v) for v in nodes[0][order]],
        "top_eigenvalue_residual_bounds": [float(v) for v in bounds[0][order]],
        "min_ritz_value": float(nodes.min()),
        "slq_trace": float(moments[0] * loss.dim),
        # one run: None (one probe gives no error estimate; null in JSON, NaN in the claims' run table)
        "slq_trace_sem": _finite_or_none(moments_sem[0] * loss.dim),
        "moments": {f"m{j}": float(v) for j, v in zip((1, 2, 3, 4), moments)},
        "moments_sem": {f"m{j}": _finite_or_none(v) for j, v in zip((1, 2, 3, 4), moments_sem)},
        "slq_steps": slq_steps,
        "slq_runs": slq_runs,
        "blocks": block_numbers(loss, matvec, block_steps, block_probes, seed),
    }
    return {"summary": summary, "nodes": nodes, "weights": weights}


def write_spectrum(h5_path, json_path, results: dict[str, dict]) -> None:
    """Per run: spectrum.h5 (SLQ nodes/weights per mode, for the density figure) and spectrum.json
    ({mode: summary}, for tables and claims)."""
    from normscape.pipeline.atomic import write_json

    write_spectrum_h5(h5_path, results)
    write_json(json_path, {mode: res["summary"] for mode, res in results.items()})


def write_spectrum_h5(path, results: dict[str, dict]) -> None:
    """One group per mode ('eval', 'train'): SLQ nodes/weights, summary as JSON attribute."""
    import json

    import h5py

    from normscape.pipeline.atomic import atomic_path

    with atomic_path(path, suffix=".h5") as tmp, h5py.File(tmp, "w") as f:
        for mode, res in results.items():
            g = f.create_group(mode)
            g.create_dataset("nodes", data=res["nodes"])
            g.create_dataset("weights", data=res["weights"])
            g.attrs["summary"] = json.dumps(res["summary"])


def read_spectrum_h5(path) -> dict[str, dict]:
    import json

    import h5py

    with h5py.File(path, "r") as f:
        return {
            mode: {"nodes": g["nodes"][()], "weights": g["weights"][()], "summary": json.loads(g.attrs["summary"])}
            for mode, g in f.items()
        }
