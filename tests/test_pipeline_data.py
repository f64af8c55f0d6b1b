"""Snakemake smoke tests of the data + feature stages alone, through the real CLI on the tiny config.

The whole-DAG run lives in test_pipeline.py; these target only `results/features/features.h5` so a break in the
first two stages is reported as such, and they check the failure behaviour of the CLI (clean error, no partial
output) that unit tests cannot see.
"""

from __future__ import annotations

import h5py
import numpy as np
import pytest
from conftest import run_snakemake, write_config

from normscape.data.cifar import read_archive
from normscape.features import store

pytestmark = pytest.mark.slow


def test_data_and_features_stage_produce_the_cache(tiny_config, tmp_path, synthetic_archive):
    path = write_config(tiny_config, tmp_path / "config.yaml")
    results = tmp_path / "results"
    target = results / "features" / "features.h5"
    run_snakemake([str(target), "--cores", "2"], configfile=path)

    # Only the two stages ran: nothing from training exists.
    assert not (results / "runs").exists()
    data = tiny_config["data"]
    with h5py.File(target, "r") as f:
        n_train = f["train/features"].shape[0]
        for split, n in (("val", data["val_size"]), ("test", data["test_size"])):
            assert f[f"{split}/features"].shape == (n, 512)
            assert f[f"{split}/features"].dtype == np.float32
        attrs = dict(f.attrs)
    assert attrs["backbone"] == "resnet18" and attrs["dataset"] == "cifar10" and attrs["num_classes"] == 10
    assert int(attrs["input_size"]) == tiny_config["backbone"]["input_size"]
    assert attrs["precision"] == "fp32"

    # Labels and source indices agree with the archive read independently of the pipeline.
    arrays = read_archive(synthetic_archive)
    assert n_train == len(arrays["train"][1])
    for split in ("train", "val", "test"):
        x, y = store.load_split(target, split)
        with h5py.File(target, "r") as f:
            idx = f[f"{split}/indices"][:]
        source = arrays["train"][1] if split == "train" else arrays["test"][1]
        np.testing.assert_array_equal(y, source[idx])
        assert np.isfinite(x).all() and x.std() > 0
    with h5py.File(target, "r") as f:
        assert not set(f["val/indices"][:]) & set(f["test/indices"][:])

    # A second invocation has nothing to do.
    proc = run_snakemake([str(target), "--cores", "2", "-n"], configfile=path)
    assert "Nothing to be done" in proc.stdout + proc.stderr


def test_sharded_extraction_equals_the_unsharded_file(tiny_config, tmp_path):
    """features.shards = 3 (single-thread shard jobs, merged) gives the unsharded 2-thread file bit for bit."""
    stores = {}
    for shards in (1, 3):
        cfg = {**tiny_config, "results_dir": str(tmp_path / f"shards{shards}"), "features": {"shards": shards}}
        path = write_config(cfg, tmp_path / f"config{shards}.yaml")
        target = tmp_path / f"shards{shards}" / "features" / "features.h5"
        proc = run_snakemake([str(target), "--cores", "2"], configfile=path)
        stores[shards] = target
        if shards > 1:
            assert proc.stderr.count("rule extract_features:") == shards, proc.stderr[-3000:]
            assert "rule merge_features:" in proc.stderr
            # the parts are temporary: only the merged file stays
            assert not list((tmp_path / f"shards{shards}" / "features").rglob("part*.h5"))
            assert run_snakemake([str(target), "--cores", "2", "-n"], configfile=path).stdout.count("rule ") == 0
    whole, merged = (store.read_attrs(stores[s]) for s in (1, 3))
    assert "shard" not in merged
    for attrs in (whole, merged):
        attrs.pop("created")
    assert merged == whole  # identity, split sizes and fingerprint included
    assert whole["identity"]
    with h5py.File(stores[1], "r") as a, h5py.File(stores[3], "r") as b:
        for split in ("train", "val", "test"):
            for key in ("features", "labels", "indices"):
                x, y = a[f"{split}/{key}"][()], b[f"{split}/{key}"][()]
                assert x.dtype == y.dtype and x.shape == y.shape
                assert x.tobytes() == y.tobytes(), f"{split}/{key} differs"
