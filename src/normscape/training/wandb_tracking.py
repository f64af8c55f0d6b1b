"""Weights & Biases tracking that can never fail or hang a training run.

``mode: offline`` (default) needs no account: the run is written under ``<results>/wandb/`` and can be
uploaded later with ``wandb sync``. ``online`` without an API key, or with an unreachable server, falls back to
offline with a warning; any other W&B error disables tracking with a warning. Every call into W&B that can
block on the network runs with a timeout. The local outputs (metrics.csv, summary.json, grads.h5, checkpoints)
never depend on W&B.

Logged:

- the run's config: its resolved config slice plus the provenance of its inputs (dataset, archive checksum,
  split seed, backbone, weights id and sha256, input size, precision: the feature store's attributes), so a
  synced run says what it was computed from;
- per epoch (x axis ``epoch``): the metrics, and one histogram of log10 |grad| per parameter built from our own
  counts over every counted step (``grad_hist.every``; ``grad_log10_abs/<name>``); its first bin holds every value
  below ``grad_hist.min`` (zeros included) and its last bin every value at or above ``grad_hist.max`` (inf/NaN
  included), so nothing is dropped (``grad_underflow/<name>``, ``grad_overflow/<name>`` give the two counts);
- every ``watch_log_freq`` optimiser steps (x axis ``train/step``), in ``wandb.watch``'s form: per parameter a
  64-bin histogram of the gradient the optimiser applies (``gradients/<name>``) and of the parameter
  (``parameters/<name>``) over that tensor's range; non-finite values, which ``wandb.watch`` drops, are counted
  in ``gradients_nonfinite/<name>`` / ``parameters_nonfinite/<name>``;
- the run summary, and the final and best checkpoints as a ``model`` Artifact whose files are recorded by
  absolute path (``wandb sync`` of an offline run reads them from wherever it is started);
- the console output (``output.log``) and W&B's system metrics (CPU, memory, GPU), which W&B users look for;
- tags per run: ``norm:<head>``, ``experiment:<name>``, ``seed:<n>`` (and ``variant:<v>`` for a swept value),
  to filter runs in the W&B UI;
- once per study, the summary table (``tables/summary.csv``) as a ``wandb.Table`` in its own run (job type
  ``summary``, name ``summary``): :func:`log_summary_table`.

``online`` with an unreachable server: the first job that fails to start online writes
``<wandb_dir>/online-unreachable.json``; for ``UNREACHABLE_TTL_S`` every later job of the workflow logs offline at
once instead of waiting for the timeout again (jobs that start meanwhile wait for that first attempt).

What is logged is built in :mod:`normscape.training.wandb_payload`; this module holds the connection.
"""

from __future__ import annotations

import fcntl
import json
import logging
import netrc
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import numpy as np

from normscape.pipeline.atomic import strict_json
from normscape.training.wandb_payload import (
    log_abs_histogram,
    range_histogram,
    run_tags,
)

log = logging.getLogger(__name__)

# How long a failed online start keeps later jobs offline without retrying (delete the marker file to retry now).
UNREACHABLE_TTL_S = 3600
UNREACHABLE_MARKER = "online-unreachable.json"
REACHABLE_MARKER = "online-reachable.json"


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
    """One W&B run per training run; every method is a no-op after a failure. A group's runs are open at the same
    time in one process (``reinit="create_new"``); W&B's service is shut down when the last of them finishes."""

    open_runs = 0  # runs of this process not yet finished

    def __init__(
        self, settings: dict, wandb_dir: str | Path, run_name: str, group: str, config: dict, job_type: str = "train"
    ):
        self.settings = settings
        self.job_type = job_type
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
        self._skipped_online = False
        if self.mode == "online":
            self.run = self._init_online_once(Path(wandb_dir), run_name, group, config)
        else:
            self.run = self._init(wandb_dir, run_name, group, config, self.mode)
        if self.run is None and self.mode == "online":
            if not self._skipped_online:
                log.warning("W&B online init failed: falling back to offline mode (sync later with `wandb sync`)")
            self.mode = "offline"
            self.run = self._init(wandb_dir, run_name, group, config, "offline")
        if self.run is not None:
            WandbTracker.open_runs += 1
            self._safe(self._define_metrics, "define_metric")

    def _init_online_once(self, wandb_dir: Path, run_name, group, config):
        """Online init, unless an earlier job of this workflow found the server unreachable (then None at once).

        A lock file serialises the attempts while no job has succeeded yet, so concurrent jobs pay the timeout at
        most once between them; a success or a failure is recorded for the jobs that follow.
        """
        marker = wandb_dir / UNREACHABLE_MARKER
        reached = wandb_dir / REACHABLE_MARKER
        server = os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai")
        try:  # a job of this workflow already started online: no need to wait for the lock
            ok = json.loads(reached.read_text())
            if ok.get("server") == server and time.time() - ok.get("time", 0) < UNREACHABLE_TTL_S:
                return self._init(wandb_dir, run_name, group, config, "online")
        except (OSError, ValueError):
            pass
        with open(wandb_dir / "online-init.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                try:
                    failed = json.loads(marker.read_text())
                except (OSError, ValueError):
                    failed = None
                if (
                    failed
                    and failed.get("server") == server
                    and time.time() - failed.get("time", 0) < UNREACHABLE_TTL_S
                ):
                    log.warning(
                        "W&B online: an earlier job could not start a run on %s (%s; recorded in %s): logging "
                        "offline without waiting for the timeout again (delete that file to retry online)",
                        server,
                        failed.get("reason", "?"),
                        marker,
                    )
                    self._skipped_online = True
                    return None
                run = self._init(wandb_dir, run_name, group, config, "online")
                if run is None:
                    reason = (
                        f"no run within {self.timeout_s + 10:.0f} s, or an error: see the first W&B warning in its log"
                    )
                    marker.write_text(json.dumps({"server": server, "time": time.time(), "reason": reason}))
                else:
                    marker.unlink(missing_ok=True)
                    reached.write_text(json.dumps({"server": server, "time": time.time()}))
                return run
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def _define_metrics(self) -> None:
        run = self.run
        run.define_metric("epoch")
        run.define_metric("train/step")
        for prefix in ("epoch/*", "grad_log10_abs/*", "grad_underflow/*", "grad_overflow/*"):
            run.define_metric(prefix, step_metric="epoch")
        for prefix in ("gradients/*", "parameters/*", "gradients_nonfinite/*", "parameters_nonfinite/*"):
            run.define_metric(prefix, step_metric="train/step")

    def watch(self, log_freq: int, first_step: int = 0) -> None:
        """Log gradient and parameter histograms (``wandb.watch``'s form) every ``log_freq`` optimiser steps.

        The trainer calls :meth:`before_step` before each optimiser step with the run's gradient as the optimiser
        receives it (after clipping) and its parameters before the update (a group's optimiser steps every run
        at once, so no per-run optimiser hook exists). ``first_step``: steps already taken (a resumed run).
        """
        self._watch_freq = log_freq if self.run is not None else 0
        self._step = first_step

    def before_step(self, names: list[str], grads: Callable[[], list], params: Callable[[], list]) -> None:
        """Called before every optimiser step; ``grads`` / ``params`` build the run's tensors, called only on the
        steps that log them (every ``watch_log_freq``): the trainer copies nothing out of its stack otherwise."""
        self._step = getattr(self, "_step", 0) + 1
        freq = getattr(self, "_watch_freq", 0)
        if freq and self.run is not None and self._step % freq == 0:
            self.log_tensors(self._step, names, grads(), params())

    def log_tensors(self, step: int, names: list[str], grads: list, params: list) -> None:
        import wandb

        payload: dict[str, Any] = {"train/step": step}
        for name, grad, value in zip(names, grads, params):
            for kind, tensor in (("gradients", grad), ("parameters", value)):
                if tensor is None:
                    continue
                h = range_histogram(tensor.detach().cpu().numpy())
                if h is None:
                    continue
                payload[f"{kind}/{name}"] = wandb.Histogram(np_histogram=(h["counts"].tolist(), h["edges"].tolist()))
                payload[f"{kind}_nonfinite/{name}"] = h["underflow"] + h["overflow"]
        self._safe(lambda: self.run.log(payload), "log")

    def _init(self, wandb_dir, run_name, group, config, mode):
        import wandb

        def init():
            return wandb.init(
                project=self.settings["project"],
                entity=self.settings.get("entity"),
                name=run_name,
                group=group,
                job_type=self.job_type,
                config=config,
                tags=run_tags(config),
                dir=str(wandb_dir),
                mode=mode,
                reinit="create_new",  # a group trains several runs in one process
                # console capture (output.log) and system metrics on: W&B users look for both, and timing a tiny
                # offline training run with and without them (interleaved) showed no cost above the noise
                settings=wandb.Settings(init_timeout=self.timeout_s, silent=True, console="wrap"),
            )

        ok, run = call_with_timeout(init, self.timeout_s + 10, "init")
        return run if ok else None

    def log_epoch(self, row: dict, hist_epoch: dict, edges: np.ndarray) -> None:
        if self.run is None:
            return
        import wandb

        payload = {f"epoch/{k}": v for k, v in row.items() if k != "epoch"}
        payload["epoch"] = int(row["epoch"])
        for name, h in hist_epoch.items():
            counts, e = log_abs_histogram(h["counts"], edges, h["underflow"], h["overflow"])
            payload[f"grad_log10_abs/{name}"] = wandb.Histogram(np_histogram=(counts.tolist(), e.tolist()))
            payload[f"grad_underflow/{name}"] = int(h["underflow"])
            payload[f"grad_overflow/{name}"] = int(h["overflow"])
        self._safe(lambda: self.run.log(payload), "log")

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
                    # strict JSON, the non-finite metrics of a diverged run as text ("nan", "inf")
                    metadata=strict_json({"final": summary.get("final"), "best": summary.get("best")}, non_finite=str),
                )
                # immutable: the manifest points at the run's own files instead of a staging copy (offline
                # runs keep their staged files until `wandb sync`), skip_cache: no cache copy after upload.
                # So W&B stores no second copy on disk; sync an offline run before its files are rewritten.
                # absolute: the manifest's local paths are read by `wandb sync`, started from any directory
                for path in checkpoint_files:
                    art.add_file(str(Path(path).resolve()), policy="immutable", skip_cache=True)
                self.run.log_artifact(art, aliases=["latest"])

            self._safe(log_artifact, "artifact")

    def finish(self) -> None:
        if self.run is None:
            return
        run, self.run = self.run, None
        WandbTracker.open_runs -= 1
        last = WandbTracker.open_runs == 0
        import wandb

        def finish():
            run.finish()
            # run.finish() returns before W&B's service has written the last records of an offline run (its exit
            # record included); shutting the service down waits for that, so the file is complete for `wandb sync`
            # (only once no other run of this process still logs through it).
            if last:
                wandb.teardown()

        call_with_timeout(finish, self.timeout_s, "finish")

    def _safe(self, fn: Callable[[], Any], what: str) -> None:
        ok, _ = call_with_timeout(fn, self.timeout_s, what)
        if not ok:
            self.finish()


def log_summary_table(settings: dict, wandb_dir: str | Path, summary_csv: str | Path, group: str = "study") -> bool:
    """The study's summary table as a ``wandb.Table`` in one run of its own (name ``summary``, job type
    ``summary``), beside the training runs of the same project. Never fails the caller: False when not logged."""
    if settings.get("mode", "disabled") == "disabled":
        return False
    import pandas as pd

    tracker = WandbTracker({**settings, "log_checkpoints": False}, wandb_dir, "summary", group, {}, job_type="summary")
    if tracker.run is None:
        return False

    def log_table():
        import wandb

        frame = pd.read_csv(summary_csv)
        tracker.run.log({"summary_table": wandb.Table(dataframe=frame)})

    ok, _ = call_with_timeout(log_table, tracker.timeout_s, "summary table")
    tracker.finish()
    return ok
