"""One row per run of the study: identity, summary numbers, convergence relative to the run's own plateau, and
every number of every per-run measure file — the table the claims (:mod:`normscape.reporting.claims`) are tested on.

Convergence speed: the first epoch whose validation accuracy reaches ``plateau_fraction`` of that run's best,
and the areas under the validation accuracy and loss curves (trapezoid / epoch span = mean over training); fixed
accuracy thresholds may sit above what frozen features allow. ``learned`` is False for runs whose best validation
accuracy stays below ``min_val_acc`` (a dead network has no convergence speed and no meaningful flatness).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from normscape.reporting.run_files import load_metrics, load_summaries, run_key

ID_COLUMNS = ["experiment", "head", "variant", "seed"]


def flatten(obj, prefix: str = "") -> dict:
    """Nested JSON -> {"a.b.c": value} for numbers and flags (true/false as 1.0/0.0, e.g. ``sharpness.saddle``);
    lists of numbers as "a.b.0", "a.b.1", ..."""
    out = {}
    items = obj.items() if isinstance(obj, dict) else enumerate(obj) if isinstance(obj, list) else None
    if items is None:
        if isinstance(obj, (int, float)) or obj is None:
            out[prefix] = np.nan if obj is None else float(obj)
        return out
    for k, v in items:
        out.update(flatten(v, f"{prefix}.{k}" if prefix else str(k)))
    return out


def curve_statistics(
    val_acc: np.ndarray, epochs: np.ndarray, plateau_fraction: float, val_loss: np.ndarray | None = None
) -> dict[str, float]:
    """Epochs to reach ``plateau_fraction`` of the run's best validation accuracy; mean accuracy over training;
    mean validation loss over training (area under the loss curve / epoch span: it varies between runs where
    epochs-to-plateau is 1 for nearly all of them)."""
    finite = np.isfinite(val_acc)
    loss_auc = _curve_mean(val_loss, epochs) if val_loss is not None else np.nan
    if not finite.any():
        return {"epochs_to_plateau": np.nan, "val_auc": np.nan, "val_loss_auc": loss_auc}
    best = np.nanmax(val_acc)
    reached = np.flatnonzero(finite & (val_acc >= plateau_fraction * best))
    return {
        "epochs_to_plateau": float(epochs[reached[0]]),
        "val_auc": _curve_mean(val_acc, epochs),
        "val_loss_auc": loss_auc,
    }


def _curve_mean(values: np.ndarray, epochs: np.ndarray) -> float:
    """Trapezoid area under the curve / epoch span (NaN when a value is not finite: a diverged run)."""
    if not np.isfinite(values).all():
        return float("nan")
    span = epochs[-1] - epochs[0]
    return float(np.trapezoid(values, epochs) / span) if span > 0 else float(values[0])


def run_table(
    summary_paths: list,
    metrics_paths: list,
    measure_paths: dict[str, list] | None = None,
    plateau_fraction: float = 0.95,
    min_val_acc: float = 0.2,
) -> pd.DataFrame:
    """One row per run: identity, summary numbers, curve statistics, and every number of every measure file
    (``measure_paths = {"sharpness": [...sharpness.json], "adaptive": [...], ...}`` -> columns "sharpness.<key>")."""
    rows: dict[tuple, dict] = {}
    for summary in load_summaries(summary_paths):
        key = tuple(summary[k] for k in ID_COLUMNS)
        rows[key] = {
            **dict(zip(ID_COLUMNS, key)),
            "final_test_acc": summary["final"]["test_acc"],
            "best_test_acc": summary["best"]["test_acc"],
            "best_val_acc": summary["best"]["val_acc"],
            "diverged": float(bool(summary.get("diverged", False))),
            "lr": summary.get("training", {}).get("lr"),  # what the run trained with (claims name it)
        }
    metrics = load_metrics(metrics_paths)
    if len(metrics):
        for key, g in metrics.groupby(ID_COLUMNS):
            g = g.sort_values("epoch")
            val_loss = g["val_loss"].to_numpy(float) if "val_loss" in g else None
            stats = curve_statistics(
                g["val_acc"].to_numpy(float), g["epoch"].to_numpy(float), plateau_fraction, val_loss
            )
            rows.setdefault(key, dict(zip(ID_COLUMNS, key))).update(stats)
    for name, paths in (measure_paths or {}).items():
        for path in paths:
            k = run_key(path)
            key = tuple(k[c] for c in ID_COLUMNS)
            rows.setdefault(key, dict(zip(ID_COLUMNS, key))).update(flatten(json.loads(Path(path).read_text()), name))
    table = pd.DataFrame(list(rows.values()))
    # train mode differs from eval mode only for BatchNorm (batch statistics); the other heads' measure files
    # hold eval mode only, which IS their train-mode value
    for column in [c for c in table.columns if ".train." in c]:
        twin = column.replace(".train.", ".eval.", 1)
        if twin in table:
            same = table["head"] != "batch"
            table.loc[same, column] = table.loc[same, column].fillna(table.loc[same, twin])
    if "best_val_acc" in table:
        table["learned"] = table["best_val_acc"] >= min_val_acc
    return table
