"""W&B tracking: an offline run is written and readable; failures never stop training."""

from __future__ import annotations

import numpy as np
import pytest

from normscape.tracking import WandbTracker
from normscape.train import train_run
from normscape.wandb_reader import find_run_files, read_config, read_history

RUN = {"experiment": "t", "head": "layer", "variant": "base", "seed": 0}
TRAINING = {"epochs": 2, "batch_size": 128, "lr": 1e-3, "weight_decay": 0.0, "clip_grad_norm": 1.0}
GH = {"min": 1e-9, "max": 10.0, "bins_per_octave": 4}


def tracker_factory(settings, wandb_dir):
    def make(resolved, trainer):
        return WandbTracker(settings, wandb_dir, run_name="t/layer/base/seed0", group="t", config=resolved)

    return make


@pytest.mark.slow
def test_offline_run_is_logged_and_readable(features_file, tmp_path):
    settings = {
        "mode": "offline",
        "project": "normscape-test",
        "entity": None,
        "log_checkpoints": True,
        "timeout_s": 60,
    }
    wandb_dir = tmp_path / "wandb"
    summary = train_run(
        features_file,
        tmp_path / "run",
        RUN,
        TRAINING,
        {"hidden": 16, "dropout": 0.0},
        GH,
        tracker_factory(settings, wandb_dir),
    )
    files = find_run_files(wandb_dir)
    assert len(files) == 1
    history = read_history(files[0])
    epochs = [row for row in history if "epoch/val_acc" in row]
    assert len(epochs) == 2
    assert epochs[-1]["epoch/val_acc"] == pytest.approx(summary["final"]["val_acc"])
    # histograms come from our own counts: values sum to the counted elements of fc2.weight
    values = epochs[0]["grad_log10_abs/fc2.weight/values"]
    bins = epochs[0]["grad_log10_abs/fc2.weight/bins"]
    assert len(bins) == len(values) + 1 and np.all(np.diff(bins) > 0)
    import h5py

    with h5py.File(tmp_path / "run" / "grads.h5") as f:
        assert sum(values) == int(f["layers/fc2.weight/counts"][0].sum())
    config = read_config(files[0])
    training = config["training"].get("value", config["training"])
    assert training["lr"] == 1e-3
    # the checkpoint artifact was staged under our W&B directory, not in the home directory
    assert any((wandb_dir / "data").rglob("*")) or any(wandb_dir.rglob("*.pt"))


def test_online_without_api_key_falls_back_to_offline(tmp_path, monkeypatch, caplog):
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "no-netrc"))
    monkeypatch.setenv("HOME", str(tmp_path))
    settings = {"mode": "online", "project": "p", "entity": None, "log_checkpoints": False, "timeout_s": 30}
    with caplog.at_level("WARNING"):
        tracker = WandbTracker(settings, tmp_path / "wandb", "r", "g", {"a": 1})
    assert "no W&B API key" in caplog.text and tracker.mode == "offline"
    tracker.finish()
    assert find_run_files(tmp_path / "wandb")


def test_a_broken_wandb_never_fails_the_run(features_file, tmp_path, monkeypatch, caplog):
    import wandb

    def broken_init(*a, **k):
        raise RuntimeError("server unreachable")

    monkeypatch.setattr(wandb, "init", broken_init)
    settings = {"mode": "offline", "project": "p", "entity": None, "log_checkpoints": True, "timeout_s": 5}
    with caplog.at_level("WARNING"):
        summary = train_run(
            features_file,
            tmp_path / "run",
            RUN,
            {**TRAINING, "epochs": 1},
            {"hidden": 16, "dropout": 0.0},
            GH,
            tracker_factory(settings, tmp_path / "wandb"),
        )
    assert "W&B init failed" in caplog.text
    assert (tmp_path / "run" / "summary.json").exists() and summary["epochs_completed"] == 1
