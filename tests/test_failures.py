"""Failure behaviour through the real CLI: one clear message naming the problem and the fix, non-zero exit,
no traceback for user errors, finished outputs untouched. (Stage-level cases live beside their stages:
test_cifar.py, test_features.py, test_train.py, test_tracking.py.)"""

from __future__ import annotations

import copy

import pytest
from conftest import run_snakemake, write_config


def failing(cfg_or_text, tmp_path, target="all", dry=True):
    path = tmp_path / "config.yaml"
    if isinstance(cfg_or_text, str):
        path.write_text(cfg_or_text)
    else:
        write_config(cfg_or_text, path)
    args = (["-n"] if dry else ["--cores", "1"]) + [target]
    proc = run_snakemake(args, configfile=path, check=False)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0, out[-2000:]
    return out


def edit(cfg, dotted, value):
    cfg = copy.deepcopy(cfg)
    node = cfg
    *parents, last = dotted.split(".")
    for key in parents:
        node = node.setdefault(key, {})
    node[last] = value
    return cfg


@pytest.mark.parametrize(
    "dotted,value,expect",
    [
        ("training.lrate", 0.1, "unknown key(s) ['lrate']"),
        ("experiments.convergence.lr", "fast", "'experiments.convergence.lr'"),
        ("experiments.convergence.lr", -0.001, "must be > 0"),
        ("training.batch_size", 0, "'training.batch_size': value 0 is out of range"),
        ("experiments.convergence.heads", ["none", "weightnorm"], "'weightnorm' is not allowed"),
        ("experiments.convergence.heads", [], "'experiments.convergence.heads': the list is empty"),
        ("landscape.experiments", ["nope"], "experiment 'nope' is not defined"),
        ("backbone.precision", "fp8", "choose one of ['auto', 'fp32', 'bf16']"),
    ],
)
def test_invalid_config_is_rejected_before_any_job(tiny_config, tmp_path, dotted, value, expect):
    out = failing(edit(tiny_config, dotted, value), tmp_path)
    assert expect in out and "Traceback" not in out
    assert not (tmp_path / "results").exists()


def test_malformed_yaml(tmp_path):
    out = failing("data: {archive: [unclosed\n", tmp_path)
    # Snakemake parses --configfile itself and reports it without a traceback
    assert "not valid JSON or YAML" in out and "Traceback" not in out


def test_missing_local_archive_names_the_key(tiny_config, tmp_path):
    out = failing(edit(tiny_config, "data.archive", str(tmp_path / "nope.tar.gz")), tmp_path)
    assert "data.archive" in out and "does not exist" in out and "Traceback" not in out


def test_missing_weights_file_names_the_key(tiny_config, tmp_path):
    out = failing(edit(tiny_config, "backbone.weights", str(tmp_path / "w.pth")), tmp_path)
    assert "backbone.weights" in out and "Traceback" not in out


@pytest.mark.slow
def test_checksum_mismatch_fails_the_job_cleanly_and_leaves_no_output(tiny_config, tmp_path):
    cfg = edit(tiny_config, "data.checksum", "md5:" + "0" * 32)
    out = failing(cfg, tmp_path, target=f"{cfg['results_dir']}/data/cifar10.h5", dry=False)
    assert "checksum mismatch" in out and "data.checksum" in out
    assert "Traceback" not in out
    from pathlib import Path

    assert not Path(cfg["results_dir"], "data", "cifar10.h5").exists()


@pytest.mark.slow
def test_unreachable_download_explains_offline_use(tiny_config, tmp_path):
    cfg = edit(edit(tiny_config, "data.archive", None), "data.url", "http://127.0.0.1:9/cifar-10-python.tar.gz")
    out = failing(cfg, tmp_path, target=f"{cfg['results_dir']}/data/cifar-10-python.tar.gz", dry=False)
    assert "could not download" in out and "data.archive" in out and "Traceback" not in out


@pytest.mark.slow
def test_a_failing_job_leaves_finished_outputs_untouched(tiny_workflow, tmp_path):
    path, cfg, results = tiny_workflow
    features = results / "features" / "features.h5"
    summary = results / "runs" / "convergence" / "none" / "base" / "seed0" / "summary.json"
    before = {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in (features, summary)}
    # A new experiment whose run directory cannot be created (a file is in the way): its job fails.
    broken = edit(cfg, "experiments.extra", {"heads": ["layer"], "lr": 1e-3})
    blocker = results / "runs" / "extra"
    blocker.write_text("not a directory")  # the new run cannot create its directory: the job fails
    try:
        out = failing(broken, tmp_path, target="all", dry=False)
        assert "extra" in out
    finally:
        blocker.unlink()
    for p, (mtime, data) in before.items():
        assert p.stat().st_mtime_ns == mtime and p.read_bytes() == data
