"""Runs that are the same training: trained once, the others take its results.

Two runs of the study can be one computation under two names: the default ``lr_sweep`` at lr 1e-3 and 1e-2
trains exactly the ``none`` head runs of ``convergence`` and ``high_lr`` (same norm, seed and training settings;
six of its nine runs). Training depends on the norm, the seed, the ``training`` settings and the global
``head`` / ``grad_hist`` settings, not on the experiment's name, and neither the smoothness probe nor keeping
a trajectory changes it (tests/test_smoothness.py, tests/test_train.py); so the DAG trains each distinct
training once (:func:`shared_trainings`), and every other run with the same training is written from it by
:func:`reuse_run`: the same metrics, gradient histograms and models, under its own name, identity and W&B run.

Only runs whose outputs are the plain training outputs reuse: a run that a landscape reads (it keeps its
trajectory) or that carries the smoothness probe trains itself, and is the preferred run to reuse from.
Changing a setting so that two runs no longer agree makes the reusing run's job train it for real (its
``shared_from`` parameter changes, and with it the job).
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path
from typing import Any

from normscape.config import RunSpec, enumerate_runs
from normscape.measures import measured_experiments

log = logging.getLogger(__name__)

#: The training outputs a reusing run copies as they are (its summary and smoothness files are its own).
COPIED_OUTPUTS = ("metrics.csv", "grads.h5", "model_final.pt", "model_best.pt")


def training_signature(run: RunSpec) -> str:
    """What a run's training depends on besides the settings every run shares (``head``, ``grad_hist``)."""
    return json.dumps({"head": run.head, "seed": run.seed, "training": run.training}, sort_keys=True, default=str)


def experiments_with_own_outputs(config: dict) -> set[str]:
    """The experiments whose runs have outputs beyond the plain training's: a landscape reads their trajectory,
    or they are probed."""
    return set(config["landscape"]["experiments"]) | set(measured_experiments("smoothness.json", config))


def shared_trainings(config: dict) -> dict[str, RunSpec]:
    """run id -> the run whose training it reuses, for every run that does not train itself.

    Per training signature the first run that needs its own training (else the first run in the study's
    order) trains; the other runs of that signature that need no training of their own reuse it."""
    runs, own = enumerate_runs(config), experiments_with_own_outputs(config)
    signatures = {run.run_id: training_signature(run) for run in runs}
    owners: dict[str, RunSpec] = {}
    for run in sorted(runs, key=lambda r: r.experiment not in own):  # stable: study order within
        owners.setdefault(signatures[run.run_id], run)
    return {
        run.run_id: owners[signatures[run.run_id]]
        for run in runs
        if owners[signatures[run.run_id]] is not run and run.experiment not in own
    }


def reuse_run(
    owner_dir: str | Path,
    run_dir: str | Path,
    run: dict,
    training: dict,
    head: dict,
    grad_hist: dict,
    tracker_factory: Any = None,
    smoothness_paths: tuple | None = None,
) -> dict:
    """Write the outputs of ``run`` from those of ``owner`` (the run with the same training) into ``run_dir``.

    The owner's summary must record exactly the training settings of this run (``training``, ``head``,
    ``grad_hist``), else a ValueError: the DAG never asks for that, and copying it would pass off another
    training's results. Returns the summary: the owner's results, this run's name and identity, and
    ``provenance.shared_training`` naming the run (and identity) it was trained as."""
    from normscape.atomic import atomic_path, write_json
    from normscape.train import run_provenance

    owner_dir, run_dir = Path(owner_dir), Path(run_dir)
    owner_summary = json.loads((owner_dir / "summary.json").read_text())
    trained = owner_summary["config"]
    from normscape.norms import code_digest

    mine = {"training": training, "head": head, "grad_hist": grad_hist, "model_code": code_digest(run["head"])}
    differs = [key for key, value in mine.items() if trained.get(key) != value]
    if differs or (owner_summary["head"], int(owner_summary["seed"])) != (run["head"], int(run["seed"])):
        raise ValueError(
            f"run {owner_dir} is not the same training as {run_dir} (differs in: {', '.join(differs) or 'head/seed'})"
        )
    log.info("same training as %s (same norm, seed and settings): its results, not a second training", owner_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    for name in COPIED_OUTPUTS:
        with atomic_path(run_dir / name, suffix=Path(name).suffix) as tmp:
            shutil.copyfile(owner_dir / name, tmp)  # a copy: its own file time, and it survives a retrained owner
    resolved = {"run": run, **mine}
    owner_provenance = owner_summary["provenance"]
    provenance = run_provenance(resolved, owner_provenance["features_identity"])
    provenance["shared_training"] = {"run": owner_dir.as_posix(), "identity": owner_provenance["identity"]}
    summary = {**owner_summary, **run, "config": resolved, "provenance": provenance}
    if smoothness_paths is not None:
        from normscape.smoothness import SmoothnessProbe, write_smoothness

        attrs = {"head": run["head"], "run_identity": provenance["identity"], "probed": False}
        write_smoothness(*smoothness_paths, SmoothnessProbe(), attrs)
    tracker = tracker_factory(resolved) if tracker_factory else None
    try:
        if tracker is not None:
            replay_epochs(tracker, run_dir)
            tracker.log_summary(summary, [run_dir / "model_final.pt", run_dir / "model_best.pt"])
        write_json(run_dir / "summary.json", summary)
    finally:
        if tracker is not None:
            tracker.finish()
    return summary


def replay_epochs(tracker, run_dir: Path) -> None:
    """Log every epoch's metrics and gradient histograms (from metrics.csv and grads.h5) as training does."""
    import h5py
    import pandas as pd

    from normscape.results import load_grad_hist

    rows = pd.read_csv(run_dir / "metrics.csv").to_dict("records")
    with h5py.File(run_dir / "grads.h5", "r") as f:
        names = list(f["layers"])
    layers = {name: load_grad_hist(run_dir / "grads.h5", name) for name in names}
    for index, row in enumerate(rows):
        hist_epoch = {
            name: {key: hist[key][index] for key in ("counts", "underflow", "overflow")}
            for name, hist in layers.items()
        }
        tracker.log_epoch(row, hist_epoch, layers[names[0]]["edges"])
