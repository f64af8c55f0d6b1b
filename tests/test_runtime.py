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
