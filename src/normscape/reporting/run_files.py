"""Loading run outputs (metrics.csv, summary.json, grads.h5, landscape.h5, sharpness.json) for figures and tables.

Runs are identified from their paths (the layout of :mod:`normscape.pipeline.paths`), so a figure needs nothing but the
list of files Snakemake gives it.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from normscape.models.norms import NORMS, LazyModule
from normscape.pipeline.paths import RUN_PATH, run_key  # noqa: F401  (run_key: the loaders' run identity)

h5py = LazyModule("h5py")  # imported on first use: the workflow imports this module when it parses
pd = LazyModule("pandas")


def load_metrics(paths: list[str | Path]) -> pd.DataFrame:
    """All epochs of all runs: one row per (run, epoch) with the run's identity columns."""
    frames = []
    for path in paths:
        df = pd.read_csv(path)
        for k, v in run_key(path).items():
            df[k] = v
        frames.append(df)
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def load_summaries(paths: list[str | Path]) -> list[dict]:
    out = []
    for path in paths:
        summary = json.loads(Path(path).read_text())
        summary.update(run_key(path))
        out.append(summary)
    return out


def load_grad_hist(path: str | Path, layer: str) -> dict[str, np.ndarray]:
    with h5py.File(path, "r") as f:
        g = f[f"layers/{layer}"]
        return {
            "edges": f["edges"][()],
            "counts": g["counts"][()],
            "underflow": g["underflow"][()],
            "overflow": g["overflow"][()],
            "mean_abs": g["mean_abs"][()],
        }


def load_landscape(path: str | Path) -> dict:
    """A landscape file's surfaces; a diverged run's record has none: ``{"attrs", "diverged": reason}``."""
    out: dict = {}
    with h5py.File(path, "r") as f:
        out["attrs"] = dict(f.attrs)
        if f.attrs.get("status") == "diverged":
            out["diverged"] = str(f.attrs.get("reason", "diverged"))
            return out
        for group in ("plane", "line", "interpolation", "pca"):
            out[group] = {k: v[()] for k, v in f[group].items()}
    return out


def norm_sort_key(head: str) -> int:
    order = list(NORMS)  # registration order (built-in first, then plugins'), read now
    return order.index(head) if head in order else len(order)


def variant_value(variant: str) -> float | None:
    """Numeric value of a swept variant ('lr-0.01' -> 0.01, 'bs-32' -> 32); None for 'base'."""
    if variant == "base" or "-" not in variant:
        return None
    return float(variant.split("-", 1)[1])
