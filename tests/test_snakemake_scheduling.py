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
    _PENDING,
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


def test_the_installed_snakemake_scheduler_is_patched(monkeypatch):
    """Fails when a Snakemake release moves or renames the method: then look at its loop again."""
    cls = scheduler_class()
    assert cls is not None and cls.__name__ == "JobScheduler"
    monkeypatch.setattr(cls, PATCHED_METHOD, getattr(cls, PATCHED_METHOD))  # restored after the test
    assert coalesce_reevaluations() is True
    assert getattr(cls, PATCHED_METHOD) is _schedule_one_reevaluation
    assert coalesce_reevaluations() is True  # idempotent
    assert coalesce_reevaluations(type("NoScheduler", (), {})) is False


def pending(scheduler) -> threading.Timer | None:
    entry = getattr(scheduler, _PENDING, None)
    return entry[0] if entry else None


def test_requests_while_one_is_pending_are_served_by_it():
    scheduler = StandIn()
    _schedule_one_reevaluation(scheduler, 0.2)
    first = pending(scheduler)
    for _ in range(50):
        _schedule_one_reevaluation(scheduler, 0.2)
    assert pending(scheduler) is first and first.daemon
    first.join(5)
    assert releases(scheduler._open_jobs) == 1 and pending(scheduler) is None
    # the pass that release causes arms the next wake-up: the chain goes on, one link at a time
    _schedule_one_reevaluation(scheduler, 0.05)
    deadline = time.monotonic() + 5
    while not scheduler._open_jobs.acquire(timeout=0.05):
        assert time.monotonic() < deadline, "the next wake-up never came"
    assert releases(scheduler._open_jobs) == 0


def test_an_earlier_wake_up_replaces_a_later_pending_one():
    """A 1 s rate-limit wake-up asked while Snakemake's 10 s queue-input wake-up waits is not delayed to 10 s."""
    scheduler = StandIn()
    _schedule_one_reevaluation(scheduler, 60)
    late = pending(scheduler)
    _schedule_one_reevaluation(scheduler, 0.05)
    assert pending(scheduler) is not late and not late.is_alive()
    assert scheduler._open_jobs.acquire(timeout=5)
    assert pending(scheduler) is None


def test_schedulers_do_not_share_a_pending_wake_up():
    first, second = StandIn(), StandIn()
    _schedule_one_reevaluation(first, 0.05)
    _schedule_one_reevaluation(second, 0.05)
    assert first._open_jobs.acquire(timeout=5) and second._open_jobs.acquire(timeout=5)


def run_workflow(workdir: Path, coalesced: bool, jobs: int, job_s: float, limit: str, timespan_s: float | None):
    """Snakemake's stderr (--verbose) for a workflow of ``jobs`` jobs of ``job_s`` seconds on 2 cores with
    ``--max-jobs-per-timespan limit``; ``timespan_s`` overrides the wake-up period on Snakemake's rate limiter
    (`--max-jobs-per-timespan 1000/100ms` parses as 100 minutes)."""
    workdir.mkdir()
    setup = ""
    if coalesced:
        setup += (
            f"import sys\nsys.path.insert(0, {str(REPO / 'src')!r})\n"
            "from normscape.snakemake_scheduling import coalesce_reevaluations\ncoalesce_reevaluations()\n"
        )
    if timespan_s is not None:
        setup += (
            "from snakemake.scheduling.job_scheduler import JobRateLimiter\n"
            f"JobRateLimiter.timespan = property(lambda self: {timespan_s})\n"
        )
    (workdir / "Snakefile").write_text(
        f'{setup}\nrule all:\n    input: expand("out/{{i}}", i=range({jobs}))\n\n'
        f'rule one:\n    output: "out/{{i}}"\n    threads: 1\n    shell: "sleep {job_s}; touch {{output}}"\n'
    )
    done = subprocess.run(
        [sys.executable, "-m", "snakemake", "--cores", "2", "--verbose", "--workflow-profile", "none"]
        + ["--max-jobs-per-timespan", limit, "all"],
        cwd=workdir,
        capture_output=True,
        text=True,
        timeout=300,  # a scheduler that lost its wake-up stalls: a timeout, not a hang
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stderr


def test_a_workflow_wakes_its_scheduler_once_per_timespan_not_once_per_finished_job(tmp_path):
    """16 half-second jobs on 2 cores, the wake-up every 0.1 s instead of Snakemake's 1 s (the same growth, ten
    times as fast): Snakemake's own loop adds one more 0.1 s chain per finished job while jobs wait (hundreds of
    passes); ours makes one pass per finished job plus one per 0.1 s."""
    passes, finished = {}, {}
    for coalesced in (True, False):
        log = run_workflow(tmp_path / str(coalesced), coalesced, 16, 0.5, "1000/1s", timespan_s=0.1)
        passes[coalesced], finished[coalesced] = len(re.findall("Ready jobs", log)), log.count("Finished jobid")
    assert finished[True] == finished[False] == 17
    assert passes[True] < passes[False] / 2, passes


def test_rate_limited_jobs_are_still_submitted(tmp_path):
    """The wake-ups exist for the rate limit: 12 instant jobs at 2 per second all run (a lost wake-up stalls)."""
    log = run_workflow(tmp_path / "limited", True, 12, 0, "2/1s", timespan_s=None)
    assert log.count("Finished jobid") == 13
    assert "Job rate limit reached" in log


def test_the_workflow_applies_it_before_scheduling():
    """common.smk calls it at parse time, outside any rule or function (the scheduler is built after parsing)."""
    common = (REPO / "workflow" / "rules" / "common.smk").read_text()
    assert re.search(r"^coalesce_reevaluations\(\)$", common, re.MULTILINE)
