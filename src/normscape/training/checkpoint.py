"""Resume checkpoints: written atomically after every epoch, read back only when they match the run's identity.

``save_checkpoint`` writes to a temporary file and renames it over ``last.pt``: if the write fails (disk full,
job killed mid-write) the previous checkpoint stays intact. ``load_checkpoint`` returns None — start from
scratch — when there is no checkpoint, when it cannot be read, or when its recorded ``provenance`` differs from
the run's (:func:`normscape.training.job.run_provenance`: the config slice, the feature cache's identity, the engine
version, whether subnormal floats are flushed to zero). Each discarded checkpoint gets ONE log line saying why
(which part differs), so a resume is never silent or wrong.
``discard_checkpoint`` removes it once the run has written all its outputs: a finished run needs no resume
state (the checkpoint is not a Snakemake output, so removing it reruns nothing), and it is the largest file of a
run (model, optimiser moments, best and initial weights and the whole trajectory).
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from normscape.pipeline.atomic import atomic_path

log = logging.getLogger(__name__)

# What each part of a run's provenance means, for the log line of a discarded checkpoint.
PART_NAMES = {
    "config": "another config slice (training/head/grad_hist settings)",
    "features_identity": "other features (the feature cache was rebuilt from other data, weights or settings)",
    "engine_version": "another training engine version",
    "flush_denormal": "another subnormal-float setting (flushed to zero or not)",
}


def save_checkpoint(path: str | Path, state: dict) -> None:
    with atomic_path(path, suffix=".pt") as tmp:
        torch.save(state, tmp)


def mismatch_reason(recorded: dict | None, provenance: dict) -> str | None:
    """Why a checkpoint recorded with ``recorded`` provenance must not be resumed by ``provenance`` (or None)."""
    if not isinstance(recorded, dict) or "identity" not in recorded:
        return "it records no provenance (written by an older version)"
    if recorded["identity"] == provenance["identity"]:
        return None
    parts = [PART_NAMES.get(k, k) for k in provenance if k != "identity" and recorded.get(k) != provenance[k]]
    return "it was computed from " + (" and ".join(parts) if parts else "other inputs")


def load_checkpoint(path: str | Path, provenance: dict) -> dict | None:
    path = Path(path)
    if not path.exists():
        return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:  # a corrupt checkpoint must not block the run: start over
        log.warning("ignoring unreadable checkpoint %s (%s: %s); training from scratch", path, type(exc).__name__, exc)
        return None
    reason = mismatch_reason(state.get("provenance") if isinstance(state, dict) else None, provenance)
    if reason is not None:
        log.warning("discarding checkpoint %s: %s; training from scratch", path, reason)
        return None
    return state


def discard_checkpoint(path: str | Path) -> None:
    """Remove a finished run's resume checkpoint, the temp files of checkpoint writes a kill interrupted
    (``.last.pt.*.tmp``: atomic_path could not remove them), and the folder when that is left empty."""
    path = Path(path)
    path.unlink(missing_ok=True)
    for leftover in path.parent.glob(f".{path.name}.*.tmp"):
        leftover.unlink(missing_ok=True)
    try:
        path.parent.rmdir()
    except OSError:  # not empty (a user's file) or already gone
        pass
