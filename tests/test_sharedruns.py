"""Runs that are the same training are trained once: which runs reuse which, what a reusing run writes, and in
the real workflow that a reused run equals training it for real."""

from __future__ import annotations

import copy
import json

import h5py
import numpy as np
import pytest
import yaml
from conftest import REPO, run_snakemake, write_config

from normscape.config import enumerate_runs, validate_config
from normscape.sharedruns import COPIED_OUTPUTS, reuse_run, shared_trainings
from normscape.tracking import WandbTracker
from normscape.train import train_run
from normscape.wandb_reader import find_run_files, read_config, read_history

TRAINING = {"epochs": 2, "batch_size": 64, "lr": 2e-3, "weight_decay": 0.0, "clip_grad_norm": None}
HEAD = {"hidden": 16, "dropout": 0.0}
GH = {"min": 1e-9, "max": 10.0, "bins_per_octave": 4}


def default_config() -> dict:
    return validate_config(yaml.safe_load((REPO / "config.yaml").read_text()))


def test_the_default_study_trains_each_distinct_training_once():
    cfg = default_config()
    shared = {run: owner.run_id for run, owner in shared_trainings(cfg).items()}
    # lr_sweep at 1e-3 and 1e-2 is convergence's and high_lr's baseline head; lr 0.2 is new
    assert shared == {
        **{f"lr_sweep/none/lr-0.001/seed{s}": f"convergence/none/base/seed{s}" for s in (0, 1, 2)},
        **{f"lr_sweep/none/lr-0.01/seed{s}": f"high_lr/none/base/seed{s}" for s in (0, 1, 2)},
    }
    trained = {run.run_id for run in enumerate_runs(cfg)} - set(shared)
    assert len(trained) == len(enumerate_runs(cfg)) - 6 and set(shared.values()) <= trained


def test_runs_with_outputs_of_their_own_train_and_are_preferred_as_the_source():
    cfg = default_config()
    # lr_sweep first in the study's order: its run would be first, but convergence's runs are probed and read by
    # a landscape, so they train, and the lr_sweep runs reuse them
    cfg["experiments"] = {"lr_sweep": cfg["experiments"]["lr_sweep"], **cfg["experiments"]}
    assert shared_trainings(cfg)["lr_sweep/none/lr-0.001/seed0"].run_id == "convergence/none/base/seed0"
    # a run that a landscape reads keeps its trajectory: it never reuses
    cfg["landscape"]["experiments"] = ["convergence", "lr_sweep"]
    assert not any(run.startswith("lr_sweep/") for run in shared_trainings(cfg))
    # a different setting anywhere in the training slice: no sharing
    cfg = default_config()
    cfg["experiments"]["lr_sweep"]["weight_decay"] = 1e-4
    assert not any(run.startswith("lr_sweep/") for run in shared_trainings(cfg))


def tracker_factory(wandb_dir, run_name):
    def make(resolved, *_):
        return WandbTracker(
            {"mode": "offline", "project": "p"}, wandb_dir, run_name=run_name, group="g", config=resolved
        )

    return make


def test_a_reusing_run_has_the_owners_results_under_its_own_name(features_file, tmp_path):
    owner_run = {"experiment": "convergence", "head": "batch", "variant": "base", "seed": 0}
    owner = train_run(
        features_file, tmp_path / "owner", owner_run, TRAINING, HEAD, GH, tracker_factory(tmp_path / "w1", "owner")
    )
    run = {"experiment": "lr_sweep", "head": "batch", "variant": "lr-0.002", "seed": 0}
    smoothness = (tmp_path / "run" / "smoothness.h5", tmp_path / "run" / "smoothness.json")
    summary = reuse_run(
        tmp_path / "owner",
        tmp_path / "run",
        run,
        TRAINING,
        HEAD,
        GH,
        tracker_factory(tmp_path / "w2", "run"),
        smoothness,
    )
    for name in COPIED_OUTPUTS:
        assert (tmp_path / "run" / name).read_bytes() == (tmp_path / "owner" / name).read_bytes(), name
    assert (summary["experiment"], summary["variant"]) == ("lr_sweep", "lr-0.002")
    assert summary["final"] == owner["final"] and summary["best"] == owner["best"]
    assert summary["provenance"]["identity"] != owner["provenance"]["identity"]  # its own name, its own identity
    assert summary["provenance"]["shared_training"]["identity"] == owner["provenance"]["identity"]
    assert summary["provenance"]["features_identity"] == owner["provenance"]["features_identity"]
    assert json.loads((tmp_path / "run" / "summary.json").read_text()) == json.loads(json.dumps(summary))
    assert json.loads(smoothness[1].read_text())["probes"] == 0
    # its W&B run replays the owner's epochs: the same metrics and gradient histograms
    (trained,), (replayed,) = find_run_files(tmp_path / "w1"), find_run_files(tmp_path / "w2")
    epochs = [[row for row in read_history(f) if "epoch/val_acc" in row] for f in (trained, replayed)]
    assert len(epochs[1]) == TRAINING["epochs"]
    for a, b in zip(*epochs):
        for key in ("epoch/val_acc", "epoch/train_loss", "grad_log10_abs/fc1.weight/values", "grad_underflow/fc2.bias"):
            assert a[key] == pytest.approx(b[key]), key
    config = read_config(replayed)
    assert config["run"].get("value", config["run"])["experiment"] == "lr_sweep"
    with h5py.File(tmp_path / "run" / "grads.h5") as f:
        assert f["layers/fc1.weight/counts"].shape[0] == TRAINING["epochs"]


def test_reusing_another_training_is_refused(features_file, tmp_path):
    owner_run = {"experiment": "convergence", "head": "none", "variant": "base", "seed": 0}
    train_run(features_file, tmp_path / "owner", owner_run, TRAINING, HEAD, GH)
    run = {"experiment": "lr_sweep", "head": "none", "variant": "lr-0.01", "seed": 0}
    with pytest.raises(ValueError, match="differs in: training"):
        reuse_run(tmp_path / "owner", tmp_path / "run", run, {**TRAINING, "lr": 1e-2}, HEAD, GH)
    with pytest.raises(ValueError, match="not the same training"):
        reuse_run(tmp_path / "owner", tmp_path / "run", {**run, "seed": 1}, TRAINING, HEAD, GH)
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
def test_in_the_workflow_a_reused_run_equals_training_it(tiny_config, tmp_path):
    cfg = copy.deepcopy(tiny_config)
    cfg["experiments"] = {
        "convergence": {"heads": ["none"], "lr": 2e-3},
        "lr_sweep": {"heads": ["none"], "sweep": {"lr": [2e-3]}},
    }
    cfg["tracking"] = {"wandb": {"mode": "offline"}}
    results = tmp_path / "results"
    owner, run = results / "runs/convergence/none/base/seed0", results / "runs/lr_sweep/none/lr-0.002/seed0"
    targets = [str(owner / "summary.json"), str(run / "summary.json")]
    path = write_config(cfg, tmp_path / "shared.yaml")
    run_snakemake([*targets, "--cores", "2"], configfile=path)
    log = (results / "logs/train/lr_sweep/none/lr-0.002/seed0.log").read_text()
    assert "same training as" in log and "epoch 1/" not in log, log
    reused = json.loads((run / "summary.json").read_text())
    assert reused["provenance"]["shared_training"]["run"].endswith("convergence/none/base/seed0")
    assert len(find_run_files(results / "wandb")) == 2  # the reusing run has its own W&B run
    assert "Nothing to be done" in run_snakemake(["-n", *targets], configfile=path).stdout
    copied = {name: (run / name).read_bytes() for name in ("metrics.csv", "grads.h5")}

    # convergence at another lr: the lr_sweep run is no longer the same training, so its job trains it for real
    cfg["experiments"]["convergence"]["lr"] = 3e-3
    edited = write_config(cfg, tmp_path / "edited.yaml")
    run_snakemake([*targets, "--cores", "2"], configfile=edited)
    trained = json.loads((run / "summary.json").read_text())
    assert "shared_training" not in trained["provenance"]
    assert "epoch 1/" in (results / "logs/train/lr_sweep/none/lr-0.002/seed0.log").read_text()
    # ... with exactly the results it had reused (training is deterministic): metrics but the epoch times
    assert trained["final"] == reused["final"] and trained["best"] == reused["best"]
    (tmp_path / "copied.h5").write_bytes(copied["grads.h5"])
    with h5py.File(run / "grads.h5") as f, h5py.File(tmp_path / "copied.h5") as g:
        for name in f["layers"]:
            np.testing.assert_array_equal(f[f"layers/{name}/counts"][()], g[f"layers/{name}/counts"][()])
