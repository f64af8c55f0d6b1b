"""Resume checkpoints: written atomically after every epoch, read back only when they match the run's config.

``save_checkpoint`` writes to a temporary file and renames it over ``last.pt``: if the write fails (disk full,
job killed mid-write) the previous checkpoint stays intact. ``load_checkpoint`` returns None — start from
scratch — when there is no checkpoint, when it was written for a different config slice (its ``config_id``
differs), or when it cannot be read; each case is logged, so a resume is never silent or wrong.
``discard_checkpoint`` removes it once the run has written all its outputs: a finished run needs no resume
state (the checkpoint is not a Snakemake output, so removing it reruns nothing), and it is the largest file of a
run (model, optimiser moments, best and initial weights and the whole trajectory).
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from normscape.atomic import atomic_path

log = logging.getLogger(__name__)


def save_checkpoint(path: str | Path, state: dict) -> None:
    with atomic_path(path, suffix=".pt") as tmp:
        torch.save(state, tmp)


def load_checkpoint(path: str | Path, config_id: str) -> dict | None:
    path = Path(path)
    if not path.exists():
        return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:  # a corrupt checkpoint must not block the run: start over
        log.warning("ignoring unreadable checkpoint %s (%s: %s); training from scratch", path, type(exc).__name__, exc)
        return None
    if not isinstance(state, dict) or state.get("config_id") != config_id:
        log.warning("ignoring checkpoint %s: it was written for a different config; training from scratch", path)
        return None
    return state


def discard_checkpoint(path: str | Path) -> None:
    """Remove a finished run's resume checkpoint (and its folder when that is left empty)."""
    path = Path(path)
    path.unlink(missing_ok=True)
    try:
        path.parent.rmdir()
    except OSError:  # not empty (a user's file) or already gone
        pass
