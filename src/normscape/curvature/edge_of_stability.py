"""Adam's preconditioned sharpness along the training trajectory: the edge of stability (Cohen et al. 2022).

Adam's step is theta <- theta - lr * m_hat / P with P = diag(sqrt(v_hat) + eps). On a quadratic with Hessian H and
P held fixed, the update with momentum is stable exactly while the largest eigenvalue of the *preconditioned*
Hessian P^-1 H stays below ``stability_threshold(lr, beta1)`` = (2 + 2 beta1) / ((1 - beta1) lr) (38 / lr for
beta1 = 0.9): per eigen-direction of P^-1 H with eigenvalue a, the iteration of (x, m) is linear with matrix
[[1 - lr (1 - beta1) a, -lr beta1], [(1 - beta1) a, beta1]], whose determinant is beta1 and whose eigenvalue -1
appears at lr a = (2 + 2 beta1) / (1 - beta1) (tests/test_edge_of_stability.py iterates it). Cohen et al. find that
full-batch Adam's lambda_1(P^-1 H) rises to that threshold and hovers there; :class:`PreconditionedSharpnessProbe`
records it per run so the study can see whether (and how soon) each norm's head trains at the edge of stability.

lambda_1(P^-1 H) is computed as the top eigenvalue of the symmetric S H S, S = P^-1/2 (similar to P^-1 H, so the
same eigenvalues; symmetric, so Lanczos and its residual bounds apply), from exact Hessian-vector products of
:class:`normscape.curvature.head_loss.HeadLoss` on a fixed training subset, head in train mode (BatchNorm normalises
consecutive chunks of the run's batch size with their own statistics, as the update sees them). P is the
denominator the *next* ``opt.step()`` divides by (:func:`adam_preconditioner`, v updated with the current gradient).

Only the top end of the spectrum is wanted, so Lanczos stops when the top Ritz value's residual bound is within
``tol`` of the spectral scale (``normscape.curvature.sharpness.extreme_eigenvalues`` also waits for lambda_min, whose
end of a Hessian spectrum is a dense cluster near zero and converges slowly). The probe reads copies only and draws its
Lanczos starts from its own generator seeded per record: the run's numbers are bitwise those of a run without it.
"""

from __future__ import annotations

import logging
import time

import h5py
import numpy as np
import torch

from normscape.curvature.head_loss import HeadLoss
from normscape.curvature.spectrum import lanczos, ritz
from normscape.pipeline.atomic import atomic_path, write_json

log = logging.getLogger(__name__)

RECORD_FIELDS = (
    "step",
    "lr",
    "beta1",
    "threshold",
    "preconditioned_sharpness",
    "preconditioned_sharpness_residual_bound",
    "preconditioned_lanczos_steps",
    "preconditioned_converged",
    "sharpness",
    "sharpness_residual_bound",
    "sharpness_lanczos_steps",
    "sharpness_converged",
)
NEAR_THRESHOLD = 0.9  # first_step_at_threshold: the first probe whose ratio reaches this
WITHIN = 0.1  # fraction_within_10pct: |ratio - 1| <= this
EQUILIBRIUM = (0.8, 1.2)  # equilibrated: the late median ratio lies in this range


def stability_threshold(lr: float, beta1: float) -> float:
    """The largest lambda_1(P^-1 H) at which Adam's momentum update with frozen P is stable on a quadratic."""
    return (2.0 + 2.0 * beta1) / ((1.0 - beta1) * lr)


def adam_preconditioner(opt, param: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
    """P = sqrt(v_t) / sqrt(1 - beta2^t) + eps, the denominator the next ``opt.step()`` divides m_hat by (float64).

    ``opt`` as :func:`normscape.curvature.smoothness.adam_update` takes it (torch.optim.Adam, or a RunView's slice): g
    = grad + wd * theta, v_t = beta2 v_{t-1} + (1 - beta2) g^2, t = state step + 1 (v_0 = 0 and t = 1 before the first
    step).
    """
    group = opt.param_groups[0]
    if group.get("amsgrad") or group.get("maximize"):
        raise ValueError("adam_preconditioner supports Adam without amsgrad/maximize")
    beta2, eps, wd = group["betas"][1], group["eps"], group["weight_decay"]
    g = grad.detach().double()
    if wd:
        g = g + wd * param.detach().double()
    state = opt.state.get(param, {})
    v = state["exp_avg_sq"].double() if "exp_avg_sq" in state else torch.zeros_like(g)
    step = float(state["step"]) + 1 if "step" in state else 1.0
    v = beta2 * v + (1 - beta2) * g * g
    return (v.sqrt() / np.sqrt(1 - beta2**step)).add_(eps).reshape(-1)


class PreconditionedHessian:
    """v -> S H S v with S = P^-1/2 (float64 flat vectors on the CPU, as normscape.curvature.spectrum.lanczos uses
    them)."""

    def __init__(self, loss: HeadLoss, precond: torch.Tensor):
        self.loss, self.dim = loss, loss.dim
        self.device = loss.theta.device
        self.scale = precond.detach().to(self.device, torch.float64).rsqrt()

    def matvec(self, v: torch.Tensor) -> torch.Tensor:
        s = self.scale
        hv = self.loss.hvp((s * v.to(self.device)).to(self.loss.dtype)).to(torch.float64) * s
        if not torch.isfinite(hv).all():  # a diverged head: no eigenvalue to find (and eigh would fail on NaN)
            raise FloatingPointError("non-finite Hessian-vector product")
        return hv.cpu()


def preconditioned_top_eigenvalue(
    loss: HeadLoss, precond: torch.Tensor, max_steps: int = 20, tol: float = 1e-3, seed: int = 0
) -> dict:
    """lambda_1(P^-1 H) (``precond`` = P, flat; ones: lambda_1(H)) by Lanczos on S H S from a seeded start.

    Stops when the top Ritz value's residual bound is at most ``tol`` times the spectral scale (max |Ritz value|),
    after ``max_steps`` products, or when the Krylov space is invariant. Returns ``top_eigenvalue``, its
    ``residual_bound`` (an eigenvalue lies within it), ``lanczos_steps``, ``converged``; NaN if H is not finite.
    """
    op = PreconditionedHessian(loss, precond)
    v0 = torch.randn(op.dim, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)

    def top(alphas: np.ndarray, betas: np.ndarray) -> tuple[float, float, float]:
        m = len(alphas)
        r = ritz(alphas, betas[: m - 1], betas[m - 1] if len(betas) >= m else 0.0)
        return float(r["values"][-1]), float(r["residual_bounds"][-1]), float(np.abs(r["values"]).max())

    def within_tol(alphas: np.ndarray, betas: np.ndarray) -> bool:
        value, bound, scale = top(alphas, betas)
        return bound <= tol * max(scale, 1e-300)

    try:
        # one product more than max_steps: its beta bounds the Ritz values of the max_steps-step tridiagonal
        alphas, betas = lanczos(op.matvec, v0, max_steps + 1, within_tol)
    except FloatingPointError:
        return {"top_eigenvalue": float("nan"), "residual_bound": float("nan"), "lanczos_steps": 0, "converged": False}
    m = min(len(alphas), max_steps)
    value, bound, scale = top(alphas[:m], betas[:m])
    converged = bound <= tol * max(scale, 1e-300)
    if not converged:  # recorded per probe (and counted by summarize): a log line, not a warning per training step
        log.info("Lanczos: top eigenvalue %.4g not within tol %g after %d steps (bound %.3g)", value, tol, m, bound)
    return {"top_eigenvalue": value, "residual_bound": bound, "lanczos_steps": int(m), "converged": bool(converged)}


class PreconditionedSharpnessProbe:
    """The Trainer's ``probe``: lambda_1(P^-1 H) and lambda_1(H) every ``every`` steps (step 0 included).

    (x, y): a fixed training subset chosen by the caller; the Hessian is of its training loss in train mode with
    BatchNorm chunks of ``batch_size`` (the run's). ``dtype``: the precision of the Hessian-vector products.
    """

    def __init__(
        self,
        x: torch.Tensor,
        y: torch.Tensor,
        batch_size: int,
        every: int,
        lanczos_steps: int = 20,
        tol: float = 1e-3,
        dtype: torch.dtype = torch.float32,
        seed: int = 0,
    ):
        if every < 1:
            raise ValueError(f"preconditioned sharpness every = {every}: must be a positive number of steps")
        self.x, self.y = x.detach().clone(), y.detach().clone()
        self.batch_size, self.every, self.lanczos_steps, self.tol = int(batch_size), int(every), lanczos_steps, tol
        self.dtype, self.seed = dtype, int(seed)
        self.records: list[dict] = []
        self.seconds = 0.0  # time spent inside the probe (its cost)
        self.keep_vectors = False  # tests: keep (theta, P) of each record
        self.vectors: list[tuple[torch.Tensor, torch.Tensor]] = []

    def wants(self, step: int) -> bool:
        return step % self.every == 0

    def __call__(self, view, step: int, xb: torch.Tensor, yb: torch.Tensor) -> None:
        if not self.wants(step):
            return
        t0 = time.perf_counter()
        group = view.opt.param_groups[0]
        lr, beta1 = float(group["lr"]), float(group["betas"][0])
        precond = adam_preconditioner(view.opt, view.flat_param, view.flat_grad)
        # a copy (built without moving the global RNG: normscape.models.stacked_heads.StackedHeads.model_of)
        model = view.model
        device = next(model.parameters()).device
        loss = HeadLoss(model, self.x.to(device), self.y.to(device), "train", self.batch_size, self.dtype)
        seed = self.seed * 1_000_003 + step  # per record: a resumed run draws the same starts
        record = {"step": int(step), "lr": lr, "beta1": beta1, "threshold": stability_threshold(lr, beta1)}
        for prefix, p in (("preconditioned_", precond), ("", torch.ones_like(precond))):
            r = preconditioned_top_eigenvalue(loss, p, self.lanczos_steps, self.tol, seed)
            record[f"{prefix}sharpness"] = r["top_eigenvalue"]
            record[f"{prefix}sharpness_residual_bound"] = r["residual_bound"]
            record[f"{prefix or 'sharpness_'}lanczos_steps"] = r["lanczos_steps"]
            record[f"{prefix or 'sharpness_'}converged"] = r["converged"]
        self.records.append(record)
        if self.keep_vectors:
            self.vectors.append((loss.theta.detach().double().cpu(), precond.cpu()))
        self.seconds += time.perf_counter() - t0

    def state_dict(self) -> dict:
        return {"records": [dict(r) for r in self.records], "seconds": self.seconds}

    def load_state_dict(self, state: dict) -> None:
        self.records, self.seconds = [dict(r) for r in state["records"]], state["seconds"]

    def arrays(self) -> dict[str, np.ndarray]:
        return records_to_arrays(self.records)


def records_to_arrays(records: list[dict]) -> dict[str, np.ndarray]:
    """One (n,) array per field of :data:`RECORD_FIELDS` (step and Lanczos steps int64, converged bool)."""
    dtypes = {"step": np.int64, "preconditioned_lanczos_steps": np.int64, "sharpness_lanczos_steps": np.int64}
    dtypes |= {"preconditioned_converged": np.bool_, "sharpness_converged": np.bool_}
    return {k: np.array([r[k] for r in records], dtype=dtypes.get(k, np.float64)) for k in RECORD_FIELDS}


def summarize(arrays: dict[str, np.ndarray], threshold: float | None = None, seconds: float | None = None) -> dict:
    """Per-run numbers: how close lambda_1(P^-1 H) comes to the threshold, when, and where it settles.

    ``threshold``: the run's (default: each record's own, from the lr and beta1 it was probed with). The ratio is
    lambda_1(P^-1 H) / threshold per probe; ``late_median_ratio`` is its median over the last half of the probes
    (the equilibrium level) and ``equilibrated`` whether that lies within :data:`EQUILIBRIUM`.

    The probe at step 0 is recorded but not summarised: before the first step v_hat = g^2, so P = |g| + eps and
    Adam's first update is lr * sign(g) whatever the curvature; P^-1 H is then huge along every small-gradient
    coordinate: a number about the initialisation, not about stability.
    """
    recorded = int(len(arrays["step"]))
    arrays = {k: v[arrays["step"] > 0] for k, v in arrays.items()}
    steps, sharp = arrays["step"], arrays["preconditioned_sharpness"]
    n = int(len(steps))
    thresholds = np.full(n, threshold, dtype=np.float64) if threshold is not None else arrays["threshold"]
    out = {
        "probes": recorded,
        "threshold": float(threshold) if threshold is not None else (float(thresholds[-1]) if n else None),
        "lr": float(arrays["lr"][-1]) if n else None,
        "beta1": float(arrays["beta1"][-1]) if n else None,
        "probe_seconds": seconds,
        "converged_fraction": float(np.mean(arrays["preconditioned_converged"])) if n else None,
    }
    if not n:
        empty = ("max_ratio", "first_step_at_threshold", "fraction_within_10pct", "late_median_ratio")
        return {**out, **dict.fromkeys(empty), "equilibrated": False}
    ratio = sharp / thresholds
    finite = np.isfinite(ratio)
    reached = np.flatnonzero(finite & (ratio >= NEAR_THRESHOLD))
    late = ratio[n // 2 :]
    late = late[np.isfinite(late)]
    late_median = float(np.median(late)) if late.size else None
    return {
        **out,
        "max_ratio": float(ratio[finite].max()) if finite.any() else None,
        "first_step_at_threshold": int(steps[reached[0]]) if reached.size else None,
        "fraction_within_10pct": float(np.mean(finite & (np.abs(ratio - 1) <= WITHIN))),
        "late_median_ratio": late_median,
        "equilibrated": late_median is not None and EQUILIBRIUM[0] <= late_median <= EQUILIBRIUM[1],
    }


def write_preconditioned_sharpness(
    h5_path, json_path, probe: PreconditionedSharpnessProbe | None, attrs: dict | None = None
) -> dict:
    """Per run: the records (h5, for figures) and :func:`summarize` (json); without a probe zero records and
    ``probed: false``, so every run has the files its rule declares."""
    arrays = probe.arrays() if probe is not None else records_to_arrays([])
    settings = {"probed": probe is not None}
    if probe is not None:
        settings |= {
            "every": probe.every,
            "lanczos_steps": probe.lanczos_steps,
            "tol": probe.tol,
            "dtype": str(probe.dtype).replace("torch.", ""),
            "samples": int(len(probe.x)),
            "batch_size": probe.batch_size,
            "mode": "train (BatchNorm: batch statistics in chunks of batch_size), dropout off",
            "probe_seconds": probe.seconds,
        }
    with atomic_path(h5_path, suffix=".h5") as tmp, h5py.File(tmp, "w") as f:
        for key, value in arrays.items():
            f.create_dataset(key, data=value)
        for key, value in {**settings, **(attrs or {})}.items():
            if value is not None:
                f.attrs[key] = value
    summary = {**summarize(arrays, seconds=probe.seconds if probe is not None else None), **settings}
    write_json(json_path, summary)
    return summary


def read_preconditioned_sharpness_h5(path) -> dict:
    with h5py.File(path, "r") as f:
        out = {key: f[key][()] for key in f}
        out["attrs"] = dict(f.attrs)
    return out
