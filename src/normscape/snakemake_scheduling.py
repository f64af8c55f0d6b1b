"""One pending scheduling re-evaluation at a time in Snakemake's job scheduler (a workaround, applied by
workflow/rules/common.smk to the process that runs the workflow).

Snakemake (9.0 to at least 9.27) ends every pass of its scheduling loop that found ready jobs by arming a
``threading.Timer`` that wakes the loop again after the ``--max-jobs-per-timespan`` timespan (default 1 s), so
that a rate-limited job is submitted later. The timer's own pass arms the next one, and so does every pass
caused by a finished job: each job that finishes while other jobs wait for a free core starts one more
self-renewing chain. Passes per second grow with the number of finished jobs (in a workflow of 40 two-second
jobs on 2 cores: 1, 3, 5, ... 37 passes per 2 s, 752 passes in all), and each pass re-evaluates every waiting
job's params and resources and checks all their input files. In the default study (149 jobs, ~60 of them
waiting while the trainings run) that CPU, a third of it system time, is taken from the jobs (measured: README,
cost of the default study). The timers are also non-daemon threads, so the process waits for the last one
before it exits.

:func:`coalesce_reevaluations` keeps Snakemake's semantics — after a pass that found ready jobs, another pass
comes within the timespan — with at most one pending timer per scheduler (a daemon thread). The pass the timer
causes arms the next one, as before; a request while one is pending is served by it, unless it asks for an
earlier wake-up (then that one replaces it).
"""

from __future__ import annotations

import importlib
import threading
import time

# Where JobScheduler lives: snakemake.scheduling.job_scheduler from 9.x (at least 9.27), snakemake.scheduler
# in 9.0.
SCHEDULER_MODULES = ("snakemake.scheduling.job_scheduler", "snakemake.scheduler")
PATCHED_METHOD = "_schedule_reevalutation"  # sic, Snakemake's spelling
_PENDING = "_normscape_pending_reevaluation"
_LOCK = threading.Lock()


def scheduler_class() -> type | None:
    """Snakemake's JobScheduler class, or None when this Snakemake has none we know."""
    for name in SCHEDULER_MODULES:
        try:
            cls = getattr(importlib.import_module(name), "JobScheduler", None)
        except ImportError:
            continue
        if cls is not None and callable(getattr(cls, PATCHED_METHOD, None)):
            return cls
    return None


def _schedule_one_reevaluation(self, delay: float) -> None:
    """Release the scheduler's ``_open_jobs`` semaphore after ``delay`` seconds unless a release is pending that
    comes no later (an earlier request, e.g. a 1 s rate-limit wake-up while a 10 s queue-input one waits,
    replaces the pending one)."""
    deadline = time.monotonic() + delay
    with _LOCK:
        pending = getattr(self, _PENDING, None)
        if pending is not None:
            if pending[1] <= deadline:
                return
            pending[0].cancel()  # one that fires anyway only causes an extra pass

        def release() -> None:
            with _LOCK:  # cleared before the release: the pass it causes may arm the next timer
                current = getattr(self, _PENDING, None)
                if current is not None and current[0] is timer:  # not replaced by an earlier one meanwhile
                    setattr(self, _PENDING, None)
            self._open_jobs.release()

        timer = threading.Timer(delay, release)
        timer.daemon = True  # a pending wake-up must not keep a finished workflow's process alive
        setattr(self, _PENDING, (timer, deadline))
    timer.start()


_schedule_one_reevaluation.normscape_coalesced = True


def coalesce_reevaluations(cls: type | None = None) -> bool:
    """Replace ``cls._schedule_reevalutation`` (default: Snakemake's JobScheduler) by
    :func:`_schedule_one_reevaluation`; True when it is in place after the call, False when this Snakemake has
    no such method (then nothing changes: the workflow runs as Snakemake schedules it)."""
    cls = cls or scheduler_class()
    if cls is None or not callable(getattr(cls, PATCHED_METHOD, None)):
        return False
    if not getattr(getattr(cls, PATCHED_METHOD), "normscape_coalesced", False):
        setattr(cls, PATCHED_METHOD, _schedule_one_reevaluation)
    return True
