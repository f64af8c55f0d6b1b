"""Training engine: clipping, determinism, resume == uninterrupted, divergence, outputs."""

from __future__ import annotations

import csv
import json

import h5py
import numpy as np
import pytest
import torch

from normscape.models.heads import NORM_NAMES
from normscape.pipeline.errors import DiskFullError
from normscape.training import trainer as train_mod
from normscape.training.job import load_features, train_group, train_run
from normscape.training.run_records import METRIC_COLUMNS
from normscape.training.trainer import Trainer

RUN = {"experiment": "t", "head": "batch", "variant": "base", "seed": 0}
HEAD = {"hidden": 32, "dropout": 0.1}
GH = {"min": 1e-9, "max": 10.0, "bins_per_octave": 4}


def training(**kw):
    return {"epochs": 3, "batch_size": 64, "lr": 1e-3, "weight_decay": 0.0, "clip_grad_norm": None, **kw}


@pytest.fixture(scope="module")
def data(features_file):
    full = load_features(features_file)
    return {k: (x[:600], y[:600]) for k, (x, y) in full.items()}


@pytest.fixture
def float64_heads():
    """Heads built in float64 (the default dtype while the test runs): the two computations then agree to float64
    rounding. In float32 a batched and a plain GEMM round differently, and a norm's derivative can amplify that
    by orders of magnitude (fixed-eps FRN: up to 1/sqrt(eps) = 1000), past any tolerance that still tests much."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(previous)


@pytest.mark.parametrize("norm", NORM_NAMES)
def test_stacked_gradient_equals_each_heads_own_autograd(data, norm, float64_heads):
    # Every run's row of the stacked gradient is the gradient a plain head of its own gets from autograd, batch
    # after batch (the second batch's gradient must not include the first's).
    data = {split: (x.double(), y) for split, (x, y) in data.items()}
    tr = Trainer(data, norm, [0, 5], 1, 64, 1e-3, hidden=64)  # 64: GroupNorm groups of 2 units, not 1
    refs = [tr.stack.model_of(row).train() for row in range(2)]
    x, y = data["train"]
    for batch in (slice(0, 64), slice(64, 128)):
        xb, yb = torch.stack([x[batch], x[batch.start + 1 : batch.stop + 1]]), torch.stack([y[batch], y[batch]])
        yb[1] = y[batch.start + 1 : batch.stop + 1]
        losses, _ = tr.stack.forward_backward(xb, yb, None)
        for row, ref in enumerate(refs):
            ref.zero_grad(set_to_none=True)
            ref_loss = torch.nn.functional.cross_entropy(ref(xb[row]), yb[row])
            ref_loss.backward()
            torch.testing.assert_close(losses[row], ref_loss.detach(), rtol=1e-12, atol=0)
            expected = torch.cat([p.grad.flatten() for p in ref.parameters()])
            assert expected.dtype == torch.float64
            assert torch.linalg.vector_norm(tr.stack.grad_row(row) - expected) <= 1e-10 * expected.norm()


def test_clipping_bounds_the_global_norm(data):
    tr = Trainer(data, "none", 0, 1, 32, 1e-2, clip_grad_norm=0.05, hidden=32)
    run = tr.runs[0]
    seen = []  # the norm of the gradient Adam receives, read just before each optimiser step
    tr.adam.optimizer.register_step_pre_hook(lambda opt, args, kwargs: seen.append(float(tr.stack.grad_row(0).norm())))
    tr.fit()
    pre = run.step_norms[0]
    assert (pre > 0.05).any()  # clipping had something to do
    assert max(seen) <= 0.05 * (1 + 1e-5)  # the gradient Adam received is bounded
    np.testing.assert_allclose(np.array(seen), np.minimum(pre, 0.05), rtol=1e-4)
    assert run.metrics[0]["clipped_fraction"] == pytest.approx(float((pre > 0.05).mean()))


def test_clipping_matches_torch_clip_grad_norm_per_run(data):
    # Each run's clipping (its own row's norm, one multiply) equals torch.nn.utils.clip_grad_norm_ on that run's
    # gradients alone: a run with a large gradient does not scale its neighbour's.
    tr = Trainer(data, "layer", [0, 1], 1, 64, 1e-3, clip_grad_norm=0.1, hidden=32)
    x, y = data["train"]
    xb, yb = torch.stack([x[:64], x[:64] * 50]), torch.stack([y[:64], y[:64]])
    tr.stack.forward_backward(xb, yb, None)
    grads = torch.stack([tr.stack.grad_row(row) for row in range(2)])
    for row in range(2):
        norm = torch.linalg.vector_norm(grads[row])
        ours = grads[row] * torch.clamp(0.1 / (norm + train_mod.CLIP_EPS), max=1.0)
        params_ref = [torch.nn.Parameter(torch.zeros_like(g)) for g in grads[row].split(tr.stack.sizes)]
        for p, g in zip(params_ref, grads[row].split(tr.stack.sizes)):
            p.grad = g.clone()
        torch.nn.utils.clip_grad_norm_(params_ref, 0.1)
        torch.testing.assert_close(ours, torch.cat([p.grad for p in params_ref]))


@pytest.mark.slow
def test_same_seed_same_metrics(data):
    a = Trainer(data, "batch", 3, 2, 64, 1e-3, hidden=32, dropout=0.1)
    b = Trainer(data, "batch", 3, 2, 64, 1e-3, hidden=32, dropout=0.1)
    a.fit()
    b.fit()
    strip = lambda ms: [{k: v for k, v in m.items() if k != "epoch_time_s"} for m in ms]  # noqa: E731
    assert strip(a.runs[0].metrics) == strip(b.runs[0].metrics)
    c = Trainer(data, "batch", 4, 2, 64, 1e-3, hidden=32, dropout=0.1)
    c.fit()
    assert strip(c.runs[0].metrics) != strip(a.runs[0].metrics)


def read_metrics(path):
    with open(path) as fh:
        return [{k: v for k, v in row.items() if k != "epoch_time_s"} for row in csv.DictReader(fh)]


@pytest.mark.slow
def test_resume_after_kill_equals_uninterrupted(features_file, tmp_path, monkeypatch):
    full = tmp_path / "full"
    train_run(features_file, full, RUN, training(), HEAD, GH)
    killed = tmp_path / "killed"
    original = Trainer.train_epoch

    def dying(self, epoch):
        if epoch == 3:
            raise KeyboardInterrupt("killed in epoch 3")
        return original(self, epoch)

    monkeypatch.setattr(Trainer, "train_epoch", dying)
    with pytest.raises(KeyboardInterrupt):
        train_run(features_file, killed, RUN, training(), HEAD, GH)
    assert (killed / "checkpoints" / "last.pt").exists() and not (killed / "summary.json").exists()
    monkeypatch.setattr(Trainer, "train_epoch", original)
    train_run(features_file, killed, RUN, training(), HEAD, GH)
    assert read_metrics(killed / "metrics.csv") == read_metrics(full / "metrics.csv")
    with h5py.File(full / "grads.h5") as a, h5py.File(killed / "grads.h5") as b:
        np.testing.assert_array_equal(a["layers/fc2.weight/counts"][()], b["layers/fc2.weight/counts"][()])
        np.testing.assert_array_equal(a["steps/grad_norm_pre_clip"][()], b["steps/grad_norm_pre_clip"][()])
    ta, tb = torch.load(full / "trajectory.pt"), torch.load(killed / "trajectory.pt")
    torch.testing.assert_close(ta["flat"], tb["flat"], rtol=0, atol=0)


@pytest.mark.slow
def test_finished_run_keeps_no_resume_state_and_reruns_identically(features_file, tmp_path):
    run_dir = tmp_path / "r"
    first = train_run(features_file, run_dir, RUN, training(epochs=2), HEAD, GH)
    assert not (run_dir / "checkpoints").exists()  # removed once every output was written
    trajectory = torch.load(run_dir / "trajectory.pt")["flat"]
    metrics = read_metrics(run_dir / "metrics.csv")
    again = train_run(features_file, run_dir, RUN, training(epochs=2), HEAD, GH)  # e.g. --forcerun: from scratch
    assert read_metrics(run_dir / "metrics.csv") == metrics
    assert again["final"] == first["final"] and not (run_dir / "checkpoints").exists()
    torch.testing.assert_close(torch.load(run_dir / "trajectory.pt")["flat"], trajectory, rtol=0, atol=0)


@pytest.mark.slow
def test_landscape_inputs_only_when_asked_for(features_file, tmp_path):
    with_t = train_run(features_file, tmp_path / "a", RUN, training(epochs=2), HEAD, GH)
    without = train_run(features_file, tmp_path / "b", RUN, training(epochs=2), HEAD, GH, landscape_inputs=False)
    for name in ("trajectory.pt", "model_init.pt"):
        assert (tmp_path / "a" / name).is_file() and not (tmp_path / "b" / name).exists()
    assert with_t["final"] == without["final"]
    trajectory = torch.load(tmp_path / "a" / "trajectory.pt")
    init = torch.load(tmp_path / "a" / "model_init.pt")["state_dict"]
    # row 0 of the trajectory is the initial model (what the landscape's init -> final line starts from)
    torch.testing.assert_close(trajectory["flat"][0], torch.cat([init[n].flatten() for n in trajectory["names"]]))


def kill_in_epoch(monkeypatch, epoch_to_die: int):
    original = Trainer.train_epoch

    def dying(self, epoch):
        if epoch == epoch_to_die:
            raise KeyboardInterrupt(f"killed in epoch {epoch}")
        return original(self, epoch)

    monkeypatch.setattr(Trainer, "train_epoch", dying)
    return lambda: monkeypatch.setattr(Trainer, "train_epoch", original)


@pytest.mark.slow
def test_untracked_run_checkpoints_no_trajectory_and_a_tracked_run_does_not_resume_from_it(
    features_file, tmp_path, monkeypatch, caplog
):
    run_dir = tmp_path / "r"
    revive = kill_in_epoch(monkeypatch, 3)
    with pytest.raises(KeyboardInterrupt):
        train_run(features_file, run_dir, RUN, training(), HEAD, GH, landscape_inputs=False)
    revive()
    state = torch.load(run_dir / "checkpoints" / "last.pt", weights_only=False)
    assert state["epoch"] == 2 and state["trajectory"] == []  # nothing a landscape could use was kept
    # the run is now read by a landscape: its checkpoint lacks epochs 0-2 of the trajectory, so it is not resumed
    with caplog.at_level("WARNING", logger="normscape.training.job"):
        train_run(features_file, run_dir, RUN, training(), HEAD, GH)
    assert "no training trajectory" in caplog.text
    reference = train_run(features_file, tmp_path / "fresh", RUN, training(), HEAD, GH)
    ta, tb = torch.load(run_dir / "trajectory.pt"), torch.load(tmp_path / "fresh" / "trajectory.pt")
    assert len(ta["flat"]) == training()["epochs"] + 1
    torch.testing.assert_close(ta["flat"], tb["flat"], rtol=0, atol=0)
    assert read_metrics(run_dir / "metrics.csv") == read_metrics(tmp_path / "fresh" / "metrics.csv")
    assert reference["final"]


@pytest.mark.slow
def test_checkpoint_of_another_config_is_not_resumed(features_file, tmp_path):
    run_dir = tmp_path / "r"
    train_run(features_file, run_dir, RUN, training(epochs=2), HEAD, GH)
    summary = train_run(features_file, run_dir, RUN, training(epochs=2, lr=5e-3), HEAD, GH)
    assert summary["epochs_completed"] == 2 and summary["training"]["lr"] == 5e-3


@pytest.mark.slow
def test_failed_checkpoint_write_keeps_the_previous_one(features_file, tmp_path, monkeypatch):
    run_dir = tmp_path / "r"
    original = Trainer.train_epoch

    def dying(self, epoch):
        if epoch == 2:
            raise KeyboardInterrupt("killed in epoch 2")
        return original(self, epoch)

    monkeypatch.setattr(Trainer, "train_epoch", dying)
    with pytest.raises(KeyboardInterrupt):
        train_run(features_file, run_dir, RUN, training(epochs=2), HEAD, GH)
    monkeypatch.setattr(Trainer, "train_epoch", original)
    ckpt = run_dir / "checkpoints" / "last.pt"
    before = ckpt.read_bytes()

    def disk_full(obj, f, *a, **k):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch, "save", disk_full)
    with pytest.raises(DiskFullError, match=f"no space left on the device of {ckpt.parent}"):
        train_run(features_file, run_dir, RUN, training(epochs=2), HEAD, GH)
    assert ckpt.read_bytes() == before
    assert not [p for p in ckpt.parent.iterdir() if p.name != "last.pt"]  # no temp file left


def test_nan_divergence_is_recorded_and_outputs_written(features_file, tmp_path):
    run_dir = tmp_path / "div"
    summary = train_run(features_file, run_dir, {**RUN, "head": "none"}, training(epochs=4, lr=1e36), HEAD, GH)
    assert summary["diverged"] is True and summary["diverged_epoch"] is not None
    for name in ("metrics.csv", "summary.json", "grads.h5", "model_final.pt", "model_best.pt", "trajectory.pt"):
        assert (run_dir / name).exists(), name
    rows = read_metrics(run_dir / "metrics.csv")
    assert len(rows) == summary["diverged_epoch"] and rows[-1]["diverged"] == "1"
    json.loads((run_dir / "summary.json").read_text())  # strict JSON (NaN written as null)


def test_outputs_follow_the_contract(features_file, tmp_path):
    run_dir = tmp_path / "c"
    summary = train_run(features_file, run_dir, RUN, training(epochs=2, clip_grad_norm=1.0), HEAD, GH)
    assert set(summary["final"]) == {"train_loss", "train_acc", "val_loss", "val_acc", "test_loss", "test_acc"}
    assert summary["final"]["test_acc"] > 0.5  # separable synthetic classes are learned
    assert set(summary["epochs_to_val_acc"]) == {"0.80", "0.85"}
    assert summary["provenance"]["flush_denormal"] is True  # subnormals flushed (x86/ARM CPUs support it)
    with open(run_dir / "metrics.csv") as fh:
        assert next(csv.reader(fh)) == METRIC_COLUMNS
    with h5py.File(run_dir / "grads.h5") as f:
        n_steps = len(f["steps/epoch"])
        assert f["layers/fc1.weight/counts"].shape == (2, len(f["edges"]) - 1)
        total = (
            f["layers/fc1.weight/counts"][()].sum(1)
            + f["layers/fc1.weight/underflow"][()]
            + f["layers/fc1.weight/overflow"][()]
        )
        assert (total == 32 * 1280 * n_steps // 2).all()  # every element of every step counted
    traj = torch.load(run_dir / "trajectory.pt")
    assert traj["flat"].shape[0] == 3 and traj["names"][0] == "fc1.weight"
    final = torch.load(run_dir / "model_final.pt")
    torch.testing.assert_close(
        torch.cat([v.flatten() for k, v in final["state_dict"].items() if k in traj["names"]]), traj["flat"][-1]
    )


@pytest.mark.slow
def test_a_runs_numbers_do_not_depend_on_its_group(features_file, tmp_path):
    # Seed 1 trained alone and together with seeds 0 and 2 (dropout, clipping and BatchNorm's running statistics
    # included): every metric, histogram, gradient norm, model tensor and trajectory row is bitwise the same.
    training_ = training(clip_grad_norm=0.5)
    head = {"hidden": 32, "dropout": 0.1}
    runs = [{**RUN, "seed": seed} for seed in (0, 1, 2)]
    alone = train_run(features_file, tmp_path / "alone", runs[1], training_, head, GH)
    dirs = [tmp_path / f"group{seed}" for seed in (0, 1, 2)]
    together = train_group(features_file, dirs, runs, training_, head, GH)
    timing = {"wall_time_s"}
    assert {k: v for k, v in alone.items() if k not in timing} == {
        k: v for k, v in together[1].items() if k not in timing
    }
    assert read_metrics(tmp_path / "alone" / "metrics.csv") == read_metrics(dirs[1] / "metrics.csv")
    assert read_metrics(dirs[0] / "metrics.csv") != read_metrics(dirs[1] / "metrics.csv")  # seeds do differ
    with h5py.File(tmp_path / "alone" / "grads.h5") as a, h5py.File(dirs[1] / "grads.h5") as b:
        keys = []
        a.visit(lambda k: keys.append(k) if isinstance(a[k], h5py.Dataset) else None)
        for key in keys:
            np.testing.assert_array_equal(a[key][()], b[key][()], err_msg=key)
    for name in ("model_final.pt", "model_best.pt", "model_init.pt"):
        sa, sb = torch.load(tmp_path / "alone" / name)["state_dict"], torch.load(dirs[1] / name)["state_dict"]
        assert sa.keys() == sb.keys()
        for key in sa:
            assert torch.equal(sa[key], sb[key]), (name, key)
    ta, tb = torch.load(tmp_path / "alone" / "trajectory.pt"), torch.load(dirs[1] / "trajectory.pt")
    assert torch.equal(ta["flat"], tb["flat"]) and ta["provenance"] == tb["provenance"]


@pytest.mark.slow
def test_an_lr_sweep_trains_together_each_run_at_its_own_lr_as_alone(features_file, tmp_path, monkeypatch):
    # The values of an lr sweep train as one stack, each run at its own lr (one optimiser block per lr, runs given
    # interleaved): every run's numbers are bitwise those of the run trained alone, also after a kill and resume;
    # the lr 1e3 runs diverge and leave the stack while the others go on.
    lrs, seeds = [1e-3, 1e3, 1e-2], [0, 1]
    runs = [{**RUN, "variant": f"lr-{lr:g}", "seed": seed} for seed in seeds for lr in lrs]
    trainings = [training(lr=lr, clip_grad_norm=0.5) for _ in seeds for lr in lrs]
    dirs = [tmp_path / "group" / f"{r['variant']}-{r['seed']}" for r in runs]
    revive = kill_in_epoch(monkeypatch, 3)
    with pytest.raises(KeyboardInterrupt):
        train_group(features_file, dirs, runs, trainings, HEAD, GH)
    revive()
    together = train_group(features_file, dirs, runs, trainings, HEAD, GH)
    for i in (0, 1, 2, 5):
        alone_dir = tmp_path / f"alone{i}"
        alone = train_run(features_file, alone_dir, runs[i], trainings[i], HEAD, GH)
        timing = {"wall_time_s"}
        assert {k: v for k, v in alone.items() if k not in timing} == {
            k: v for k, v in together[i].items() if k not in timing
        }
        assert read_metrics(alone_dir / "metrics.csv") == read_metrics(dirs[i] / "metrics.csv")
        sa, sb = (
            torch.load(alone_dir / "model_final.pt")["state_dict"],
            torch.load(dirs[i] / "model_final.pt")["state_dict"],
        )
        assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert together[1]["diverged"] and together[4]["diverged"] and not together[0]["diverged"]
    assert [float(m["lr"]) for m in read_metrics(dirs[2] / "metrics.csv")] == [1e-2] * 3
    assert read_metrics(dirs[0] / "metrics.csv") != read_metrics(dirs[2] / "metrics.csv")


@pytest.mark.slow
def test_a_group_resumes_after_a_kill_with_exactly_the_uninterrupted_numbers(features_file, tmp_path, monkeypatch):
    runs = [{**RUN, "seed": seed} for seed in (0, 1)]
    full = [tmp_path / f"full{seed}" for seed in (0, 1)]
    killed = [tmp_path / f"killed{seed}" for seed in (0, 1)]
    head = {"hidden": 32, "dropout": 0.1}
    train_group(features_file, full, runs, training(), head, GH)
    revive = kill_in_epoch(monkeypatch, 3)
    with pytest.raises(KeyboardInterrupt):
        train_group(features_file, killed, runs, training(), head, GH)
    revive()
    for run_dir in killed:
        assert torch.load(run_dir / "checkpoints" / "last.pt", weights_only=False)["epoch"] == 2
    train_group(features_file, killed, runs, training(), head, GH)
    for a, b in zip(full, killed):
        assert read_metrics(a / "metrics.csv") == read_metrics(b / "metrics.csv")
        assert torch.equal(torch.load(a / "trajectory.pt")["flat"], torch.load(b / "trajectory.pt")["flat"])
        assert not (b / "checkpoints").exists()


@pytest.mark.slow
def test_runs_whose_checkpoints_stopped_at_different_epochs_resume_exactly(features_file, tmp_path, monkeypatch):
    # a kill between two runs' checkpoint writes leaves seed 0 after epoch 2 and seed 1 after epoch 1: they resume
    # as two groups, each to exactly the uninterrupted numbers
    runs = [{**RUN, "seed": seed} for seed in (0, 1)]
    full = [tmp_path / f"full{seed}" for seed in (0, 1)]
    killed = [tmp_path / f"killed{seed}" for seed in (0, 1)]
    train_group(features_file, full, runs, training(), HEAD, GH)
    revive = kill_in_epoch(monkeypatch, 2)
    with pytest.raises(KeyboardInterrupt):
        train_group(features_file, killed, runs, training(), HEAD, GH)
    revive()
    behind = (killed[1] / "checkpoints" / "last.pt").read_bytes()
    revive = kill_in_epoch(monkeypatch, 3)
    with pytest.raises(KeyboardInterrupt):
        train_group(features_file, killed, runs, training(), HEAD, GH)
    revive()
    (killed[1] / "checkpoints" / "last.pt").write_bytes(behind)
    epochs = [torch.load(d / "checkpoints" / "last.pt", weights_only=False)["epoch"] for d in killed]
    assert epochs == [2, 1]
    train_group(features_file, killed, runs, training(), HEAD, GH)
    for a, b in zip(full, killed):
        assert read_metrics(a / "metrics.csv") == read_metrics(b / "metrics.csv")
        assert torch.equal(torch.load(a / "trajectory.pt")["flat"], torch.load(b / "trajectory.pt")["flat"])


@pytest.mark.slow
def test_a_diverged_run_stops_and_the_others_go_on(data):
    # seed 0's parameters are poisoned after epoch 1: it stops there with that state, seed 1 trains on exactly as
    # it would alone (the stack shrinks, its Adam moments move along)
    tr = Trainer(data, "none", [0, 1], 3, 64, 1e-3, hidden=32)
    alone = Trainer(data, "none", [1], 3, 64, 1e-3, hidden=32)
    original = tr.train_epoch

    def poison_seed0(epoch):
        rows = original(epoch)
        if epoch == 1:
            tr.stack.params["fc1.weight"].data[0, 0, 0] = float("nan")
            rows[0] = {**rows[0], "diverged": 1}
            tr.runs[0].last_divergence_reason = "poisoned"
        return rows

    tr.train_epoch = poison_seed0
    tr.fit()
    alone.fit()
    assert tr.runs[0].diverged_epoch == 1 and len(tr.runs[0].metrics) == 1 and tr.runs[0].row is None
    assert len(tr.runs[1].metrics) == 3 and torch.equal(tr.flat_param[0], alone.flat_param[0])
    assert torch.isnan(tr.run_state(tr.runs[0])["fc1.weight"][0, 0])  # it stopped with the state it diverged in


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without a CUDA GPU")
def test_training_on_cuda_without_a_gpu_says_so(features_file, tmp_path):
    from normscape.pipeline.errors import ConfigError

    with pytest.raises(ConfigError, match="training.device is cuda, but torch sees no CUDA GPU"):
        train_run(features_file, tmp_path / "r", RUN, training(device="cuda"), HEAD, GH)
    assert not (tmp_path / "r" / "summary.json").exists()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_a_group_trains_on_cuda_like_on_the_cpu(data):
    # float32 GEMMs round differently on a GPU: the same runs, close but not bitwise
    cpu = Trainer(data, "batch", [0, 1], 2, 64, 1e-3, hidden=32)
    gpu = Trainer(data, "batch", [0, 1], 2, 64, 1e-3, hidden=32, device="cuda")
    cpu.fit()
    gpu.fit()
    for a, b in zip(cpu.runs, gpu.runs):
        assert abs(a.metrics[-1]["val_acc"] - b.metrics[-1]["val_acc"]) <= 0.02
