"""Glue shared by every workflow script: the environment jobs start with, logging to the rule's log file, thread limits,
clean errors.

A script in ``workflow/scripts/`` is a few lines::

    from normscape.pipeline.runtime import script_main
    def main(smk): ...          # unpack smk.input/output/params, call the package
    script_main(snakemake, main)

Expected failures (:class:`normscape.pipeline.errors.NormscapeError`) end the job with exit code 1 and one clear
message in the log and on stderr, no traceback; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Callable, Mapping
from typing import Any

from normscape.pipeline.atomic import disk_full_error, is_disk_full
from normscape.pipeline.errors import NormscapeError
from normscape.pipeline.plugins import load_plugins

log = logging.getLogger("normscape")


def setup_logging(log_path: str | None = None, level: int = logging.INFO) -> None:
    # a log line that cannot be written (a full disk) is dropped, not reported with a traceback of the logger:
    # the same line also goes to stderr
    logging.raiseExceptions = False
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if log_path:
        os.makedirs(os.path.dirname(os.path.abspath(log_path)), exist_ok=True)
        handlers.append(logging.FileHandler(log_path, mode="w"))
    logging.basicConfig(
        level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", handlers=handlers, force=True
    )


# glibc's malloc tunables for every job (bytes). glibc reads them from GLIBC_TUNABLES once, when a process starts,
# so they reach a job through the environment Snakemake starts it with (JOB_ENV), never from inside the job. They
# keep large freed buffers inside the process instead of returning them to the kernel after every batch: with
# glibc's defaults every large tensor is a fresh mmap that is unmapped when freed, so each batch re-faults its
# activations page by page, in system time (benchmarks/bench_allocator.py counts page faults and system time with
# and without). They change where memory comes from, never results; other C libraries ignore the variable.
MALLOC_TUNABLES = {
    # No request gets an mmap of its own. glibc maps every request above its mmap threshold afresh and unmaps it
    # when freed; the threshold is at most 32 MiB, below the 16 x 96 x 112 x 112 float activations of extraction at
    # 224 px (77 MB), which would then be re-faulted in every batch. From the heap a freed buffer is reused, and a
    # request the heap's free top cannot hold grows the heap (with only a high threshold, such a request is mapped
    # afresh in every batch whenever the top happens to be short: seen in 1 of 4 fresh processes).
    "glibc.malloc.mmap_max": 0,
    # Grow the heap by this much extra whenever it grows, so that it grows rarely.
    "glibc.malloc.top_pad": 256 * 2**20,
    # Return freed memory at the heap's top to the kernel only beyond this (glibc default: 128 KiB).
    "glibc.malloc.trim_threshold": 512 * 2**20,
}
TUNABLES_ENV = "GLIBC_TUNABLES"

# Environment of every workflow job, set by workflow/rules/common.smk in the Snakemake process, whose jobs (local
# script processes, and on SLURM the job's own Snakemake, which parses common.smk again) inherit it: OpenMP reads
# it when torch is imported and glibc when the process starts, both too early for script_main. PASSIVE: a thread
# that waits at a barrier sleeps instead of spinning, so a job whose threads share CPUs with another busy process
# does not stall on a descheduled sibling (benchmarks/bench_contention.py).
JOB_ENV = {
    "OMP_WAIT_POLICY": "PASSIVE",
    TUNABLES_ENV: ":".join(f"{name}={value}" for name, value in MALLOC_TUNABLES.items()),
}


def _tunable_names(value: str) -> set[str]:
    return {item.partition("=")[0] for item in value.split(":") if item}


def job_environment(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The variables of :data:`JOB_ENV` as a job should get them, given the current ``environ``: a variable the
    user already set wins, except GLIBC_TUNABLES, which is merged per tunable (the user's own tunables stay, and
    a malloc tunable the user set keeps the user's value). Idempotent: applied to its own result, it changes
    nothing."""
    environ = os.environ if environ is None else environ
    merged = {key: environ.get(key, value) for key, value in JOB_ENV.items()}
    own = environ.get(TUNABLES_ENV, "")
    missing = [item for item in JOB_ENV[TUNABLES_ENV].split(":") if item.partition("=")[0] not in _tunable_names(own)]
    merged[TUNABLES_ENV] = ":".join(item for item in (own, *missing) if item)
    return merged


def missing_malloc_tunables(environ: Mapping[str, str] | None = None) -> list[str]:
    """The tunables of :data:`MALLOC_TUNABLES` this process's environment lacks, on glibc (``[]`` elsewhere).
    glibc read that variable when the process started, so what it lacks now is not in effect."""
    try:
        if not (os.confstr("CS_GNU_LIBC_VERSION") or "").startswith("glibc"):
            return []
    except (AttributeError, ValueError, OSError):  # no confstr, or a C library that does not know the name
        return []
    present = _tunable_names((os.environ if environ is None else environ).get(TUNABLES_ENV, ""))
    return [name for name in MALLOC_TUNABLES if name not in present]


def available_cpus() -> int:
    """CPUs this process may run on (its affinity mask: SLURM's and cgroups' cpusets), not the machine's."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # no sched_getaffinity (macOS)
        return os.cpu_count() or 1


def set_threads(threads: int) -> int:
    """Limit intra-op parallelism to the threads Snakemake gave this job, and to the CPUs it may run on.

    More threads than CPUs never helps: OpenMP's threads then wait on each other's barriers. Returns the
    number of threads set. torch is not imported for it: a job that never uses torch (figures, tables,
    exports: ~40 jobs of the default study) would pay ~1.7 s of CPU for the import alone. Its OpenMP runtime reads
    OMP_NUM_THREADS when torch is first imported; a torch already imported is told directly.
    """
    threads = max(1, min(int(threads), available_cpus()))
    os.environ["OMP_NUM_THREADS"] = str(threads)
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.set_num_threads(threads)
    return threads


_FLUSH_DENORMAL: bool | None = None  # the setting applied in this process (None: not yet)


def flush_denormals() -> bool:
    """Flush subnormal floats to zero (and read subnormal inputs as zero) in this process's torch arithmetic;
    returns whether the CPU supports it (the setting every run records in its provenance).

    Why: arithmetic on a float below 2^-126 takes a slow assist path on many x86 CPUs (how slow depends on the
    microarchitecture: benchmarks/bench_train.py measures the epoch time per head with and without). The
    trainings make them: Adam's first moment of a parameter whose gradient has gone to zero (a dead ReLU unit's
    weights) decays by beta1 = 0.9 per step through the subnormal range (the benchmark counts them in the
    parameters and both moments: they are in the first moment). Values that small change no result that is read
    at float32 precision. Called once per job before
    any torch work (:func:`script_main` with ``torch_job=True``, and every trainer); new threads inherit the
    setting of the thread that creates them (OpenMP's pool included).
    """
    global _FLUSH_DENORMAL
    if _FLUSH_DENORMAL is None:
        import torch

        _FLUSH_DENORMAL = bool(torch.set_flush_denormal(True))
    return _FLUSH_DENORMAL


USAGE_PREFIX = "job usage:"  # the last line of every job's log; normscape.pipeline.jobstats reads it


def job_usage() -> dict[str, float]:
    """What this process (and its children that have exited) used so far: wall time since the process started,
    CPU time in user and system mode (s), peak resident memory (MB), page faults."""
    import resource

    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    try:
        import psutil

        wall = time.time() - psutil.Process().create_time()
    except Exception:  # no psutil: wall time unknown
        wall = float("nan")
    return {
        "wall_s": round(wall, 2),
        "user_s": round(own.ru_utime + children.ru_utime, 2),
        "sys_s": round(own.ru_stime + children.ru_stime, 2),
        "max_rss_mb": round(max(own.ru_maxrss, children.ru_maxrss) / 1024, 1),  # Linux: ru_maxrss in kB
        "minor_faults": own.ru_minflt + children.ru_minflt,
        "major_faults": own.ru_majflt + children.ru_majflt,
    }


def format_usage(usage: dict[str, float]) -> str:
    return f"{USAGE_PREFIX} " + " ".join(f"{key}={value}" for key, value in usage.items())


def script_main(smk: Any, main: Callable[[Any], None], torch_job: bool = False) -> None:
    """Run ``main(smk)`` for a Snakemake ``script:`` job with logging, threads and clean user errors; a finished
    job logs its CPU time, system time and peak memory (:func:`job_usage`; ``python -m normscape.pipeline.jobstats``).
    ``torch_job``: the job computes with torch; subnormals are flushed to zero (:func:`flush_denormals`) before
    ``main`` runs (jobs without torch do not import it: ~1.7 s of CPU each)."""
    setup_logging(smk.log[0] if len(smk.log) else None)
    if missing := missing_malloc_tunables():
        log.warning(
            "this job runs with glibc's default allocator settings (%s lacks %s): a launcher that started it without "
            "the workflow's job environment (workflow/rules/common.smk) lost them; results are the same, "
            "feature extraction spends more system time",
            TUNABLES_ENV,
            ", ".join(missing),
        )
    try:
        set_threads(getattr(smk, "threads", 1))
        if torch_job:
            log.info("subnormal floats flushed to zero: %s", flush_denormals())
        load_plugins(getattr(smk, "config", {}).get("plugins"))  # the user's norms etc., as the workflow saw them
        main(smk)
        log.info("%s", format_usage(job_usage()))
    except NormscapeError as exc:
        log.error("%s", exc)
        sys.exit(1)
    except KeyboardInterrupt:  # Ctrl-C reaches every job of the terminal's process group
        log.error("interrupted: run the same command again to go on (a training resumes after its last finished epoch)")
        sys.exit(130)
    except Exception as exc:
        if is_disk_full(exc):  # a write outside atomic_path (a figure, a log, W&B): the same one message
            log.error("%s", disk_full_error(getattr(exc, "filename", None) or smk.output[0]))
            sys.exit(1)
        from normscape.pipeline.integrity import corrupt_input

        if problem := corrupt_input(list(smk.input)):  # what failed was reading a damaged input, not our code
            log.error("%s", problem)
            sys.exit(1)
        # A bug, not a user error: keep the traceback, and put it in the rule's log too (on a cluster the
        # job's stderr goes to a separate scheduler log that users look at last).
        log.exception("unexpected error")
        raise
