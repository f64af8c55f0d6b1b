"""What a run sends to W&B, apart from the connection: the provenance of its inputs, its tags, and histograms in
the form W&B shows (``wandb.Histogram``'s ``np_histogram`` pairs).

Our gradient-magnitude counts (:mod:`normscape.training.grad_histograms`) become one log10 |grad| histogram per
parameter whose first and last bins hold the under- and overflow, so nothing is dropped; ``wandb.watch``'s
per-step gradient and parameter histograms are rebuilt over each tensor's range with its non-finite values
counted beside them (``wandb.watch`` drops them).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

MAX_WANDB_BINS = 512
WATCH_BINS = 64  # wandb.watch's default

# Feature-store attributes that identify what a run was computed from (see normscape.features.store).
PROVENANCE_KEYS = (
    "dataset",
    "data_checksum",
    "split_seed",
    "backbone",
    "weights_id",
    "weights_sha256",
    "input_size",
    "precision",
    "feature_dim",
    "format_version",
)


def provenance(features_path: str | Path) -> dict[str, Any]:
    """The data and backbone provenance recorded in a feature store's attributes (the keys it has)."""
    from normscape.features.store import read_attrs

    attrs = read_attrs(features_path)
    out = {}
    for key in PROVENANCE_KEYS:
        if key in attrs:
            value = attrs[key]
            out[key] = value.item() if isinstance(value, np.generic) else value
    return out


def range_histogram(values: np.ndarray, bins: int = WATCH_BINS) -> dict[str, Any] | None:
    """``wandb.watch``'s histogram of one tensor: ``bins`` equal bins over [min, max] of its finite values (one
    bin when all are equal), plus the counts it drops: -inf (underflow), +inf and NaN (overflow). None if empty."""
    v = np.asarray(values, dtype=np.float64).ravel()
    finite = np.isfinite(v)
    underflow = int(np.count_nonzero(v == -np.inf))
    overflow = int(v.size - np.count_nonzero(finite) - underflow)
    f = v[finite]
    if f.size == 0 and v.size == 0:
        return None
    if f.size == 0:
        counts, edges = np.zeros(1, np.int64), np.array([0.0, 0.0])
    elif f.min() == f.max():
        counts, edges = np.array([f.size]), np.array([f.min(), f.max()])
    else:
        counts, edges = np.histogram(f, bins=bins, range=(f.min(), f.max()))
    return {"counts": counts, "edges": edges, "underflow": underflow, "overflow": overflow}


def log_abs_histogram(counts: np.ndarray, edges: np.ndarray, underflow: int, overflow: int):
    """(counts, log10 edges) of an epoch |grad| histogram with one extra bin at each end for the values outside
    [min, max) (as wide as the neighbouring bin), merged to at most ``MAX_WANDB_BINS`` bins (W&B's cap)."""
    log_edges = np.log10(edges)
    if len(counts) > MAX_WANDB_BINS - 2:
        f = -(-len(counts) // (MAX_WANDB_BINS - 2))
        pad = (-len(counts)) % f
        counts = np.pad(counts, (0, pad)).reshape(-1, f).sum(1)
        log_edges = np.append(log_edges[:-1:f], log_edges[-1])
    lo_w, hi_w = log_edges[1] - log_edges[0], log_edges[-1] - log_edges[-2]
    counts = np.concatenate([[underflow], counts, [overflow]])
    log_edges = np.concatenate([[log_edges[0] - lo_w], log_edges, [log_edges[-1] + hi_w]])
    return counts, log_edges


def run_tags(config: dict) -> list[str]:
    """W&B tags of a training run from its resolved config's ``run`` identity (none when it has none)."""
    run = config.get("run") or {}
    tags = [
        f"{name}:{run[key]}"
        for key, name in (("head", "norm"), ("experiment", "experiment"), ("seed", "seed"))
        if key in run
    ]
    if run.get("variant") not in (None, "base"):
        tags.append(f"variant:{run['variant']}")
    return tags
