"""W&B tracking: an offline run is written and readable; failures never stop training."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from normscape.training.job import train_run
from normscape.training.wandb_payload import log_abs_histogram, provenance, range_histogram
from normscape.training.wandb_reader import find_run_files, read_artifact_paths, read_config, read_history, read_run
from normscape.training.wandb_tracking import WandbTracker

RUN = {"experiment": "t", "head": "layer", "variant": "base", "seed": 0}
TRAINING = {"epochs": 2, "batch_size": 128, "lr": 1e-3, "weight_decay": 0.0, "clip_grad_norm": 1.0}
GH = {"min": 1e-9, "max": 10.0, "bins_per_octave": 4}


def tracker_factory(settings, wandb_dir, features=None, watch_log_freq=0):
    """As workflow/scripts/train.py builds it: provenance in the config, wandb.watch-style histograms."""

    def make(resolved, trainer):
        config = {**resolved, "provenance": provenance(features)} if features else resolved
        tracker = WandbTracker(settings, wandb_dir, run_name="t/layer/base/seed0", group="t", config=config)
        tracker.watch(watch_log_freq, trainer.steps_done)
        return tracker

    return make


def test_range_histogram_is_wandb_watch_form_and_counts_non_finite():
    rng = np.random.default_rng(0)
    values = rng.standard_normal(1000).astype(np.float32)
    values[[3, 7]] = np.inf
    values[9] = -np.inf
    values[11] = np.nan
    h = range_histogram(values)
    finite = values[np.isfinite(values)].astype(np.float64)
    expected, edges = np.histogram(finite, bins=64, range=(finite.min(), finite.max()))
    np.testing.assert_array_equal(h["counts"], expected)
    np.testing.assert_array_equal(h["edges"], edges)
    assert h["underflow"] == 1 and h["overflow"] == 3  # -inf | +inf, +inf, NaN: counted, not dropped
    assert h["counts"].sum() + h["underflow"] + h["overflow"] == values.size
    const = range_histogram(np.full(5, 0.25))
    assert const["counts"].tolist() == [5] and const["edges"].tolist() == [0.25, 0.25]


def test_log_abs_histogram_keeps_under_and_overflow():
    edges = np.array([1e-3, 1e-2, 1e-1, 1.0])
    counts, log_edges = log_abs_histogram(np.array([1, 2, 3]), edges, underflow=10, overflow=4)
    assert counts.tolist() == [10, 1, 2, 3, 4]
    np.testing.assert_allclose(log_edges, [-4, -3, -2, -1, 0, 1])
    many = np.ones(1000, dtype=np.int64)
    c, e = log_abs_histogram(many, np.geomspace(1e-9, 10, 1001), 7, 8)
    assert len(c) <= 512 and len(e) == len(c) + 1 and c.sum() == 1000 + 15 and c[0] == 7 and c[-1] == 8


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
        tracker_factory(settings, wandb_dir, features=features_file, watch_log_freq=3),
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
        layer = f["layers/fc2.weight"]
        # every counted element, the ones outside [min, max) too: first and last bin
        assert values[0] == int(layer["underflow"][0]) and values[-1] == int(layer["overflow"][0])
        assert sum(values) == int(layer["counts"][0].sum() + layer["underflow"][0] + layer["overflow"][0])
    assert epochs[0]["grad_underflow/fc2.weight"] == values[0]
    # wandb.watch form every 3 steps: 64 bins over each tensor's range
    steps = [row for row in history if "train/step" in row]
    n_steps = 2 * (2000 // 128 + 1)
    assert [row["train/step"] for row in steps] == list(range(3, n_steps + 1, 3))
    fc2_numel = 10 * 16
    for row in steps:
        for kind in ("gradients", "parameters"):
            assert len(row[f"{kind}/fc2.weight/values"]) == 64 and len(row[f"{kind}/fc2.weight/bins"]) == 65
            assert sum(row[f"{kind}/fc2.weight/values"]) == fc2_numel and row[f"{kind}_nonfinite/fc2.weight"] == 0
    # parameters as the optimiser sees them: close to, but not equal to, the final ones by the last step
    import torch

    final = torch.load(tmp_path / "run" / "model_final.pt")["state_dict"]["fc2.weight"].numpy()
    last = steps[-1]["parameters/fc2.weight/bins"]
    assert last[0] == pytest.approx(float(final.min()), abs=0.02) and last[-1] == pytest.approx(
        float(final.max()), abs=0.02
    )
    config = read_config(files[0])
    training = config["training"].get("value", config["training"])
    assert training["lr"] == 1e-3
    prov = config["provenance"].get("value", config["provenance"])
    assert prov["backbone"] == "synthetic" and "input_size" in prov and "data_checksum" in prov
    # the checkpoint artifact refers to the run's own model files: W&B keeps no copy of them (disk)
    model = (tmp_path / "run" / "model_final.pt").resolve()
    assert str(model).encode() in files[0].read_bytes()  # the manifest's local path
    copies = [p for p in wandb_dir.rglob("*") if p.is_file() and p.stat().st_size == model.stat().st_size]
    assert not [p for p in copies if p.read_bytes() == model.read_bytes()], copies


@pytest.mark.slow
def test_watch_logs_the_parameters_before_each_step(features_file, tmp_path):
    """At train/step 1 the parameters are the initial ones: their histogram is exactly that of model_init.pt."""
    import torch

    settings = {"mode": "offline", "project": "p", "entity": None, "log_checkpoints": False, "timeout_s": 60}
    wandb_dir = tmp_path / "wandb"
    train_run(
        features_file,
        tmp_path / "run",
        RUN,
        {**TRAINING, "epochs": 1},
        {"hidden": 16, "dropout": 0.0},
        {"min": 1.0, "max": 10.0, "bins_per_octave": 4},  # every gradient below range: all in the underflow bin
        tracker_factory(settings, wandb_dir, watch_log_freq=1),
    )
    history = read_history(find_run_files(wandb_dir)[0])
    first = next(row for row in history if row.get("train/step") == 1)
    init = torch.load(tmp_path / "run" / "model_init.pt")["state_dict"]
    for name in ("fc1.weight", "fc2.weight", "fc2.bias"):
        expected = range_histogram(init[name].numpy())
        assert first[f"parameters/{name}/values"] == expected["counts"].tolist()
        np.testing.assert_allclose(first[f"parameters/{name}/bins"], expected["edges"], rtol=1e-6)
    epoch = next(row for row in history if "epoch/val_acc" in row)
    values = epoch["grad_log10_abs/fc2.weight/values"]
    n_steps = 2000 // 128 + 1
    assert values[0] == n_steps * 16 * 10 and sum(values[1:]) == 0  # not an empty histogram: all underflow


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


@pytest.mark.slow
def test_a_group_logs_one_wandb_run_per_seed(features_file, tmp_path):
    """The seeds of one job train together: each gets its own W&B run (open side by side), with its own epochs."""
    from normscape.training.job import train_group

    settings = {"mode": "offline", "project": "p", "entity": None, "log_checkpoints": False, "timeout_s": 60}
    wandb_dir = tmp_path / "wandb"
    runs = [{**RUN, "seed": seed} for seed in (0, 1)]

    def make(resolved, record):
        name = f"t/layer/base/seed{record.seed}"
        tracker = WandbTracker(settings, wandb_dir, run_name=name, group="t", config=resolved)
        tracker.watch(0, record.steps_done)
        return tracker

    summaries = train_group(
        features_file,
        [tmp_path / "r0", tmp_path / "r1"],
        runs,
        TRAINING,
        {"hidden": 16, "dropout": 0.0},
        GH,
        make,
    )
    files = find_run_files(wandb_dir)
    assert len(files) == 2 and WandbTracker.open_runs == 0
    configs = {f: read_config(f)["run"] for f in files}
    by_seed = {configs[f].get("value", configs[f])["seed"]: read_history(f) for f in files}
    for seed, summary in zip((0, 1), summaries):
        epochs = [row for row in by_seed[seed] if "epoch/val_acc" in row]
        assert len(epochs) == 2 and epochs[-1]["epoch/val_acc"] == pytest.approx(summary["final"]["val_acc"])
    assert summaries[0]["final"]["val_loss"] != summaries[1]["final"]["val_loss"]


def test_runs_are_tagged_capture_the_console_and_record_absolute_artifact_paths(tmp_path, monkeypatch):
    """`wandb sync` of an offline run uploads the artifact's files from their recorded local paths: absolute, so
    it finds them from any directory, although the workflow names run directories relative to its own."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs").mkdir()
    model = Path("runs") / "model_final.pt"
    model.write_bytes(b"weights")
    settings = {"mode": "offline", "project": "p", "entity": None, "log_checkpoints": True, "timeout_s": 60}
    config = {"run": {**RUN, "variant": "bs-32"}}
    tracker = WandbTracker(settings, "wandb", run_name="t/layer/bs-32/seed0", group="t", config=config)
    print("a line the console capture keeps", flush=True)
    tracker.log_summary({"final": {"test_acc": 0.5}, "best": {"test_acc": 0.5}}, [model])
    tracker.finish()
    monkeypatch.chdir(tmp_path / "runs")  # another directory, as `wandb sync` may be started from
    (run_file,) = find_run_files(tmp_path / "wandb")
    assert sorted(read_run(run_file).tags) == ["experiment:t", "norm:layer", "seed:0", "variant:bs-32"]
    (local,) = read_artifact_paths(run_file)
    assert Path(local).is_absolute() and Path(local).read_bytes() == b"weights"
    output_log = run_file.parent / "files" / "output.log"
    assert "a line the console capture keeps" in output_log.read_text()


@pytest.mark.slow
def test_a_diverged_runs_checkpoints_are_logged_with_its_non_finite_metrics_as_text(tmp_path, caplog):
    """W&B keeps an artifact's metadata as strict JSON: a diverged run's NaN / inf final metrics made the artifact
    fail ("Out of range float values are not JSON compliant"), so exactly the runs one wants to inspect had none."""
    import json

    model = tmp_path / "model_final.pt"
    model.write_bytes(b"weights")
    settings = {"mode": "offline", "project": "p", "entity": None, "log_checkpoints": True, "timeout_s": 60}
    tracker = WandbTracker(settings, tmp_path / "wandb", run_name="high_lr/none/base/seed0", group="high_lr", config={})
    final = {"test_acc": 0.1, "test_loss": float("nan"), "train_loss": float("inf")}
    with caplog.at_level("WARNING"):
        tracker.log_summary({"final": final, "best": {"test_acc": 0.1}}, [model])
        tracker.finish()
    assert "artifact failed" not in caplog.text
    (run_file,) = find_run_files(tmp_path / "wandb")
    assert read_artifact_paths(run_file) == [str(model.resolve())]
    metadata = json.dumps({"final": final})  # what strict JSON refuses ...
    assert "NaN" in metadata and b'"test_loss":"nan","train_loss":"inf"' in run_file.read_bytes()  # W&B got this


def test_the_summary_table_is_one_wandb_table_in_its_own_run(tmp_path):
    import json

    import pandas as pd

    from normscape.training.wandb_tracking import log_summary_table

    csv = tmp_path / "summary.csv"
    pd.DataFrame(
        {"experiment": ["convergence", "convergence"], "head": ["none", "batch"], "final_test_acc_mean": [0.7, 0.75]}
    ).to_csv(csv, index=False)
    settings = {"mode": "offline", "project": "p", "entity": None, "log_checkpoints": True, "timeout_s": 60}
    assert log_summary_table(settings, tmp_path / "wandb", csv)
    assert not log_summary_table({**settings, "mode": "disabled"}, tmp_path / "nothing", csv)
    (run_file,) = find_run_files(tmp_path / "wandb")
    run = read_run(run_file)
    assert run.display_name == "summary" and run.job_type == "summary"
    (row,) = [r for r in read_history(run_file) if "summary_table/_type" in r]
    assert row["summary_table/_type"] == "table-file" and row["summary_table/nrows"] == 2
    table = json.loads((run_file.parent / "files" / row["summary_table/path"]).read_text())
    assert table["columns"] == ["experiment", "head", "final_test_acc_mean"]
    assert table["data"] == [["convergence", "none", 0.7], ["convergence", "batch", 0.75]]
