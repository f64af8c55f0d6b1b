"""A training job's files: the feature cache in, every run's outputs out, checkpoints resumed per run.

:func:`train_group` trains the runs of one condition (its seeds) with one :class:`normscape.training.trainer.Trainer`
and writes each run's metrics.csv, summary.json, grads.h5, models, trajectory and smoothness records into its own
directory; :func:`train_run` is the same for one run. What a run is computed from (:func:`run_provenance`) keys
its resume checkpoint and is recorded in every output.
"""

from __future__ import annotations

import csv
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import torch

from normscape.features import store
from normscape.pipeline.atomic import atomic_path, write_json
from normscape.pipeline.errors import ConfigError
from normscape.pipeline.runtime import flush_denormals
from normscape.training.checkpoint import discard_checkpoint, load_checkpoint
from normscape.training.run_records import METRIC_COLUMNS, RunRecord, config_hash
from normscape.training.trainer import ENGINE_VERSION, Trainer

log = logging.getLogger(__name__)


def load_features(path: str | Path) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    out = {}
    for split in ("train", "val", "test"):
        x, y = store.map_split(path, split)
        out[split] = (torch.from_numpy(x), torch.from_numpy(y).long())
    return out


def write_grads_h5(path: Path, run: RunRecord, names: list[str], every: int = 1) -> None:
    with atomic_path(path, suffix=".h5") as tmp, h5py.File(tmp, "w") as f:
        f.create_dataset("edges", data=run.hist.edges)
        steps = "all steps" if every == 1 else f"every {every} optimiser steps of each epoch, from its first"
        f.attrs["binning"] = f"octaves split into equal-width bins; counts of |grad| after clipping, {steps}"
        f.attrs["every"] = every
        for name in names:
            g = f.create_group(f"layers/{name}")
            for key, arr in run.hist.stacked(name).items():
                g.create_dataset(key, data=arr)
        pre = np.concatenate(run.step_norms) if run.step_norms else np.zeros(0)
        post = np.concatenate(run.step_norms_post) if run.step_norms_post else np.zeros(0)
        epochs = (
            np.concatenate([np.full(len(s), i + 1) for i, s in enumerate(run.step_norms)])
            if run.step_norms
            else np.zeros(0)
        )
        f.create_dataset("steps/grad_norm_pre_clip", data=pre.astype(np.float32))
        f.create_dataset("steps/grad_norm_post_clip", data=post.astype(np.float32))
        f.create_dataset("steps/epoch", data=epochs.astype(np.int32))


def write_metrics_csv(path: Path, metrics: list[dict]) -> None:
    with atomic_path(path, suffix=".csv") as tmp, open(tmp, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=METRIC_COLUMNS)
        writer.writeheader()
        for row in metrics:
            writer.writerow({k: row[k] for k in METRIC_COLUMNS})


def _save_model(path: Path, state: dict, head_config: dict, epoch: int, extra: dict) -> None:
    with atomic_path(path, suffix=".pt") as tmp:
        torch.save({"state_dict": state, "head_config": head_config, "epoch": epoch, **extra}, tmp)


def run_provenance(resolved: dict, features_identity: str) -> dict:
    """What a run is computed from; its ``identity`` keys resume checkpoints and is recorded in every output.
    ``flush_denormal``: whether subnormal floats were flushed to zero (it changes the numbers)."""
    parts = {
        "config": config_hash(resolved),
        "features_identity": features_identity,
        "engine_version": ENGINE_VERSION,
        "flush_denormal": flush_denormals(),
    }
    return {"identity": config_hash(parts), **parts}


def _resume_state(ckpt_path: Path, provenance: dict, landscape_inputs: bool) -> dict | None:
    state = load_checkpoint(ckpt_path, provenance)
    if state is not None and landscape_inputs and len(state["trajectory"]) != state["epoch"] + 1:
        # written while no landscape read this run (no trajectory kept): resuming would leave epochs out of it
        log.warning(
            "discarding checkpoint %s: it has no training trajectory (which a landscape now reads); "
            "training from scratch",
            ckpt_path,
        )
        return None
    return state


def train_group(
    features: str | Path,
    run_dirs: Sequence[str | Path],
    runs: Sequence[dict],
    training: dict | Sequence[dict],
    head: dict,
    grad_hist: dict,
    tracker_factory: Any = None,
    features_expected: dict | None = None,
    landscape_inputs: bool = True,
    probes: dict[str, dict | None] | None = None,
    probe_paths: dict[str, Sequence[tuple]] | None = None,
    model_code: str | None = None,
) -> list[dict]:
    """Train the runs of one job (``runs``: one dict per run, all of one head) together, each into
    its ``run_dirs`` entry, resuming each from its ``checkpoints/last.pt`` when its identity matches, and write per
    run metrics.csv, summary.json, grads.h5, model_{final,best}.pt and, unless ``landscape_inputs`` is False (no
    landscape reads these runs), what a landscape reads: model_init.pt and trajectory.pt (the parameters after
    every epoch). A run's checkpoint is removed once its outputs are all written. Returns the summaries.

    ``training``: the training slice of every run, or one per run; the runs of one job may differ only in their
    learning rate (the values of an lr sweep train together, each at its own lr:
    normscape.models.stacked_heads.StackedAdam).

    Runs whose checkpoints stopped after different epochs (a kill between two runs' checkpoint writes) resume as
    separate groups: a run's numbers do not depend on its group.

    ``features_expected`` (:func:`normscape.features.store.expected_attrs` of the config): the feature cache must
    have been built for it, else one DataError names the mismatch and the rebuild command.

    ``model_code`` (:func:`normscape.models.norms.code_digest` of the runs' norm; computed here when None): the code the
    head is built from is part of each run's identity, like its config.

    ``probes``: the training-time measures (normscape.curvature.jobs.training_probes: smoothness, preconditioned
    sharpness) by name, each with its ``diagnostics.<name>`` slice, or None where these runs are not probed;
    a probe's settings are part of each run's identity. ``probe_paths``: by name, one (h5, json) per run, where
    that probe's records are written (zero records for runs without it). ``tracker_factory(resolved, run)``: the
    W&B run of one run (a :class:`RunRecord`), or None.
    """
    from normscape.curvature.jobs import training_probes

    if not runs or len(run_dirs) != len(runs) or len({r["head"] for r in runs}) != 1:
        raise ValueError("train_group needs one run directory per run, all runs of one head")
    from normscape.models.norms import code_digest

    trainings = [dict(t) for t in training] if isinstance(training, (list, tuple)) else [dict(training)] * len(runs)
    shared = {k: v for k, v in trainings[0].items() if k != "lr"}
    if len(trainings) != len(runs) or any({k: v for k, v in t.items() if k != "lr"} != shared for t in trainings):
        raise ValueError("train_group needs one training slice per run, differing at most in lr")
    flush_denormals()
    model_code = model_code or code_digest(runs[0]["head"])
    if features_expected is not None:
        features_identity = store.require_compatible(features, features_expected)
    else:
        features_identity = store.identity(features)
    data = load_features(features)
    active_probes = {name: settings for name, settings in (probes or {}).items() if settings}
    jobs = []
    for run, run_dir, run_training in zip(runs, run_dirs, trainings):
        resolved = {
            "run": run,
            "training": run_training,
            "head": head,
            "grad_hist": grad_hist,
            "model_code": model_code,
        }
        probe = training_probes(active_probes, data["train"], run_training) if active_probes else None
        resolved.update(active_probes)
        provenance = run_provenance(resolved, features_identity)
        ckpt = Path(run_dir) / "checkpoints" / "last.pt"
        state = _resume_state(ckpt, provenance, landscape_inputs)
        jobs.append(
            {
                "run": run,
                "dir": Path(run_dir),
                "resolved": resolved,
                "probe": probe,
                "ckpt": ckpt,
                "provenance": provenance,
                "state": state,
            }
        )
    if shared.get("device", "cpu") == "cuda" and not torch.cuda.is_available():
        raise ConfigError(
            "training.device is cuda, but torch sees no CUDA GPU on this machine: set training.device: cpu, or run "
            "the train jobs where a GPU is (a CUDA build of torch and a visible device)"
        )
    cohorts: dict[int, list[int]] = {}
    for i, job in enumerate(jobs):
        cohorts.setdefault(job["state"]["epoch"] if job["state"] else 0, []).append(i)
    summaries: dict[int, dict] = {}
    for epoch, members in sorted(cohorts.items()):
        group = [jobs[i] for i in members]
        trainer = Trainer(
            data,
            norm=runs[0]["head"],
            seeds=[int(job["run"]["seed"]) for job in group],
            lr=[job["resolved"]["training"]["lr"] for job in group],
            hidden=head["hidden"],
            dropout=head["dropout"],
            grad_hist=grad_hist,
            probe=[job["probe"] for job in group],
            keep_trajectory=landscape_inputs,
            **shared,
        )
        if epoch:
            trainer.load_run_states([job["state"] for job in group])
            log.info("resuming seeds %s after epoch %d", [job["run"]["seed"] for job in group], epoch)
        try:
            for job, record in zip(group, trainer.runs):
                record.tracker = tracker_factory(job["resolved"], record) if tracker_factory else None
            trainer.fit([job["ckpt"] for job in group], [job["provenance"] for job in group])
            for i, job, record in zip(members, group, trainer.runs):
                paths = {name: per_run[i] for name, per_run in (probe_paths or {}).items()}
                summaries[i] = _write_run(trainer, record, job, landscape_inputs, paths)
        finally:
            for record in trainer.runs:
                if record.tracker is not None:
                    record.tracker.finish()
    return [summaries[i] for i in range(len(jobs))]


def _write_run(trainer: Trainer, record: RunRecord, job: dict, landscape_inputs: bool, probe_paths: dict):
    """Every output of one run of a trained group; its checkpoint is removed last."""
    from normscape.curvature.jobs import write_probe_records

    run_dir, provenance = job["dir"], job["provenance"]
    summary = {
        **job["run"],
        "training": job["resolved"]["training"],
        **trainer.summary(record),
        "config": job["resolved"],
        "versions": {"torch": torch.__version__, "numpy": np.__version__},
        "provenance": provenance,
    }
    meta = {"provenance": provenance, "diverged": summary["diverged"], "diverged_reason": record.diverged_reason}
    write_metrics_csv(run_dir / "metrics.csv", record.metrics)
    write_grads_h5(run_dir / "grads.h5", record, trainer.names, trainer.hist_every)
    hc = trainer.head_config
    final_meta, best_meta = {**meta, "metrics": summary["final"]}, {**meta, "metrics": summary["best"]}
    _save_model(run_dir / "model_final.pt", trainer.run_state(record), hc, len(record.metrics), final_meta)
    _save_model(run_dir / "model_best.pt", record.best["state"], hc, record.best["epoch"], best_meta)
    if landscape_inputs:
        _save_model(run_dir / "model_init.pt", record.init_state, hc, 0, {**meta, "metrics": {}})
        with atomic_path(run_dir / "trajectory.pt", suffix=".pt") as tmp:
            flat = torch.stack(record.trajectory)
            torch.save(
                {
                    "names": trainer.names,
                    "shapes": [list(s) for s in trainer.stack.shapes],
                    "epochs": list(range(len(flat))),
                    "flat": flat,
                    "provenance": provenance,
                },
                tmp,
            )
    for name, paths in probe_paths.items():
        probe = job["probe"].probes.get(name) if job["probe"] is not None else None
        attrs = {"head": job["run"]["head"], "run_identity": provenance["identity"], "probed": probe is not None}
        write_probe_records(name, paths, probe, attrs)
    if record.tracker is not None:
        record.tracker.log_summary(summary, [run_dir / "model_final.pt", run_dir / "model_best.pt"])
    write_json(run_dir / "summary.json", summary)
    discard_checkpoint(job["ckpt"])  # every output is written: the run needs no resume state any more
    return summary


def train_run(
    features: str | Path,
    run_dir: str | Path,
    run: dict,
    training: dict,
    head: dict,
    grad_hist: dict,
    tracker_factory: Any = None,
    features_expected: dict | None = None,
    landscape_inputs: bool = True,
    probes: dict[str, dict | None] | None = None,
    probe_paths: dict[str, tuple] | None = None,
    model_code: str | None = None,
) -> dict:
    """One run: :func:`train_group` of a group of one (the same numbers as that run in any group)."""
    return train_group(
        features,
        [run_dir],
        [run],
        training,
        head,
        grad_hist,
        tracker_factory,
        features_expected,
        landscape_inputs,
        probes,
        {name: [paths] for name, paths in (probe_paths or {}).items()},
        model_code,
    )[0]
