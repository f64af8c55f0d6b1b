"""A full disk: every writer (JSON, HDF5, torch.save, figures, the workflow's jobs) ends with one message naming
the directory, what is free and what the write needed — no traceback, no temp file, finished outputs kept.

A real full file system: a small tmpfs (needs root, as CI has; skipped elsewhere)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pytest
from conftest import run_snakemake, write_config

from normscape.pipeline.errors import DiskFullError


def mount_tmpfs(path: Path, size: str) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True)
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {proc.stderr.decode().strip()}")
    return path


@pytest.fixture
def small_disk(tmp_path):
    disk = mount_tmpfs(tmp_path / "disk", "1m")
    yield disk
    subprocess.run(["umount", "-l", str(disk)], check=False)


def write_h5(path):
    import h5py

    from normscape.pipeline.atomic import atomic_path

    with atomic_path(path, suffix=".h5") as tmp, h5py.File(tmp, "w") as f:
        f.create_dataset("x", data=np.random.default_rng(0).random(400_000))


def write_pt(path):
    import torch

    from normscape.pipeline.atomic import atomic_path

    with atomic_path(path, suffix=".pt") as tmp:
        torch.save({"x": torch.rand(400_000)}, tmp)


def write_json(path):
    from normscape.pipeline.atomic import write_json

    write_json(path, {"values": list(range(300_000))})


def write_figure(path):
    from normscape.figures.style import plt, save

    fig, ax = plt.subplots(figsize=(20, 20))
    ax.imshow(np.random.default_rng(0).random((1000, 1000)))
    save(fig, path.with_suffix(".pdf"), path.with_suffix(".png"))


@pytest.mark.parametrize("writer", [write_h5, write_pt, write_json, write_figure], ids=lambda w: w.__name__)
def test_every_writer_reports_a_full_disk_in_one_message(small_disk, writer):
    finished = small_disk / "finished.json"
    finished.write_text("{}")
    target = small_disk / "run" / "output.bin"
    with pytest.raises(DiskFullError) as err:
        writer(target)
    message = str(err.value)
    assert message.startswith(f"no space left on the device of {target.parent} (") and "MB free there" in message
    assert "set results_dir to a disk with room" in message
    assert not [p for p in small_disk.rglob("*") if p.name.endswith(".tmp")]
    assert finished.read_text() == "{}"


@pytest.mark.slow
def test_the_workflow_on_a_full_disk_ends_with_one_message_per_job(tiny_config, tmp_path):
    disk = mount_tmpfs(tmp_path / "disk", "3m")
    try:
        cfg = {**tiny_config, "results_dir": str(disk / "results")}
        cfg["experiments"] = {"convergence": {"heads": ["none", "batch"], "lr": 2.0e-3}}
        proc = run_snakemake(["all", "--cores", "2"], configfile=write_config(cfg, tmp_path / "c.yaml"), check=False)
        out = proc.stdout + proc.stderr
        assert proc.returncode != 0
        assert "Traceback" not in out and "unexpected error" not in out, out[-4000:]
        assert f"no space left on the device of {disk}/results/" in out, out[-4000:]
        assert not [p for p in disk.rglob("*") if p.name.endswith(".tmp")]
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=False)
