"""Snakemake's scheduling wake-ups: one pending at a time (normscape.snakemake_scheduling), on the installed
Snakemake's own JobScheduler and in a real workflow run."""

from __future__ import annotations

import re
import subprocess
import sys
import threading
import time
from pathlib import Path

from normscape.snakemake_scheduling import (
    PATCHED_METHOD,
    _schedule_one_reevaluation,
    coalesce_reevaluations,
    scheduler_class,
)

REPO = Path(__file__).resolve().parents[1]


class StandIn:
    """What the replacement touches on a JobScheduler: its ``_open_jobs`` semaphore."""

    def __init__(self):
        self._open_jobs = threading.Semaphore(0)


def releases(semaphore: threading.Semaphore) -> int:
    count = 0
    while semaphore.acquire(blocking=False):
        count += 1
    return count


def test_the_installed_snakemake_scheduler_is_patched():
    """Fails when a Snakemake release moves or renames the method: then look at its loop again."""
    cls = scheduler_class()
    assert cls is not None and cls.__name__ == "JobScheduler"
    assert coalesce_reevaluations() is True
    assert getattr(cls, PATCHED_METHOD) is _schedule_one_reevaluation
    assert coalesce_reevaluations() is True  # idempotent
    assert coalesce_reevaluations(type("NoScheduler", (), {})) is False


def test_requests_while_one_is_pending_are_served_by_it():
    scheduler = StandIn()
    for _ in range(50):
        _schedule_one_reevaluation(scheduler, 0.2)
    timers = [t for t in threading.enumerate() if isinstance(t, threading.Timer) and t.is_alive()]
    assert len(timers) == 1 and timers[0].daemon
    timers[0].join(5)
    assert releases(scheduler._open_jobs) == 1
    # the pass that release causes arms the next wake-up: the chain goes on, one link at a time
    _schedule_one_reevaluation(scheduler, 0.05)
    deadline = time.monotonic() + 5
    while not scheduler._open_jobs.acquire(timeout=0.05):
        assert time.monotonic() < deadline, "the next wake-up never came"
    assert releases(scheduler._open_jobs) == 0


def test_schedulers_do_not_share_a_pending_wake_up():
    first, second = StandIn(), StandIn()
    _schedule_one_reevaluation(first, 0.05)
    _schedule_one_reevaluation(second, 0.05)
    assert first._open_jobs.acquire(timeout=5) and second._open_jobs.acquire(timeout=5)


def scheduling_passes(tmp_path: Path, coalesced: bool) -> tuple[int, int]:
    """(scheduling passes that found ready jobs, finished jobs) of a workflow of 16 half-second jobs on 2 cores,
    with the wake-up every 0.1 s instead of Snakemake's default 1 s (the same growth, ten times as fast; set on
    Snakemake's rate limiter: `--max-jobs-per-timespan 1000/100ms` parses as 100 minutes)."""
    workdir = tmp_path / ("coalesced" if coalesced else "snakemake")
    workdir.mkdir()
    patch = (
        f"import sys\nsys.path.insert(0, {str(REPO / 'src')!r})\n"
        "from normscape.snakemake_scheduling import coalesce_reevaluations\ncoalesce_reevaluations()\n"
        if coalesced
        else ""
    )
    (workdir / "Snakefile").write_text(
        patch + "from snakemake.scheduling.job_scheduler import JobRateLimiter\n"
        "JobRateLimiter.timespan = property(lambda self: 0.1)\n\n"
        'rule all:\n    input: expand("out/{i}", i=range(16))\n\n'
        'rule one:\n    output: "out/{i}"\n    threads: 1\n    shell: "sleep 0.5; touch {output}"\n'
    )
    done = subprocess.run(
        [sys.executable, "-m", "snakemake", "--cores", "2", "--verbose", "--workflow-profile", "none"]
        + ["--max-jobs-per-timespan", "1000/1s", "all"],
        cwd=workdir,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return len(re.findall(r"Ready jobs", done.stderr)), done.stderr.count("Finished jobid")


def test_a_workflow_wakes_its_scheduler_once_per_timespan_not_once_per_finished_job(tmp_path):
    ours, finished = scheduling_passes(tmp_path, coalesced=True)
    theirs, finished_too = scheduling_passes(tmp_path, coalesced=False)
    assert finished == finished_too == 17
    # Snakemake's own loop: one more 0.1 s chain per finished job while jobs wait (hundreds of passes); ours: one
    # pass per finished job plus one per 0.1 s
    assert ours < theirs / 2, (ours, theirs)
