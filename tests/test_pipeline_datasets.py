"""CIFAR-100 and a user's ImageFolder tree through the real Snakemake workflow on the tiny config, end to end:
data -> features -> training -> landscape + sharpness -> a figure and the summary table."""

from __future__ import annotations

import json

import h5py
import pandas as pd
import pytest
import torch
from conftest import run_snakemake, write_config

from normscape.data.synthetic import make_cifar100_archive, make_image_folder
from normscape.features import store

pytestmark = pytest.mark.slow


def small_study(tiny_config: dict, data: dict) -> dict:
    """The tiny config on another dataset, one experiment (two heads) to keep CI short."""
    cfg = {**tiny_config, "data": {**tiny_config["data"], **data}}
    cfg["experiments"] = {"convergence": {"heads": ["batch", "rms"], "lr": 2e-3}}
    return cfg


def check_study(cfg: dict, path, num_classes: int, class_names: list[str] | None = None) -> None:
    results, heads = cfg["results_dir"], cfg["experiments"]["convergence"]["heads"]
    # every stage's output, not `all` (whose diagnostics and report add nothing dataset-specific)
    sharpness = [f"{results}/landscapes/convergence/{head}/base/seed0/sharpness.json" for head in heads]
    targets = [f"{results}/tables/summary.csv", f"{results}/figures/fig5_landscape_contour.png", *sharpness]
    run_snakemake([*targets, "--cores", "2"], configfile=path)
    attrs = store.read_attrs(f"{results}/features/features.h5")
    assert attrs["dataset"] == cfg["data"]["dataset"] and attrs["num_classes"] == num_classes
    assert attrs["data_checksum"].startswith("sha256:") and attrs["feature_dim"] == 512
    if class_names:
        assert attrs["class_names"] == class_names
    for head in heads:
        run = f"{results}/runs/convergence/{head}/base/seed0"
        state = torch.load(f"{run}/model_final.pt", weights_only=False)
        assert state["head_config"]["num_classes"] == num_classes
        summary = json.loads(open(f"{run}/summary.json").read())
        assert 0 <= summary["final"]["test_acc"] <= 1
        sharp = json.loads(open(f"{results}/landscapes/convergence/{head}/base/seed0/sharpness.json").read())
        assert sharp["top_eigenvalue"] > 0
        with h5py.File(f"{results}/landscapes/convergence/{head}/base/seed0/landscape.h5") as f:
            assert f["plane/loss"].shape == (5, 5)
    table = pd.read_csv(f"{results}/tables/summary.csv")
    assert sorted(table["head"]) == ["batch", "rms"]
    assert open(f"{results}/figures/fig5_landscape_contour.png", "rb").read(4) == b"\x89PNG"


def test_cifar100_end_to_end(tiny_config, tmp_path):
    archive = make_cifar100_archive(tmp_path / "cifar-100-python.tar.gz", n_train=300, n_test=120)
    cfg = small_study(tiny_config, {"dataset": "cifar100", "archive": str(archive), "val_size": 60, "test_size": 60})
    check_study(cfg, write_config(cfg, tmp_path / "c.yaml"), num_classes=100)
    assert (tmp_path / "results" / "logs" / "prepare_data.log").is_file()
    assert not (tmp_path / "results" / "data" / "cifar100.h5").exists()  # temporary: removed after extraction


def test_image_folder_end_to_end(tiny_config, tmp_path):
    root = make_image_folder(tmp_path / "my_images", per_class=30)
    data = {"dataset": "imagefolder", "archive": None, "root": str(root), "image_size": 32}
    cfg = small_study(tiny_config, {**data, "val_fraction": 0.2, "test_fraction": 0.2})
    check_study(cfg, write_config(cfg, tmp_path / "c.yaml"), num_classes=3, class_names=["cat", "dog", "fox"])
    log = (tmp_path / "results" / "logs" / "prepare_data.log").read_text()
    assert "converted 18 image(s) to RGB" in log  # the stated handling of mixed image modes, in the rule's log


def test_sixteen_bit_images_are_rescaled_not_saturated_and_looping_links_counted(tiny_config, tmp_path):
    """An ImageFolder of 16-bit grey PNGs through the data rule: each prepared image equals the 8-bit version of
    the same picture (before: every pixel above 255/65535 of full scale became white)."""
    import numpy as np
    from PIL import Image

    from normscape.data.datasets import load_prepared

    root = make_image_folder(tmp_path / "deep", per_class=12, mixed_modes=False)
    references = {}
    for path in sorted(root.rglob("*.png")):
        grey = np.asarray(Image.open(path).convert("L"))
        Image.fromarray(grey.astype(np.uint16) * 257).save(path)  # 16-bit: 0..65535
        references[path.relative_to(root).as_posix()] = np.asarray(Image.fromarray(grey).convert("RGB"))
    (root / "cat" / "loop.png").symlink_to(root / "cat" / "loop.png")  # a link in a circle: skipped, counted
    data = {"dataset": "imagefolder", "archive": None, "root": str(root), "image_size": 40}
    cfg = small_study(tiny_config, {**data, "val_fraction": 0.25, "test_fraction": 0.25})
    target = f"{cfg['results_dir']}/data/imagefolder.h5"
    run_snakemake([target, "--cores", "1"], configfile=write_config(cfg, tmp_path / "c.yaml"))
    prepared = load_prepared(target)
    files = sorted(references)  # indices are positions in the sorted file list
    for split in ("train", "val", "test"):
        images, _, indices = prepared[split]
        for image, index in zip(images, indices):
            assert np.array_equal(image, references[files[index]]), files[index]
    log = (tmp_path / "results" / "logs" / "prepare_data.log").read_text()
    assert "rescaled 36 image(s) of more than 8 bits" in log, log
    assert "skipped 1 link(s)" in log and "lead nowhere or in a circle" in log
