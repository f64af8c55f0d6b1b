"""Loading run outputs (metrics.csv, summary.json, grads.h5, landscape.h5, sharpness.json) for figures and tables.

Runs are identified from their paths ``.../runs/<experiment>/<head>/<variant>/seed<N>/<file>`` (and the same
under ``landscapes/``), so a figure needs nothing but the list of files Snakemake gives it.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import h5py
import numpy as np
import pandas as pd

RUN_PATH = re.compile(r"(?P<experiment>[^/]+)/(?P<head>[^/]+)/(?P<variant>[^/]+)/seed(?P<seed>\d+)/[^/]+$")

HEAD_LABELS = {
    "none": "Baseline (no norm)",
    "batch": "BatchNorm",
    "layer": "LayerNorm",
    "group": "GroupNorm",
    "frn": "FRN",
    "frn_learned_eps": "FRN (learned eps)",
}
HEAD_ORDER = list(HEAD_LABELS)


def run_key(path: str | Path) -> dict:
    m = RUN_PATH.search(Path(path).as_posix())
    if not m:
        raise ValueError(f"{path} is not inside a run directory <experiment>/<head>/<variant>/seed<N>/")
    key = m.groupdict()
    key["seed"] = int(key["seed"])
    return key


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


def head_sort_key(head: str) -> int:
    return HEAD_ORDER.index(head) if head in HEAD_ORDER else len(HEAD_ORDER)


def variant_value(variant: str) -> float | None:
    """Numeric value of a swept variant ('lr-0.01' -> 0.01, 'bs-32' -> 32); None for 'base'."""
    if variant == "base" or "-" not in variant:
        return None
    return float(variant.split("-", 1)[1])
