"""What a run is judged by: loss and accuracy of a head, divergence, gradient-norm statistics, a run's summary.

Divergence (:func:`divergence_reason`): an epoch diverges when a loss or a parameter is not finite, or when the
training or validation loss exceeds ``DIVERGENCE_LOSS_FACTOR`` x the validation loss at initialisation (an
exploded but finite loss, e.g. 1e19 at lr 1e6). :func:`run_summary` is what ``summary.json`` holds beside the
run's identity (written by :mod:`normscape.training.job`).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from normscape.models.heads import build_head

ACC_THRESHOLDS = (0.80, 0.85)
EVAL_CHUNK = 8192
# A loss this many times the initial validation loss (~ln 10 = 2.3 for a fresh head) is an explosion, not
# training: a head that learns never gets there, a step size that has blown up does within an epoch.
DIVERGENCE_LOSS_FACTOR = 1000.0


def divergence_reason(train_loss: float, val_loss: float, params: torch.Tensor, initial_loss: float) -> str | None:
    """Why an epoch counts as diverged, or None (see the module docstring for the rule)."""
    if not (math.isfinite(train_loss) and math.isfinite(val_loss)):
        return f"non-finite loss (train {train_loss}, val {val_loss})"
    if not bool(torch.isfinite(params).all()):
        return "non-finite parameters"
    limit = DIVERGENCE_LOSS_FACTOR * initial_loss
    if max(train_loss, val_loss) > limit:
        return (
            f"loss exploded (train {train_loss:.3g}, val {val_loss:.3g}: above {limit:.3g}, "
            f"{DIVERGENCE_LOSS_FACTOR:g} x the initial val loss {initial_loss:.3g})"
        )
    return None


@torch.no_grad()
def evaluate(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
    """(mean cross-entropy, accuracy) of ``model`` in eval mode on (x, y)."""
    was_training = model.training
    model.eval()
    loss_sum = torch.zeros((), dtype=torch.float64, device=x.device)
    correct = torch.zeros((), dtype=torch.int64, device=x.device)
    for start in range(0, len(x), EVAL_CHUNK):
        logits = model(x[start : start + EVAL_CHUNK])
        yb = y[start : start + EVAL_CHUNK]
        loss_sum += F.cross_entropy(logits, yb, reduction="sum").double()
        correct += (logits.argmax(1) == yb).sum()
    model.train(was_training)
    n = max(len(x), 1)
    return float(loss_sum) / n, float(correct) / n


def norm_stats(norms: np.ndarray) -> dict[str, float]:
    """Mean, median, 99th percentile and max of the finite per-step gradient norms (NaN when there are none)."""
    finite = norms[np.isfinite(norms)]
    if not finite.size:
        return dict.fromkeys(("mean", "median", "p99", "max"), math.nan)
    return {
        "mean": float(finite.mean()),
        "median": float(np.median(finite)),
        "p99": float(np.percentile(finite, 99)),
        "max": float(finite.max()),
    }


def run_summary(run: Any, state: dict, head_config: dict, data: dict, clip: float | None, device: torch.device) -> dict:
    """The summary of ``run`` (a :class:`normscape.training.run_records.RunRecord`) whose current head is
    ``state``: final and best-epoch numbers (test set evaluated here), epochs to the accuracy thresholds,
    divergence and gradient-norm statistics."""
    test = data["test"]
    model = build_head(**head_config)
    model.load_state_dict(state)
    model.to(device)
    if run.diverged_epoch is None:
        final_train = evaluate(model, *data["train"])
        final_test = evaluate(model, *test)
    else:
        final_train = final_test = (math.nan, math.nan)
    best_model = build_head(**head_config)
    best_model.load_state_dict(run.best["state"])
    best_model.to(device)
    best_test = evaluate(best_model, *test)
    last = run.metrics[-1] if run.metrics else {}
    norms = np.concatenate(run.step_norms) if run.step_norms else np.zeros(0)
    stats = norm_stats(norms)
    norms = norms[np.isfinite(norms)]
    epochs_to = {}
    for thr in ACC_THRESHOLDS:
        hit = [m["epoch"] for m in run.metrics if m["val_acc"] >= thr]
        epochs_to[f"{thr:.2f}"] = hit[0] if hit else None
    return {
        "head_config": head_config,
        "final": {
            "train_loss": final_train[0],
            "train_acc": final_train[1],
            "val_loss": last.get("val_loss"),
            "val_acc": last.get("val_acc"),
            "test_loss": final_test[0],
            "test_acc": final_test[1],
        },
        "best": {
            "epoch": run.best["epoch"],
            "val_loss": run.best["val_loss"],
            "val_acc": run.best["val_acc"],
            "test_loss": best_test[0],
            "test_acc": best_test[1],
        },
        "epochs_to_val_acc": epochs_to,
        "diverged": run.diverged_epoch is not None,
        "diverged_epoch": run.diverged_epoch,
        "diverged_reason": run.diverged_reason,
        # NaN (no finite step) is written as null by write_json
        "grad_norm": {
            "median": stats["median"],
            "p99": stats["p99"],
            "max": stats["max"],
            "clipped_fraction": float((norms > clip).mean()) if clip and norms.size else 0.0,
        },
        "wall_time_s": run.wall_time_s,
        "epochs_completed": len(run.metrics),
    }
