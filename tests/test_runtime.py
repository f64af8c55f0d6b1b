"""Job runtime settings: the allocator tuning removes page-fault churn, thread counts respect the CPU set."""

from __future__ import annotations

import os

import pytest

from normscape.runtime import available_cpus, set_threads


@pytest.mark.skipif(not os.uname().sysname == "Linux", reason="glibc allocator settings")
def test_tuned_allocator_stops_refaulting_large_activations():
    # 160 px: the expanded activations of a batch of 16 (16 x 96 x 80 x 80 floats, 39 MB) exceed glibc's largest
    # mmap threshold, so with the defaults every batch maps them afresh and faults them in page by page.
    from benchmarks.bench_allocator import probe

    default = probe("default", 32, 160, 1, None)
    tuned = probe("tuned", 32, 160, 1, None)
    assert tuned["tuned"] and not default["tuned"]
    assert default["minor_faults_per_image"] > 200
    assert tuned["minor_faults_per_image"] < default["minor_faults_per_image"] / 10


def test_threads_capped_by_the_cpus_the_job_may_use():
    import torch

    before = torch.get_num_threads()
    try:
        assert set_threads(10_000) == available_cpus() == len(os.sched_getaffinity(0))
        assert set_threads(1) == 1 and torch.get_num_threads() == 1
        assert set_threads(0) == 1
    finally:
        torch.set_num_threads(before)


def test_local_cores_capped_at_the_cpus(monkeypatch, capsys):
    from snakemake.resources import Resource

    from normscape.runtime import OVERSUBSCRIBE_ENV, limit_cores

    monkeypatch.delenv(OVERSUBSCRIBE_ENV, raising=False)
    resources = {"_cores": Resource("_cores", 8), "_nodes": Resource("_nodes", None)}
    assert limit_cores(resources, cpus=2) == 2
    assert isinstance(resources["_cores"], Resource) and resources["_cores"].value == 2
    assert "--cores 8 is more than the 2 CPUs" in capsys.readouterr().err
    plain = {"_cores": 8}  # older Snakemake: a plain int
    assert limit_cores(plain, cpus=3) == 3 and plain["_cores"] == 3
    cluster = {"_cores": Resource("_cores", 64), "_nodes": Resource("_nodes", 100)}  # --jobs of a cluster profile
    for unchanged in ({"_cores": Resource("_cores", 2)}, {"_cores": 1}, {"_cores": None}, cluster):
        before = dict(unchanged)
        assert limit_cores(unchanged, cpus=2) is None and unchanged == before
    monkeypatch.setenv(OVERSUBSCRIBE_ENV, "1")
    kept = {"_cores": 8}
    assert limit_cores(kept, cpus=2) is None and kept["_cores"] == 8


@pytest.mark.slow
def test_snakemake_run_with_more_cores_than_cpus_says_it_caps(tiny_config, tmp_path):
    from conftest import run_snakemake, write_config

    path = write_config(tiny_config, tmp_path / "c.yaml")
    many = available_cpus() + 6
    proc = run_snakemake(["-n", "all", "--cores", str(many)], configfile=path)
    assert f"--cores {many} is more than the {available_cpus()} CPUs" in proc.stderr
    proc = run_snakemake(["-n", "all", "--cores", str(available_cpus())], configfile=path)
    assert "is more than the" not in proc.stderr
