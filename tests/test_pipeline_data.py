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

from normscape import featurestore
from normscape.cifar import read_archive

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
        x, y = featurestore.load_split(target, split)
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
