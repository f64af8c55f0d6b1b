"""Weights & Biases tracking that can never fail or hang a training run.

``mode: offline`` (default) needs no account: the run is written under ``<results>/wandb/`` and can be
uploaded later with ``wandb sync``. ``online`` without an API key, or with an unreachable server, falls back to
offline with a warning; any other W&B error disables tracking with a warning. Every call into W&B that can
block on the network runs with a timeout. The local outputs (metrics.csv, summary.json, grads.h5, checkpoints)
never depend on W&B.

Logged: the resolved config slice, per-epoch metrics, one histogram per parameter per epoch built from our own
counts (``wandb.Histogram(np_histogram=...)`` over log10 |grad|), the run summary, and the final and best
checkpoints as a ``model`` Artifact.
"""

from __future__ import annotations

import logging
import netrc
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import numpy as np

log = logging.getLogger(__name__)

MAX_WANDB_BINS = 512


def wandb_env(wandb_dir: str | Path) -> dict[str, str]:
    """Directories W&B writes to, all under ``wandb_dir`` (so artifacts stage under results/, not ~)."""
    root = Path(wandb_dir).resolve()
    return {
        "WANDB_DIR": str(root),
        "WANDB_DATA_DIR": str(root / "data"),
        "WANDB_CACHE_DIR": str(root / "cache"),
        "WANDB_CONFIG_DIR": str(root / "config"),
        "WANDB_ARTIFACT_DIR": str(root / "artifacts"),
    }


def has_api_key() -> bool:
    if os.environ.get("WANDB_API_KEY"):
        return True
    host = urlparse(os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai")).hostname or "api.wandb.ai"
    try:
        return netrc.netrc().authenticators(host) is not None
    except (OSError, netrc.NetrcParseError):
        return False


def call_with_timeout(fn: Callable[[], Any], timeout_s: float, what: str) -> tuple[bool, Any]:
    """Run ``fn`` in a daemon thread; (True, result) or (False, None) after a warning on error/timeout."""
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["result"] = fn()
        except BaseException as exc:  # noqa: BLE001 - W&B may raise anything, incl. SystemExit
            box["error"] = exc

    thread = threading.Thread(target=target, daemon=True, name=f"wandb-{what}")
    thread.start()
    thread.join(timeout_s)
    if thread.is_alive():
        log.warning("W&B %s did not finish within %.0f s; continuing without it", what, timeout_s)
        return False, None
    if "error" in box:
        log.warning("W&B %s failed (%s: %s); continuing without it", what, type(box["error"]).__name__, box["error"])
        return False, None
    return True, box.get("result")


class WandbTracker:
    """One W&B run per training run; every method is a no-op after a failure."""

    def __init__(self, settings: dict, wandb_dir: str | Path, run_name: str, group: str, config: dict):
        self.settings = settings
        self.timeout_s = float(settings.get("timeout_s", 60))
        self.run = None
        self.mode = settings["mode"]
        if self.mode == "disabled":
            return
        os.environ.update(wandb_env(wandb_dir))
        for d in wandb_env(wandb_dir).values():
            Path(d).mkdir(parents=True, exist_ok=True)
        os.environ.setdefault("WANDB_SILENT", "true")
        if self.mode == "online" and not has_api_key():
            log.warning(
                "tracking.wandb.mode is 'online' but no W&B API key was found (set WANDB_API_KEY or run "
                "`wandb login`): logging offline to %s instead; upload later with `wandb sync`.",
                wandb_dir,
            )
            self.mode = "offline"
        self.run = self._init(wandb_dir, run_name, group, config, self.mode)
        if self.run is None and self.mode == "online":
            log.warning("W&B online init failed: falling back to offline mode (sync later with `wandb sync`)")
            self.mode = "offline"
            self.run = self._init(wandb_dir, run_name, group, config, "offline")

    def _init(self, wandb_dir, run_name, group, config, mode):
        import wandb

        def init():
            return wandb.init(
                project=self.settings["project"],
                entity=self.settings.get("entity"),
                name=run_name,
                group=group,
                job_type="train",
                config=config,
                dir=str(wandb_dir),
                mode=mode,
                reinit="finish_previous",
                settings=wandb.Settings(init_timeout=self.timeout_s, silent=True, console="off", x_disable_stats=True),
            )

        ok, run = call_with_timeout(init, self.timeout_s + 10, "init")
        return run if ok else None

    def log_epoch(self, row: dict, hist_epoch: dict, edges: np.ndarray) -> None:
        if self.run is None:
            return
        import wandb

        payload = {f"epoch/{k}": v for k, v in row.items() if k != "epoch"}
        log_edges = np.log10(edges)
        for name, h in hist_epoch.items():
            counts, e = h["counts"], log_edges
            if len(counts) > MAX_WANDB_BINS:  # W&B caps histograms at 512 bins: merge neighbours
                f = -(-len(counts) // MAX_WANDB_BINS)
                pad = (-len(counts)) % f
                counts = np.pad(counts, (0, pad)).reshape(-1, f).sum(1)
                e = np.append(log_edges[:-1:f], log_edges[-1])
            payload[f"grad_log10_abs/{name}"] = wandb.Histogram(np_histogram=(counts.tolist(), e.tolist()))
        self._safe(lambda: self.run.log(payload, step=int(row["epoch"])), "log")

    def log_summary(self, summary: dict, checkpoint_files: list[Path]) -> None:
        if self.run is None:
            return
        flat = {
            f"{k}/{kk}": vv
            for k, v in summary.items()
            if isinstance(v, dict) and k != "config"
            for kk, vv in v.items()
            if not isinstance(vv, dict)
        }
        flat.update({k: v for k, v in summary.items() if isinstance(v, (int, float, str, bool))})
        self._safe(lambda: self.run.summary.update(flat), "summary")
        if self.settings.get("log_checkpoints", True):
            import wandb

            def log_artifact():
                art = wandb.Artifact(
                    name=f"model-{self.run.name}".replace("/", "-"),
                    type="model",
                    metadata={"final": summary.get("final"), "best": summary.get("best")},
                )
                for path in checkpoint_files:
                    art.add_file(str(path))
                self.run.log_artifact(art, aliases=["latest"])

            self._safe(log_artifact, "artifact")

    def finish(self) -> None:
        if self.run is None:
            return
        run, self.run = self.run, None
        call_with_timeout(run.finish, self.timeout_s, "finish")

    def _safe(self, fn: Callable[[], Any], what: str) -> None:
        ok, _ = call_with_timeout(fn, self.timeout_s, what)
        if not ok:
            self.finish()
