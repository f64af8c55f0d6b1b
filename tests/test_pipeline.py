"""The real Snakemake workflow on the tiny config: runs end to end, reruns only what a config edit touches."""

from __future__ import annotations

import re

import h5py
import pytest
from conftest import run_snakemake, write_config

pytestmark = pytest.mark.slow


def planned_jobs(proc) -> dict[str, int]:
    """Job counts per rule from a dry run's summary table."""
    jobs = {}
    for line in proc.stdout.splitlines():
        m = re.match(r"^(\w+)\s+(\d+)$", line.strip())
        if m and m.group(1) != "total":
            jobs[m.group(1)] = int(m.group(2))
    return jobs


def test_tiny_workflow_produces_every_stage(tiny_workflow):
    _, cfg, results = tiny_workflow
    with h5py.File(results / "features" / "features.h5") as f:
        assert f["train/features"].shape == (200, 1280)
        assert f["val/features"].shape == (60, 1280) and f["test/features"].shape == (40, 1280)
    runs = sorted(p.parent.relative_to(results / "runs").as_posix() for p in (results / "runs").rglob("summary.json"))
    assert runs == [
        "convergence/batch/base/seed0",
        "convergence/none/base/seed0",
        "lr_sweep/none/lr-0.001/seed0",
        "lr_sweep/none/lr-0.01/seed0",
    ]


def test_completed_workflow_has_nothing_to_do(tiny_workflow):
    path, _, _ = tiny_workflow
    proc = run_snakemake(["-n", "all"], configfile=path)
    assert "Nothing to be done" in proc.stdout + proc.stderr


def test_editing_one_experiment_reruns_only_its_jobs(tiny_workflow, tmp_path):
    path, cfg, _ = tiny_workflow
    cfg = {
        **cfg,
        "experiments": {**cfg["experiments"], "convergence": {**cfg["experiments"]["convergence"], "lr": 5e-3}},
    }
    edited = write_config(cfg, tmp_path / "edited.yaml")
    proc = run_snakemake(["-n", "all"], configfile=edited)
    jobs = planned_jobs(proc)
    assert jobs.get("train") == 2, proc.stdout  # the two convergence runs, not the lr_sweep runs
    assert "extract_features" not in jobs and "prepare_cifar10" not in jobs
    assert "lr_sweep" not in " ".join(line for line in proc.stdout.splitlines() if "output:" in line)


def test_editing_backbone_rebuilds_features_and_everything_after(tiny_workflow, tmp_path):
    path, cfg, _ = tiny_workflow
    cfg = {**cfg, "backbone": {**cfg["backbone"], "input_size": 96}}
    jobs = planned_jobs(run_snakemake(["-n", "all"], configfile=write_config(cfg, tmp_path / "b.yaml")))
    assert jobs.get("extract_features") == 1 and jobs.get("train") == 4 and "prepare_cifar10" not in jobs


def test_targeting_one_run_schedules_only_its_jobs(tiny_config, tmp_path):
    path = write_config(tiny_config, tmp_path / "c.yaml")
    target = f"{tiny_config['results_dir']}/runs/lr_sweep/none/lr-0.01/seed0/summary.json"
    jobs = planned_jobs(run_snakemake(["-n", target], configfile=path))
    assert jobs == {"prepare_cifar10": 1, "extract_features": 1, "train": 1}
