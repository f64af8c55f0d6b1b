"""Curvature at matched training loss: the common level and each run's epoch from its files, and the curvature
(λmax, λmin, trace, with the norm as training used it) against the dense float64 Hessian of a tiny head."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import dense_hessian, trained_head

from normscape.curvature.head_loss import HeadLoss
from normscape.curvature.matched_loss import curvature_at, final_train_losses, matched_epoch

SETTINGS = {"lanczos_steps": 200, "tol": 1e-8, "hutchinson_probes": 400}


def write_run(root, head, seed, losses, best_val_acc, diverged=False):
    run = root / "runs" / "convergence" / head / "base" / f"seed{seed}"
    run.mkdir(parents=True)
    lines = ["epoch,train_loss"] + [f"{i + 1},{loss}" for i, loss in enumerate(losses)]
    (run / "metrics.csv").write_text("\n".join(lines) + "\n")
    summary = {"diverged": diverged, "best": {"val_acc": best_val_acc}}
    (run / "summary.json").write_text(json.dumps(summary))
    return str(run / "metrics.csv"), str(run / "summary.json")


def test_the_level_is_the_highest_final_loss_among_runs_that_learned(tmp_path):
    files = [
        write_run(tmp_path, "batch", 0, [0.9, 0.5, 0.2, 0.05], 0.8),
        write_run(tmp_path, "layer", 0, [1.0, 0.7, 0.45, 0.3], 0.75),
        write_run(tmp_path, "frn", 0, [2.3, 2.3, 2.3, 2.3], 0.1),  # dead: below min_val_acc
        write_run(tmp_path, "none", 0, [1.1, 0.6, float("nan"), float("nan")], 0.5, diverged=True),
    ]
    finals = final_train_losses([m for m, _ in files], [s for _, s in files], min_val_acc=0.2)
    assert finals == {"convergence/batch/base/seed0": 0.05, "convergence/layer/base/seed0": 0.3}
    level = max(finals.values())
    assert matched_epoch([0.9, 0.5, 0.2, 0.05], level) == 3  # the first epoch at or below the level
    assert matched_epoch([1.0, 0.7, 0.45, 0.3], level) == 4  # the run that sets it: its last epoch
    assert matched_epoch([2.3, 2.3], level) is None


@pytest.mark.slow
@pytest.mark.parametrize("norm", ["layer", "batch"])
def test_curvature_equals_the_dense_hessian_in_training_mode(norm):
    model, x, y = trained_head(norm, 10, 6, 3, samples=48, batch=16, steps=20)
    loss = HeadLoss(model, x, y, mode="train", batch_size=16, dtype=torch.float64)
    h = dense_hessian(loss)
    eig = np.linalg.eigvalsh(h.numpy())
    out = curvature_at(model, x, y, SETTINGS, batch_size=16)
    scale = np.abs(eig).max()
    assert out["top_eigenvalue"] == pytest.approx(eig[-1], abs=1e-6 * scale)
    assert out["min_eigenvalue"] == pytest.approx(eig[0], abs=1e-6 * scale)
    exact = float(torch.trace(h))
    if norm == "batch":  # batch statistics couple the samples: Hutchinson's estimate, within its standard error
        assert out["trace_method"] == "hutchinson" and out["hessian_trace_sem"] > 0
        assert abs(out["hessian_trace"] - exact) <= 4 * out["hessian_trace_sem"]
    else:
        assert out["trace_method"] == "exact" and out["hessian_trace_sem"] == 0.0
        assert out["hessian_trace"] == pytest.approx(exact, rel=1e-9)
