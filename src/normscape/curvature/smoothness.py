"""Smoothness of the loss landscape along the training trajectory (Santurkar et al. 2018, Fig. 4).

Every ``every`` optimiser steps, from the current parameters theta on the current training batch (head in
train mode: BatchNorm uses the batch's statistics — the function the optimiser descends; dropout off), the
loss and gradient are evaluated at theta + c * u for each step-size multiplier c (default 0.5, 1, 2, 4):

* **loss range** ("variation of the loss"): max - min of the loss over {theta} and the points theta + c u;
* **gradient predictiveness**: ||grad L(theta + c u) - grad L(theta)||_2, per c (small = predictive);
* **effective beta-smoothness**: max_c ||grad L(theta + c u) - grad L(theta)|| / ||c u||.

The direction u: ``update`` (default) is the step Adam is about to take (c = 1 lands exactly on the next
parameters; computed from the optimiser's state without changing it), i.e. lr x {0.5, 1, 2, 4} in Adam's
step size. Santurkar et al. move along the gradient because they train with SGD, where the gradient IS the
update; the study trains with Adam, whose per-coordinate scaling makes its step point elsewhere, and the
landscape the optimiser traverses is the one along its own step. ``gradient`` (u = -lr * g, the SGD step
with the same lr) is available for comparison with the paper.

The loss and gradients are recomputed (float32 by default, float64 on request;
:class:`normscape.curvature.head_loss.HeadLoss`) from a copy of the model: the probe changes neither the model, the
optimiser, its running statistics nor the RNG, so a run with the probe has exactly the metrics of a run without
(tests/test_smoothness.py).
"""

from __future__ import annotations

import time

import h5py
import numpy as np
import torch

from normscape.curvature.head_loss import HeadLoss
from normscape.pipeline.atomic import atomic_path

DIRECTIONS = ("update", "gradient")
RECORD_FIELDS = ("step", "loss", "grad_norm", "direction_norm", "losses", "grad_changes")


def adam_update(opt, param: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
    """The change ``opt.step()`` would make to ``param`` given ``grad`` (float64; the optimiser is not touched).

    ``opt``: torch.optim.Adam, or a run's slice of a group's (normscape.training.trainer.RunView), without
    amsgrad/maximize: g += wd * theta; m, v updated; bias-corrected step.
    """
    group = opt.param_groups[0]
    if group.get("amsgrad") or group.get("maximize"):
        raise ValueError("adam_update supports Adam without amsgrad/maximize")
    lr, (beta1, beta2), eps, wd = group["lr"], group["betas"], group["eps"], group["weight_decay"]
    theta, g = param.detach().double(), grad.detach().double()
    if wd:
        g = g + wd * theta
    state = opt.state.get(param, {})
    m = state["exp_avg"].double() if "exp_avg" in state else torch.zeros_like(g)
    v = state["exp_avg_sq"].double() if "exp_avg_sq" in state else torch.zeros_like(g)
    step = float(state["step"]) + 1 if "step" in state else 1.0
    m = beta1 * m + (1 - beta1) * g
    v = beta2 * v + (1 - beta2) * g * g
    denom = (v.sqrt() / np.sqrt(1 - beta2**step)).add_(eps)
    return -(lr / (1 - beta1**step)) * m / denom


def measure(loss: HeadLoss, direction: torch.Tensor, multipliers: tuple[float, ...]) -> dict[str, float | np.ndarray]:
    """Loss, gradient norm, and loss / gradient change at theta + c * direction for each multiplier c."""
    theta = loss.theta
    u = direction.to(loss.dtype)
    loss0, g0 = loss.value_and_grad(theta)
    losses, changes = [], []
    for c in multipliers:
        value, g = loss.value_and_grad(theta + c * u)
        losses.append(value)
        changes.append(float(torch.linalg.vector_norm(g - g0)))
    return {
        "loss": loss0,
        "grad_norm": float(torch.linalg.vector_norm(g0)),
        "direction_norm": float(torch.linalg.vector_norm(u)),
        "losses": np.asarray(losses),
        "grad_changes": np.asarray(changes),
    }


class SmoothnessProbe:
    """The Trainer's ``probe``: measures smoothness every ``every`` steps (step 0 included) and keeps records."""

    def __init__(
        self,
        every: int = 100,
        multipliers=(0.5, 1.0, 2.0, 4.0),
        direction: str = "update",
        dtype: torch.dtype = torch.float32,
    ):
        if direction not in DIRECTIONS:
            raise ValueError(f"unknown smoothness direction {direction!r}; choose one of {DIRECTIONS}")
        if every < 1:
            raise ValueError(f"smoothness every = {every}: must be a positive number of steps")
        # float32 (the training's own precision) by default: the loss and gradient changes measured are 1e-3..1
        # relative, far above float32 rounding (1e-6; tests/test_smoothness.py compares with float64), and a
        # float64 probe costs ~10x more on a CPU
        self.every, self.direction, self.dtype = int(every), direction, dtype
        self.multipliers = tuple(float(c) for c in multipliers)
        self.records: list[dict] = []
        self.seconds = 0.0  # time spent inside the probe (its cost)
        self.keep_vectors = False  # tests: keep (theta, u) of each record
        self.vectors: list[tuple[torch.Tensor, torch.Tensor]] = []

    def wants(self, step: int) -> bool:
        """Whether the probe measures before optimiser step ``step`` (the trainer builds its view only then)."""
        return step % self.every == 0

    def __call__(self, trainer, step: int, xb: torch.Tensor, yb: torch.Tensor) -> None:
        if not self.wants(step):
            return
        t0 = time.perf_counter()
        if self.direction == "update":
            u = adam_update(trainer.opt, trainer.flat_param, trainer.flat_grad)
        else:
            u = -trainer.opt.param_groups[0]["lr"] * trainer.flat_grad.detach().double()
        loss = HeadLoss(trainer.model, xb, yb, mode="train", batch_size=len(xb), dtype=self.dtype)
        record = {"step": step, **measure(loss, u, self.multipliers)}
        self.records.append(record)
        if self.keep_vectors:
            self.vectors.append((loss.theta.clone(), u.clone()))
        self.seconds += time.perf_counter() - t0

    def state_dict(self) -> dict:
        return {"records": list(self.records), "seconds": self.seconds}

    def load_state_dict(self, state: dict) -> None:
        self.records, self.seconds = list(state["records"]), state["seconds"]

    def arrays(self) -> dict[str, np.ndarray]:
        """Records stacked: step (n,), loss/grad_norm/direction_norm (n,), losses/grad_changes (n, len(c))."""
        n, m = len(self.records), len(self.multipliers)
        out = {
            "step": np.array([r["step"] for r in self.records], dtype=np.int64),
            "multipliers": np.asarray(self.multipliers),
        }
        for key in ("loss", "grad_norm", "direction_norm"):
            out[key] = np.array([r[key] for r in self.records], dtype=np.float64)
        for key in ("losses", "grad_changes"):
            out[key] = np.array([r[key] for r in self.records], dtype=np.float64).reshape(n, m)
        return out


def derived(arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Per probe step: loss range, gradient change at c = 1 (or the closest c), effective beta-smoothness."""
    all_losses = np.concatenate([arrays["loss"][:, None], arrays["losses"]], axis=1)
    distances = arrays["direction_norm"][:, None] * arrays["multipliers"][None, :]
    with np.errstate(divide="ignore", invalid="ignore"):
        beta = np.nanmax(np.where(distances > 0, arrays["grad_changes"] / distances, np.nan), axis=1)
    unit = int(np.argmin(np.abs(arrays["multipliers"] - 1.0)))
    return {
        "loss_range": all_losses.max(1) - all_losses.min(1),
        "grad_change": arrays["grad_changes"][:, unit],
        "beta": beta,
    }


def summarize(arrays: dict[str, np.ndarray]) -> dict[str, float]:
    """Per-run numbers for the tables: median and 90th percentile over the probe steps."""
    if not len(arrays["step"]):
        return {"probes": 0}
    out: dict[str, float] = {"probes": int(len(arrays["step"]))}
    for key, values in derived(arrays).items():
        finite = values[np.isfinite(values)]
        out[f"{key}_median"] = float(np.median(finite)) if finite.size else float("nan")
        out[f"{key}_p90"] = float(np.percentile(finite, 90)) if finite.size else float("nan")
    return out


def write_smoothness_h5(path, probe: SmoothnessProbe, attrs: dict | None = None) -> None:
    arrays = probe.arrays()
    with atomic_path(path, suffix=".h5") as tmp, h5py.File(tmp, "w") as f:
        for key, value in arrays.items():
            f.create_dataset(key, data=value)
        f.attrs["every"] = probe.every
        f.attrs["direction"] = probe.direction
        f.attrs["mode"] = "train (batch statistics of the training batch), dropout off"
        f.attrs["dtype"] = str(probe.dtype).replace("torch.", "")
        f.attrs["probe_seconds"] = probe.seconds
        for key, value in (attrs or {}).items():
            f.attrs[key] = value


def write_smoothness(h5_path, json_path, probe: SmoothnessProbe, attrs: dict | None = None) -> dict:
    """Per run: smoothness.h5 (every probe step, for the figure) and smoothness.json (:func:`summarize`)."""
    from normscape.pipeline.atomic import write_json

    write_smoothness_h5(h5_path, probe, attrs)
    summary = {
        **summarize(probe.arrays()),
        "every": probe.every,
        "direction": probe.direction,
        "probe_seconds": probe.seconds,
    }
    write_json(json_path, summary)
    return summary


def read_smoothness_h5(path) -> dict:
    with h5py.File(path, "r") as f:
        out = {key: f[key][()] for key in f}
        out["attrs"] = dict(f.attrs)
    return out
