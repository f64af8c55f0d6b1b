"""Glue shared by every workflow script: logging to the rule's log file, thread limits, clean errors.

A script in ``workflow/scripts/`` is a few lines::

    from normscape.runtime import script_main
    def main(smk): ...          # unpack smk.input/output/params, call the package
    script_main(snakemake, main)

Expected failures (:class:`normscape.errors.NormscapeError`) end the job with exit code 1 and one clear
message in the log and on stderr, no traceback; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import ctypes
import logging
import os
import sys
import time
from collections.abc import Callable
from typing import Any

from normscape.errors import NormscapeError

log = logging.getLogger("normscape")


def setup_logging(log_path: str | None = None, level: int = logging.INFO) -> None:
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if log_path:
        os.makedirs(os.path.dirname(os.path.abspath(log_path)), exist_ok=True)
        handlers.append(logging.FileHandler(log_path, mode="w"))
    logging.basicConfig(
        level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", handlers=handlers, force=True
    )


# Environment of every workflow job, set by workflow/rules/common.smk before a job's process starts (OpenMP
# reads it when torch is imported, too early for script_main). PASSIVE: a thread that waits at a barrier
# sleeps instead of spinning, so a job whose threads share CPUs with another busy process does not stall on
# a descheduled sibling (benchmarks/bench_contention.py). A value already in the environment wins.
JOB_ENV = {"OMP_WAIT_POLICY": "PASSIVE"}

# glibc mallopt parameters (malloc.h) and the values this pipeline's jobs run with (bytes).
M_TRIM_THRESHOLD, M_TOP_PAD, M_MMAP_THRESHOLD = -1, -2, -3
ALLOCATOR_SETTINGS = {
    # Requests below this come from the heap, not from a fresh mmap; 32 MiB is glibc's maximum on 64-bit.
    M_MMAP_THRESHOLD: 32 * 2**20,
    # Grow the heap by this much extra whenever it grows, so the 16 x 96 x 112 x 112 float activations of
    # extraction at 224 px (77 MB, above the mmap threshold) are carved from the heap's free top as well.
    M_TOP_PAD: 256 * 2**20,
    # Return freed memory at the heap's top to the kernel only beyond this (glibc default: 128 KiB).
    M_TRIM_THRESHOLD: 512 * 2**20,
}
# Set to "default" to keep the C library's allocator settings (e.g. to measure what tune_allocator saves).
ALLOCATOR_ENV = "NORMSCAPE_MALLOC"


def tune_allocator() -> bool:
    """Keep large freed buffers inside the process instead of returning them to the kernel after every batch.

    With glibc's defaults every large tensor is a fresh ``mmap`` that is unmapped when freed, so each batch
    re-faults its activations page by page, in system time (benchmarks/bench_allocator.py counts page faults
    and system time with and without). The settings only
    change where memory comes from, never results. Returns False (and changes nothing) where the C library is
    not glibc (musl, macOS) or when ``NORMSCAPE_MALLOC=default``.
    """
    if os.environ.get(ALLOCATOR_ENV, "tuned") == "default" or not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt  # the libc this process already runs on
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    if not all(mallopt(param, value) == 1 for param, value in ALLOCATOR_SETTINGS.items()):
        return False
    # Grow the heap once now (one block just below the mmap threshold, plus the top pad), so the heap's free
    # top can hold large buffers from the start, and not only after smaller ones happened to grow it.
    libc = ctypes.CDLL(None)
    libc.malloc.argtypes, libc.malloc.restype = [ctypes.c_size_t], ctypes.c_void_p
    libc.free.argtypes, libc.free.restype = [ctypes.c_void_p], None
    libc.free(libc.malloc(ALLOCATOR_SETTINGS[M_MMAP_THRESHOLD] - 2**16))
    return True


def available_cpus() -> int:
    """CPUs this process may run on (its affinity mask: SLURM's and cgroups' cpusets), not the machine's."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # no sched_getaffinity (macOS)
        return os.cpu_count() or 1


OVERSUBSCRIBE_ENV = "NORMSCAPE_OVERSUBSCRIBE"  # "1": keep a local run's --cores even above the CPU count


def limit_cores(global_resources: Any, cpus: int | None = None) -> int | None:
    """Cap a LOCAL Snakemake run's ``--cores`` (``workflow.global_resources["_cores"]``) at the CPUs it may run
    on; returns the cap applied, or None when nothing changed.

    The study's jobs are CPU-bound and mostly single-threaded, so ``--cores 4`` on 2 CPUs only time-slices 4 jobs
    whose working sets then evict each other from the caches: the same work takes longer than 2 at a time
    (benchmarks/bench_contention.py: ``oversubscription_training``). Cluster runs are not capped: the caller
    checks ``workflow.local_exec``, and a run with a cluster job count (``_nodes``: ``--jobs`` with a cluster
    executor, also in a dry run of a cluster profile) is left alone; ``NORMSCAPE_OVERSUBSCRIBE=1`` keeps
    ``--cores`` as given. Values are ``snakemake.resources.Resource`` in Snakemake 9 (plain ints in older
    versions): the same type is put back.
    """
    nodes = global_resources.get("_nodes")
    if os.environ.get(OVERSUBSCRIBE_ENV) == "1" or getattr(nodes, "value", nodes) is not None:
        return None
    current = global_resources.get("_cores")
    requested = getattr(current, "value", current)
    cpus = cpus or available_cpus()
    if not isinstance(requested, int) or requested <= cpus:
        return None
    global_resources["_cores"] = type(current)("_cores", cpus) if hasattr(current, "value") else cpus
    print(
        f"normscape: --cores {requested} is more than the {cpus} CPUs this run may use: at most {cpus} jobs run at "
        f"a time (more CPU-bound jobs than CPUs only time-slice and finish later; {OVERSUBSCRIBE_ENV}=1 keeps "
        f"--cores {requested}).",
        file=sys.stderr,
    )
    return cpus


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


USAGE_PREFIX = "job usage:"  # the last line of every job's log; normscape.jobstats reads it


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
    job logs its CPU time, system time and peak memory (:func:`job_usage`; ``python -m normscape.jobstats``).
    ``torch_job``: the job computes with torch; subnormals are flushed to zero (:func:`flush_denormals`) before
    ``main`` runs (jobs without torch do not import it: ~1.7 s of CPU each)."""
    setup_logging(smk.log[0] if len(smk.log) else None)
    tune_allocator()
    set_threads(getattr(smk, "threads", 1))
    if torch_job:
        log.info("subnormal floats flushed to zero: %s", flush_denormals())
    try:
        main(smk)
        log.info("%s", format_usage(job_usage()))
    except NormscapeError as exc:
        log.error("%s", exc)
        sys.exit(1)
    except Exception:
        # A bug, not a user error: keep the traceback, and put it in the rule's log too (on a cluster the
        # job's stderr goes to a separate scheduler log that users look at last).
        log.exception("unexpected error")
        raise
    exit_finished_job()


def exit_finished_job() -> None:
    """End a job whose outputs are all written without the interpreter's teardown, which unloads torch, h5py
    and W&B after the work is done, in every job of the study (benchmarks/bench_jobexit.py measures what it
    costs). Every output is closed by then (atomic writes, context managers) and W&B was finished, so only the
    log handlers and the standard streams need flushing."""
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(0)
