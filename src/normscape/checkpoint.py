"""Resume checkpoints: written atomically after every epoch, read back only when they match the run's config.

``save_checkpoint`` writes to a temporary file and renames it over ``last.pt``: if the write fails (disk full,
job killed mid-write) the previous checkpoint stays intact. ``load_checkpoint`` returns None — start from
scratch — when there is no checkpoint, when it was written for a different config slice (its ``config_id``
differs), or when it cannot be read; each case is logged, so a resume is never silent or wrong.
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
