"""Provenance: no result is ever reused for inputs it was not computed from.

The property test runs the real workflow on a small config, applies one config edit, runs `snakemake all`
again on a copy of that finished directory, and checks that
  * the incremental result equals a from-scratch run of the edited config (every metric, model tensor,
    histogram, landscape and sharpness number; timing fields aside), and
  * the outputs the edit does not touch were not rewritten (same inode and mtime).
A new config key is covered by adding one line to EDITS.
"""

from __future__ import annotations

import copy
import csv
import json
import logging
import math
import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from conftest import run_snakemake, write_config

from normscape.features import store
from normscape.pipeline.errors import DataError
from normscape.training.evaluation import DIVERGENCE_LOSS_FACTOR, divergence_reason
from normscape.training.job import train_run
from normscape.training.trainer import Trainer

# --------------------------------------------------------------------------------------- the property test
# Two experiments whose names no documented figure uses (no figure jobs: the test stays cheap), one run each,
# landscapes of the first. Everything else comes from tests/config/tiny.yaml.
PROPERTY_EXPERIMENTS = {"alpha": {"heads": ["batch"], "lr": 1.0e-3}, "beta": {"heads": ["none"], "lr": 1.0e-3}}
# The prepared images (data/*) are temporary: removed once the features are built, so only the features are kept
# upstream of the runs (an edit of the backbone prepares them again from the archive).
UPSTREAM: list[str] = []
FEATURES = ["features/*"]
WEIGHTS = "<weights file>"  # replaced by a real state_dict of the tiny config's arch (another random init) at run time

# (dotted config key, new value, globs under results/ that this edit must not rewrite)
EDITS = [
    ("backbone.weights", WEIGHTS, UPSTREAM),
    ("backbone.input_size", 48, UPSTREAM),
    ("data.split_seed", 1, []),  # the data section is one slice: val_size, test_size go the same way
    ("experiments.beta.lr", 1.0e-2, [*FEATURES, "runs/alpha/**/*", "landscapes/**/*"]),
    ("head.hidden", 8, FEATURES),
    ("grad_hist.bins_per_octave", 2, FEATURES),
    ("landscape.span", 0.5, [*FEATURES, "runs/**/*"]),
    # a seed more: its condition's job trains every seed again (they are one job), to the same numbers
    ("seeds", [0, 1], FEATURES),
    # more keys: one line each, e.g. ("head.dropout", 0.25, FEATURES)
]

SKIP_DIRS = {"logs", "benchmarks", "checkpoints", "wandb"}
TIMING_KEYS = {"wall_time_s", "epoch_time_s", "created", "seconds", "probe_seconds"}  # measured durations


def set_key(cfg: dict, dotted: str, value) -> dict:
    cfg = copy.deepcopy(cfg)
    *parents, last = dotted.split(".")
    node = cfg
    for key in parents:
        node = node.setdefault(key, {})
    node[last] = value
    return cfg


def _plain(obj):
    """Tensors/arrays -> numpy, timing fields dropped, recursively (what 'equal results' compares)."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().numpy()
    if isinstance(obj, dict):
        return {k: _plain(v) for k, v in obj.items() if k not in TIMING_KEYS and not str(k).startswith("wall_time")}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    return obj


def _h5(path: Path) -> dict:
    out = {}
    with h5py.File(path, "r") as f:
        out["attrs"] = {k: v for k, v in f.attrs.items() if k not in TIMING_KEYS | {"versions"}}
        f.visititems(lambda name, obj: out.__setitem__(name, obj[()]) if isinstance(obj, h5py.Dataset) else None)
    return out


def _csv(path: Path) -> list[dict]:
    with path.open() as fh:
        return [_plain(row) for row in csv.DictReader(fh)]


def snapshot(results: Path) -> dict:
    """Every number of every result file, keyed by path relative to results/."""
    out = {}
    for path in sorted(results.rglob("*")):
        rel = path.relative_to(results)
        if not path.is_file() or SKIP_DIRS & set(rel.parts) or path.suffix not in (".csv", ".json", ".h5", ".pt"):
            continue
        if path.suffix == ".csv":
            out[str(rel)] = _csv(path)
        elif path.suffix == ".json":
            out[str(rel)] = _plain(json.loads(path.read_text()))
        elif path.suffix == ".h5":
            out[str(rel)] = _h5(path)
        else:
            out[str(rel)] = _plain(torch.load(path, map_location="cpu", weights_only=False))
    return out


def differences(a, b, where="") -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        diffs = [f"{where}/{k}: only in one" for k in set(a) ^ set(b)]
        for k in sorted(set(a) & set(b), key=str):
            diffs += differences(a[k], b[k], f"{where}/{k}")
        return diffs
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        return [d for i, (x, y) in enumerate(zip(a, b)) for d in differences(x, y, f"{where}[{i}]")]
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        a, b = np.asarray(a), np.asarray(b)
        same = a.shape == b.shape and (
            np.array_equal(a, b, equal_nan=a.dtype.kind in "fc" and b.dtype.kind in "fc") or np.array_equal(a, b)
        )
        return [] if same else [f"{where}: arrays differ"]
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return []
    return [] if a == b else [f"{where}: {a!r} != {b!r}"]


def stamps(results: Path, globs: list[str]) -> dict[str, tuple[int, int]]:
    files = {p for g in globs for p in results.glob(g) if p.is_file()}
    return {str(p.relative_to(results)): (p.stat().st_ino, p.stat().st_mtime_ns) for p in files}


def run_all(workdir: Path, cfg: dict, cores: int = 2) -> None:
    configfile = write_config(cfg, workdir / "config.yaml")
    run_snakemake(["all", "--cores", str(cores)], cwd=workdir, configfile=configfile)


@pytest.fixture(scope="module")
def weights_file(tmp_path_factory) -> Path:
    import torchvision
    import yaml
    from conftest import TINY_CONFIG

    arch = yaml.safe_load(TINY_CONFIG.read_text())["backbone"]["arch"]
    torch.manual_seed(1)  # another random init than the pipeline's `random` weights (seed 0)
    path = tmp_path_factory.mktemp("weights") / f"{arch}-seed1.pth"
    torch.save(torchvision.models.get_model(arch).state_dict(), path)
    return path


@pytest.fixture(scope="module")
def property_base(tmp_path_factory, synthetic_archive):
    """The small config's finished workflow in its own working directory (results + .snakemake metadata)."""
    import yaml
    from conftest import TINY_CONFIG

    cfg = yaml.safe_load(TINY_CONFIG.read_text())
    cfg["data"]["archive"] = str(synthetic_archive)
    cfg["results_dir"] = "results"  # relative: a copied directory is a complete, movable workflow state
    cfg["experiments"] = copy.deepcopy(PROPERTY_EXPERIMENTS)
    cfg["landscape"]["experiments"] = ["alpha"]
    workdir = tmp_path_factory.mktemp("base")
    run_all(workdir, cfg)
    return workdir, cfg


@pytest.mark.slow
@pytest.mark.parametrize("key,value,untouched", EDITS, ids=[e[0] for e in EDITS])
def test_incremental_run_equals_a_fresh_run_of_the_edited_config(
    property_base, weights_file, tmp_path, key, value, untouched
):
    base_dir, base_cfg = property_base
    edited = set_key(base_cfg, key, str(weights_file) if value == WEIGHTS else value)
    incremental = tmp_path / "incremental"
    shutil.copytree(base_dir, incremental, symlinks=True)  # copy2: mtimes kept, so Snakemake sees the same state
    before_edit = snapshot(incremental / "results")
    kept = stamps(incremental / "results", untouched)
    assert all(results_glob_matches(incremental / "results", g) for g in untouched), untouched
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    # the two workflows are independent: side by side, one core each
    with ThreadPoolExecutor(max_workers=2) as pool:
        for job in [pool.submit(run_all, workdir, edited, cores=1) for workdir in (incremental, fresh)]:
            job.result()
    after_edit, expected = snapshot(incremental / "results"), snapshot(fresh / "results")
    assert differences(before_edit, expected), f"editing {key} changed no result: the edit tests nothing"
    diffs = differences(after_edit, expected)
    assert not diffs, f"after editing {key}, the incremental run differs from a fresh one in {len(diffs)} values:\n" + (
        "\n".join(sorted(diffs, key=lambda d: "/runs/" not in d)[:20])  # the runs' own numbers first
    )
    assert stamps(incremental / "results", untouched) == kept, f"editing {key} rewrote outputs it does not affect"


PLUGIN = Path(__file__).parent / "plugins" / "norms_plugin.py"
# ScaleNorm's single gain (a 0-d parameter) becomes one gain per hidden unit: the same config, other model code
PLUGIN_EDIT = ("torch.tensor(math.sqrt(features))", "torch.full((features,), math.sqrt(features))")


@pytest.mark.slow
def test_editing_a_registered_norms_code_retrains_its_runs_and_only_them(synthetic_archive, tmp_path):
    """The property test's edit "change a registered norm's code": a plugin norm whose definition changes between
    the two runs. Its runs retrain (incremental == fresh), the other norm's runs are not rewritten."""
    import yaml
    from conftest import TINY_CONFIG

    cfg = yaml.safe_load(TINY_CONFIG.read_text())
    cfg["data"]["archive"] = str(synthetic_archive)
    cfg["results_dir"] = "results"
    cfg["plugins"] = ["norms_plugin.py"]  # relative to each working directory: every copy has its own file
    cfg["experiments"] = {"alpha": {"heads": ["scale", "none"], "lr": 1.0e-3}}
    cfg["landscape"]["experiments"] = ["alpha"]
    base = tmp_path / "base"
    base.mkdir()
    shutil.copy(PLUGIN, base / "norms_plugin.py")
    run_all(base, cfg)
    incremental, fresh = tmp_path / "incremental", tmp_path / "fresh"
    shutil.copytree(base, incremental, symlinks=True)
    before_edit = snapshot(incremental / "results")
    untouched = ["features/*", "runs/alpha/none/**/*", "landscapes/alpha/none/**/*"]
    # ... except the curvature at matched training loss, which reads every run of the experiment (its level is
    # the highest final training loss among them): a retrained norm may move it, so it is recomputed
    kept = {k: v for k, v in stamps(incremental / "results", untouched).items() if "matched_sharpness" not in k}
    edited = PLUGIN.read_text().replace(*PLUGIN_EDIT)
    assert edited != PLUGIN.read_text()
    fresh.mkdir()
    for workdir in (incremental, fresh):
        (workdir / "norms_plugin.py").write_text(edited)
    with ThreadPoolExecutor(max_workers=2) as pool:
        for job in [pool.submit(run_all, workdir, cfg, cores=1) for workdir in (incremental, fresh)]:
            job.result()
    after_edit, expected = snapshot(incremental / "results"), snapshot(fresh / "results")
    assert differences(before_edit, expected), "editing the norm's code changed no result: the edit tests nothing"
    diffs = differences(after_edit, expected)
    assert not diffs, "after editing the norm, the incremental run differs from a fresh one in:\n" + "\n".join(diffs)
    gain = torch.load(incremental / "results/runs/alpha/scale/base/seed0/model_final.pt", weights_only=False)
    assert gain["state_dict"]["norm.gain"].shape == (cfg["head"]["hidden"],)
    now = {k: v for k, v in stamps(incremental / "results", untouched).items() if "matched_sharpness" not in k}
    assert now == kept, "editing one norm rewrote the other norm's runs"


def results_glob_matches(results: Path, pattern: str) -> bool:
    return any(p.is_file() for p in results.glob(pattern))


# --------------------------------------------------------------------------------------- unit level
RUN = {"experiment": "e", "head": "batch", "variant": "base", "seed": 0}
HEAD = {"hidden": 32, "dropout": 0.0}
GH = {"min": 1e-9, "max": 10.0, "bins_per_octave": 4}


def training(**kw):
    return {"epochs": 2, "batch_size": 64, "lr": 1e-3, "weight_decay": 0.0, "clip_grad_norm": None, **kw}


def rewrite_features(src: Path, dst: Path, **attr_changes) -> Path:
    """A copy of a feature cache with other features (scaled) and changed attributes: a rebuilt cache."""
    splits = {}
    with h5py.File(src, "r", locking=False) as f:
        attrs = store.read_attrs(src)
        for name in ("train", "val", "test"):
            splits[name] = {k: f[name][k][()] for k in ("features", "labels", "indices")}
            splits[name]["features"] = splits[name]["features"] * 2.0
    for key in ("format_version", "identity", "split_fingerprint", "split_sizes"):
        attrs.pop(key)
    store.write_features(dst, splits, {**attrs, **attr_changes})
    return dst


def test_feature_identity_covers_settings_and_split_content(features_file, tmp_path):
    base = store.identity(features_file)
    assert store.identity(rewrite_features(features_file, tmp_path / "a.h5")) == base  # values aside
    assert store.identity(rewrite_features(features_file, tmp_path / "b.h5", input_size=48)) != base
    assert store.identity(rewrite_features(features_file, tmp_path / "c.h5", weights_sha256="ab")) != base
    splits = {}
    with h5py.File(features_file, "r", locking=False) as f:
        for name in ("train", "val", "test"):
            splits[name] = {k: f[name][k][()] for k in ("features", "labels", "indices")}
    splits["val"]["indices"] = splits["val"]["indices"][::-1].copy()  # other rows in the split: another identity
    attrs = {k: v for k, v in store.read_attrs(features_file).items() if k in store.IDENTITY_ATTRS}
    store.write_features(tmp_path / "d.h5", splits, attrs)
    assert store.identity(tmp_path / "d.h5") != base


def interrupted_run(features, run_dir: Path, monkeypatch) -> dict:
    """A run killed in its last epoch: its resume checkpoint (a finished run removes it) is left behind."""
    original = Trainer.train_epoch

    def dying(self, epoch):
        if epoch == self.epochs:
            raise KeyboardInterrupt(f"killed in epoch {epoch}")
        return original(self, epoch)

    with monkeypatch.context() as patch:
        patch.setattr(Trainer, "train_epoch", dying)
        with pytest.raises(KeyboardInterrupt):
            train_run(features, run_dir, RUN, training(), HEAD, GH)
    return torch.load(run_dir / "checkpoints" / "last.pt", weights_only=False)


@pytest.mark.slow
def test_checkpoint_from_other_features_is_discarded_with_one_log_line(features_file, tmp_path, caplog, monkeypatch):
    run_dir = tmp_path / "r"
    old = interrupted_run(features_file, run_dir, monkeypatch)
    rebuilt = rewrite_features(features_file, tmp_path / "rebuilt.h5", input_size=48)
    with caplog.at_level(logging.WARNING):
        new = train_run(rebuilt, run_dir, RUN, training(), HEAD, GH)
    lines = [r.getMessage() for r in caplog.records if "checkpoint" in r.getMessage()]
    assert len(lines) == 1 and "other features" in lines[0] and "training from scratch" in lines[0], lines
    assert new["provenance"]["features_identity"] == store.identity(rebuilt) != old["provenance"]["features_identity"]
    assert new["final"] == train_run(rebuilt, tmp_path / "fresh", RUN, training(), HEAD, GH)["final"]
    state = torch.load(run_dir / "model_final.pt", weights_only=False)
    assert state["provenance"] == new["provenance"]
    assert not (run_dir / "checkpoints").exists()  # finished: no resume state left behind


@pytest.mark.slow
def test_same_identity_resumes_silently(features_file, tmp_path, caplog, monkeypatch):
    run_dir = tmp_path / "r"
    interrupted_run(features_file, run_dir, monkeypatch)
    with caplog.at_level(logging.INFO):
        train_run(features_file, run_dir, RUN, training(), HEAD, GH)
    assert any("resuming" in r.getMessage() for r in caplog.records)
    assert not any("discarding" in r.getMessage() for r in caplog.records)


def test_store_built_for_another_config_is_never_used(features_file, tmp_path):
    # what expected_attrs makes of a config: resolved precision, a weights file by name (its sha256 when given)
    cfg_backbone = {"arch": "mobilenet_v2", "weights": "/w/mine.pth", "weights_sha256": "AB", "input_size": 64}
    data = {"dataset": "cifar10", "split_seed": 3, "val_size": 5, "test_size": 6}
    assert store.expected_attrs({**cfg_backbone, "precision": "auto"}, data) == {
        "backbone": "mobilenet_v2",
        "weights_id": "file:mine.pth",
        "weights_sha256": "ab",
        "input_size": 64,
        "precision": "fp32",
        "dataset": "cifar10",
        "split_rule": "official train set; val 5 / test 6 of the official test set, seed 3",
    }
    # defaults resolved as extraction resolves them: the weights' own input size, DEFAULT's concrete weights
    resolved = store.expected_attrs(
        {"arch": "resnet18", "weights": "DEFAULT", "input_size": None, "precision": "bf16"}, data
    )
    assert (resolved["weights_id"], resolved["input_size"]) == ("torchvision:IMAGENET1K_V1", 224)
    expected = {"backbone": "synthetic", "weights_id": "synthetic", "input_size": 0, "precision": "fp32"}
    expected |= {"split_seed": 0, "split_sizes.val": 500, "split_sizes.test": 500}
    assert store.check_attrs(features_file, expected) == []
    with pytest.raises(DataError, match=r"input_size: file has 0, config wants 224.*Rebuild it: rm "):
        train_run(
            features_file, tmp_path / "r", RUN, training(), HEAD, GH, features_expected={**expected, "input_size": 224}
        )
    with pytest.raises(DataError, match=r"split_sizes.val: file has 500, config wants 400"):
        store.require_compatible(features_file, {**expected, "split_sizes.val": 400})
    assert not (tmp_path / "r").exists()


def test_store_without_identity_is_reported(features_file, tmp_path):
    old = tmp_path / "old.h5"
    shutil.copy(features_file, old)
    with h5py.File(old, "a") as f:
        del f.attrs["identity"]
        f.attrs["format_version"] = 1
    assert "Rebuild it: rm " in store.check_readable(old)
    with pytest.raises(DataError, match="no recorded identity"):
        train_run(old, tmp_path / "r", RUN, training(), HEAD, GH)


def test_exploded_finite_loss_is_divergence():
    params = torch.ones(3)
    assert divergence_reason(2.0, 2.1, params, initial_loss=2.3) is None
    assert divergence_reason(1e6, 646.0, params, initial_loss=2.43) == (
        f"loss exploded (train 1e+06, val 646: above 2.43e+03, {DIVERGENCE_LOSS_FACTOR:g} x the initial val loss 2.43)"
    )
    assert "loss exploded" in divergence_reason(1e19, 1e18, params, initial_loss=2.3)
    assert "loss exploded" in divergence_reason(2.3 * DIVERGENCE_LOSS_FACTOR * 1.01, 2.0, params, 2.3)
    assert "non-finite loss" in divergence_reason(float("nan"), 2.0, params, 2.3)
    assert "non-finite parameters" in divergence_reason(2.0, 2.0, torch.tensor([1.0, float("inf")]), 2.3)


LANDSCAPE = {
    "split": "val",
    "samples": 50,
    "resolution": 5,
    "span": 1.0,
    "ignore": "biasbn",
    "direction_seed": 0,
}
HESSIAN = {"samples": 50, "lanczos_steps": 3, "tol": 1e-4, "hutchinson_probes": 2}


def landscape_of(features, run_dir: Path, out_dir: Path) -> tuple[Path, Path]:
    """The landscape rule, then the sharpness rule, of one run."""
    from normscape.landscape.jobs import compute_landscape, compute_sharpness

    out_h5, out_json = out_dir / "landscape.h5", out_dir / "sharpness.json"
    files = [run_dir / name for name in ("model_final.pt", "model_init.pt", "trajectory.pt")]
    compute_landscape(*files, features, out_h5, LANDSCAPE, progress=False)
    compute_sharpness(files[0], features, out_h5, out_json, HESSIAN)
    return out_h5, out_json


@pytest.mark.slow
def test_huge_learning_rate_diverges_and_gets_no_hessian_numbers(features_file, tmp_path):
    run_dir = tmp_path / "r"
    summary = train_run(features_file, run_dir, RUN, training(lr=1e6), HEAD, GH)
    assert summary["diverged"] is True and summary["diverged_reason"], summary
    out_h5, out_json = landscape_of(features_file, run_dir, tmp_path)
    sharp = json.loads(out_json.read_text())
    assert sharp["diverged"] is True and sharp["reason"].startswith("the run diverged")
    assert sharp["top_eigenvalue"] is None and sharp["hessian_trace"] is None
    with h5py.File(out_h5) as f:
        assert f.attrs["status"] == "diverged" and "plane" not in f


@pytest.mark.slow
def test_landscape_figures_render_a_diverged_run_beside_a_finite_one(features_file, tmp_path):
    from normscape.figures.registry import render

    paths = []
    for head, lr in (("none", 1e-3), ("batch", 1e6)):
        run = {**RUN, "head": head}
        run_dir = tmp_path / "runs" / "convergence" / head / "base" / "seed0"
        train_run(features_file, run_dir, run, training(lr=lr), HEAD, GH)
        out = tmp_path / "landscapes" / "convergence" / head / "base" / "seed0"
        out.mkdir(parents=True)
        paths.append(str(landscape_of(features_file, run_dir, out)[0]))
    for name in ("fig5_landscape_surface", "fig5_landscape_contour", "fig5_trajectory_pca", "fig_landscape_1d"):
        render(name, {"landscapes": paths}, {"smoothing_window": 3}, tmp_path / f"{name}.pdf", tmp_path / f"{name}.png")
        assert (tmp_path / f"{name}.png").stat().st_size > 0


@pytest.mark.slow
def test_landscape_refuses_a_model_trained_on_other_features(features_file, tmp_path):
    run_dir = tmp_path / "r"
    train_run(features_file, run_dir, RUN, training(epochs=1), HEAD, GH)
    rebuilt = rewrite_features(features_file, tmp_path / "rebuilt.h5", input_size=48)
    with pytest.raises(DataError, match="its training is out of date"):
        landscape_of(rebuilt, run_dir, tmp_path)
    assert not (tmp_path / "landscape.h5").exists() and not (tmp_path / "sharpness.json").exists()


@pytest.mark.slow
def test_summary_table_refuses_sharpness_of_another_training(features_file, tmp_path):
    from normscape.reporting.summary_table import write_summary_table

    run_dir = tmp_path / "runs" / "e" / "batch" / "base" / "seed0"
    train_run(features_file, run_dir, RUN, training(epochs=1), HEAD, GH)
    out = tmp_path / "landscapes" / "e" / "batch" / "base" / "seed0"
    out.mkdir(parents=True)
    _, sharpness = landscape_of(features_file, run_dir, out)
    table = write_summary_table(
        [str(run_dir / "summary.json")], [str(sharpness)], tmp_path / "t.csv", tmp_path / "t.md"
    )
    assert table["top_eigenvalue_n"].tolist() == [1]
    record = json.loads(sharpness.read_text())
    record["provenance"]["run_identity"] = "0" * 16  # sharpness of an earlier training of this run
    sharpness.write_text(json.dumps(record))
    with pytest.raises(DataError, match="computed from another training of run e/batch/base/0"):
        write_summary_table([str(run_dir / "summary.json")], [str(sharpness)], tmp_path / "t.csv", tmp_path / "t.md")


@pytest.mark.slow
def test_smoothness_settings_are_part_of_the_run_identity(features_file, tmp_path, caplog, monkeypatch):
    """A probed run's identity covers the probe's settings: a checkpoint of other settings is discarded, never
    resumed; the probe's records land in smoothness.{h5,json}, and an unprobed run writes zero records."""
    probe = {"enabled": True, "every": 5, "multipliers": [0.5, 1.0], "direction": "update", "dtype": "float32"}
    run_dir = tmp_path / "r"
    original = Trainer.train_epoch

    def dying(self, epoch):
        if epoch == self.epochs:
            raise KeyboardInterrupt(f"killed in epoch {epoch}")
        return original(self, epoch)

    monkeypatch.setattr(Trainer, "train_epoch", dying)
    with pytest.raises(KeyboardInterrupt):
        train_run(features_file, run_dir, RUN, training(), HEAD, GH, probes={"smoothness": probe})
    monkeypatch.setattr(Trainer, "train_epoch", original)
    paths = (run_dir / "smoothness.h5", run_dir / "smoothness.json")
    with caplog.at_level(logging.INFO):
        summary = train_run(
            features_file,
            run_dir,
            RUN,
            training(),
            HEAD,
            GH,
            probes={"smoothness": {**probe, "every": 7}},
            probe_paths={"smoothness": paths},
        )
    assert not any("resuming" in r.getMessage() for r in caplog.records)  # other probe settings: fresh start
    plain = train_run(features_file, tmp_path / "p", RUN, training(), HEAD, GH)
    assert summary["provenance"]["identity"] != plain["provenance"]["identity"]
    assert summary["config"]["smoothness"]["every"] == 7
    steps = 2 * -(-2000 // 64)  # epochs x batches of the synthetic cache's 2,000 training rows
    assert json.loads(paths[1].read_text())["probes"] == len(range(0, steps, 7))
    unprobed = (tmp_path / "u" / "smoothness.h5", tmp_path / "u" / "smoothness.json")
    train_run(features_file, tmp_path / "u", RUN, training(), HEAD, GH, probe_paths={"smoothness": unprobed})
    assert json.loads(unprobed[1].read_text())["probes"] == 0
