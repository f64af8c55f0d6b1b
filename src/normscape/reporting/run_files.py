"""Loading run outputs (metrics.csv, summary.json, grads.h5, landscape.h5, sharpness.json) for figures and tables.

Runs are identified from their paths (the layout of :mod:`normscape.pipeline.paths`), so a figure needs nothing but the
list of files Snakemake gives it.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from normscape.models.norms import NORMS, LazyModule
from normscape.pipeline.errors import DataError
from normscape.pipeline.integrity import corrupt_message
from normscape.pipeline.paths import RUN_PATH, run_key  # noqa: F401  (run_key: the loaders' run identity)

h5py = LazyModule("h5py")  # imported on first use: the workflow imports this module when it parses
pd = LazyModule("pandas")


def load_metrics(paths: list[str | Path]) -> pd.DataFrame:
    """All epochs of all runs: one row per (run, epoch) with the run's identity columns."""
    frames = []
    for path in paths:
        df = read_run_metrics(path)
        for k, v in run_key(path).items():
            df[k] = v
        frames.append(df)
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def read_run_metrics(path: str | Path) -> pd.DataFrame:
    """One run's metrics.csv, checked against the epochs its summary.json records: a file cut short (a copy that
    stopped, an edit) still parses, as a shorter run, and would change every number drawn from it unnoticed.
    A damaged file is one :class:`DataError` naming it and the command that rebuilds it."""
    path = Path(path)
    summary = path.with_name("summary.json")
    try:
        df = pd.read_csv(path)  # pandas' EmptyDataError and ParserError are ValueErrors
        epochs = json.loads(summary.read_text()).get("epochs_completed") if summary.is_file() else None
        if epochs is not None and (len(df) != epochs or list(df["epoch"]) != list(range(1, epochs + 1))):
            raise ValueError(f"epochs {list(df['epoch'])[:3]}... ({len(df)} rows), its summary.json records {epochs}")
        complete = ["epoch", *(["diverged"] if "diverged" in df else [])]  # the last column training writes
        if df[complete].isna().any().any():  # losses may be NaN (a diverged run), these never are
            raise ValueError("a row cut short")
    except (OSError, ValueError, KeyError) as exc:
        raise DataError(corrupt_message(path, exc, "run metrics")) from None
    return df


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
