"""Job runtime settings: the job environment's malloc tunables remove page-fault churn and reach the jobs Snakemake
starts, thread counts respect the CPU set, --cores is the user's."""

from __future__ import annotations

import glob
import os
import re

import pytest

from normscape.pipeline.runtime import available_cpus, set_threads


def glibc_version() -> tuple[int, ...]:
    """(major, minor) of the glibc this process runs on; () for another C library."""
    try:
        name, _, version = (os.confstr("CS_GNU_LIBC_VERSION") or "").partition(" ")
    except (AttributeError, ValueError, OSError):
        return ()
    return tuple(int(part) for part in version.split(".")[:2]) if name == "glibc" else ()


@pytest.mark.slow
@pytest.mark.skipif(not os.uname().sysname == "Linux", reason="glibc allocator settings")
def test_tuned_allocator_stops_refaulting_large_activations():
    # 160 px: the expanded activations of a batch of 16 (16 x 96 x 80 x 80 floats, 39 MB) exceed glibc's largest
    # mmap threshold, so with the defaults every batch maps them afresh and faults them in page by page. The
    # median batch is compared: a tuned heap that still grows after the warm-up (how far depends on the host's
    # kernel choices) faults its new pages in once, in one batch, which is not the churn this test is about.
    from benchmarks.bench_allocator import probe

    default = probe("default", 96, 160, 1, None)
    tuned = probe("tuned", 96, 160, 1, None)
    assert tuned["tuned"] and not default["tuned"]
    assert default["median_batch_minor_faults_per_image"] > 200
    assert tuned["median_batch_minor_faults_per_image"] < default["median_batch_minor_faults_per_image"] / 10


MMAPPED_BYTES_OF_ONE_8_MIB_BLOCK = """
import ctypes

class MallInfo2(ctypes.Structure):  # struct mallinfo2 (malloc.h, glibc >= 2.33)
    _fields_ = [(name, ctypes.c_size_t) for name in
                ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks",
                 "keepcost")]

libc = ctypes.CDLL(None)
libc.mallinfo2.restype = MallInfo2
libc.malloc.argtypes, libc.malloc.restype = [ctypes.c_size_t], ctypes.c_void_p
before = libc.mallinfo2().hblkhd
block = libc.malloc(8 * 2**20)
print(libc.mallinfo2().hblkhd - before)
"""


def glibc_loader() -> str | None:
    """glibc's dynamic loader (ld.so), which lists the tunables a process started with would get."""
    for pattern in ("/lib64/ld-linux*.so.*", "/lib/ld-linux*.so.*", "/lib/*-linux-gnu/ld-linux*.so.*"):
        if found := sorted(glob.glob(pattern)):
            return found[0]
    return None


@pytest.mark.skipif(glibc_version() < (2, 33) or glibc_loader() is None, reason="glibc >= 2.33 (ld.so --list-tunables)")
def test_glibc_takes_the_job_environments_malloc_tunables():
    """glibc ignores a tunable it does not know: every name and value in JOB_ENV must be in effect in a process
    started with it (ld.so lists them), and an 8 MiB block must come from the heap there (glibc's default: an mmap
    of its own; mmap_max=0 lists as 0 either way)."""
    import subprocess
    import sys

    from normscape.pipeline.runtime import MALLOC_TUNABLES, TUNABLES_ENV, job_environment

    plain = {k: v for k, v in os.environ.items() if k != TUNABLES_ENV}
    job = {**plain, **job_environment(plain)}
    listed = subprocess.run([glibc_loader(), "--list-tunables"], env=job, capture_output=True, text=True).stdout
    values = dict(re.findall(r"^(glibc\.malloc\.\w+): (\w+)", listed, re.MULTILINE))
    assert {name: int(values[name], 0) for name in MALLOC_TUNABLES} == MALLOC_TUNABLES

    def mmapped(env: dict) -> int:
        run = subprocess.run([sys.executable, "-c", MMAPPED_BYTES_OF_ONE_8_MIB_BLOCK], env=env, capture_output=True)
        return int(run.stdout)

    assert mmapped(plain) >= 8 * 2**20
    assert mmapped(job) == 0


def test_job_environment_keeps_what_the_user_set():
    from normscape.pipeline.runtime import JOB_ENV, MALLOC_TUNABLES, TUNABLES_ENV, job_environment

    assert job_environment({}) == JOB_ENV
    assert job_environment({"OMP_WAIT_POLICY": "ACTIVE"})["OMP_WAIT_POLICY"] == "ACTIVE"
    own = "glibc.cpu.hwcaps=-AVX512F:glibc.malloc.trim_threshold=0"
    merged = job_environment({TUNABLES_ENV: own})[TUNABLES_ENV]
    assert merged.startswith(own + ":") and merged.count("trim_threshold") == 1
    assert all(f"{name}=" in merged for name in MALLOC_TUNABLES)
    again = {TUNABLES_ENV: merged, "OMP_WAIT_POLICY": "PASSIVE"}
    assert job_environment(again) == again  # common.smk parsed again (a SLURM job's own Snakemake) changes nothing


@pytest.mark.skipif(not glibc_version(), reason="glibc's tunables")
def test_a_job_started_without_the_tunables_says_so(tmp_path):
    """A launcher that drops the job environment costs speed, not results: the job's log says which settings."""
    import subprocess
    import sys

    from normscape.pipeline.runtime import TUNABLES_ENV, job_environment

    script = f"""
import types
from normscape.pipeline.runtime import script_main
script_main(types.SimpleNamespace(log=[{str(tmp_path / "job.log")!r}], threads=1), lambda smk: None)
"""
    plain = {k: v for k, v in os.environ.items() if k != TUNABLES_ENV}
    for env, warned in ((plain, True), ({**plain, **job_environment(plain)}, False)):
        subprocess.run([sys.executable, "-c", script], env=env, check=True)
        text = (tmp_path / "job.log").read_text()
        assert ("default allocator settings" in text) is warned, text
        assert ("glibc.malloc.top_pad" in text) is warned  # the message names what is missing


def test_threads_capped_by_the_cpus_the_job_may_use():
    import torch

    before = torch.get_num_threads()
    try:
        assert set_threads(10_000) == available_cpus() == len(os.sched_getaffinity(0))
        assert set_threads(1) == 1 and torch.get_num_threads() == 1
        assert set_threads(0) == 1
    finally:
        torch.set_num_threads(before)


def test_threads_set_without_importing_torch_apply_once_it_is_imported():
    """A job that never uses torch does not import it for its thread limit; one that imports torch later gets the
    job's thread count all the same (fresh processes: the setting must be in place before torch starts OpenMP)."""
    import subprocess
    import sys

    script = """
import os, sys
os.environ["OMP_NUM_THREADS"] = "7"  # e.g. inherited from the user's shell: the job's own count must win
from normscape.pipeline.runtime import set_threads
set_threads(1)
print("torch" in sys.modules)
import torch
print(torch.get_num_threads())
"""
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["False", "1"]


@pytest.mark.slow
def test_a_local_run_keeps_its_cores_and_starts_jobs_with_the_job_environment(tiny_config, tmp_path):
    """`--cores` is the user's: more than the CPUs is theirs to choose (the README's quick start says what to pass).
    A real job of that run started with the malloc tunables (its log would say otherwise) and ends with its usage
    line."""
    from conftest import run_snakemake, write_config

    path = write_config(tiny_config, tmp_path / "c.yaml")
    many = available_cpus() + 6
    args = ["--cores", str(many), "--notemp", tiny_config["results_dir"] + "/data/cifar10.h5"]
    proc = run_snakemake(args, cwd=tmp_path, configfile=path)
    assert f"Provided cores: {many}\n" in proc.stderr
    from normscape.pipeline.jobstats import parse_usage

    log = (tmp_path / "results" / "logs" / "prepare_data.log").read_text()
    assert parse_usage(log) is not None and "default allocator settings" not in log, log


def test_job_usage_counts_this_process_cpu_and_memory():
    import numpy as np

    from normscape.pipeline.runtime import format_usage, job_usage

    before = job_usage()
    block = np.ones(64 * 2**20 // 8)  # 64 MB touched: the peak RSS must cover it
    total = 0.0
    for _ in range(40):
        total += float(np.sqrt(block[::7]).sum())  # ~CPU work in user mode
    after = job_usage()
    assert total > 0 and after["user_s"] > before["user_s"]
    assert after["max_rss_mb"] >= 64 and after["sys_s"] >= 0 and after["minor_faults"] > before["minor_faults"]
    assert after["wall_s"] >= before["wall_s"] > 0  # since the process started
    from normscape.pipeline.jobstats import parse_usage

    assert parse_usage("x\n2026-11-26 INFO normscape.pipeline.runtime: " + format_usage(after) + "\n") == {
        key: float(value) for key, value in after.items()
    }


def test_jobstats_sums_per_stage(tmp_path, capsys):
    from normscape.pipeline.jobstats import collect, main
    from normscape.pipeline.runtime import format_usage

    def write(rel, **usage):
        path = tmp_path / "logs" / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        fields = {
            "wall_s": 10.0,
            "user_s": 9.0,
            "sys_s": 1.0,
            "max_rss_mb": 500.0,
            "minor_faults": 1000,
            "major_faults": 0,
        }
        path.write_text(
            "2026-11-26 INFO normscape.training.trainer: epoch 1\n" + format_usage({**fields, **usage}) + "\n"
        )

    write("train/convergence/none/base/seed0.log", user_s=19.0, max_rss_mb=1100.0)
    write("train/convergence/none/base/seed1.log")
    write("merge_features.log", sys_s=3.0)
    (tmp_path / "logs" / "train" / "failed.log").write_text("Traceback ...\n")
    stages, missing = collect(tmp_path / "logs")
    assert stages["train"]["jobs"] == 2 and stages["train"]["user_s"] == 28.0 and stages["train"]["sys_s"] == 2.0
    assert stages["train"]["max_rss_mb"] == 1100.0 and stages["merge_features"]["sys_s"] == 3.0
    assert missing == {"train": 1}
    assert main([str(tmp_path / "logs")]) == 0
    out = capsys.readouterr().out
    train_row = next(line for line in out.splitlines() if line.startswith("| train "))
    assert "| 2 | 20 | 30 | 2 | 6.7 | 1100 |" in train_row  # 2 / (28 + 2) = 6.7 % system time
    assert "| **total** | 3 | 30 | 42 | 5 | 11.9 |" in out and "train 1" in out
    assert main([str(tmp_path / "nope")]) == 2


@pytest.mark.parametrize("outcome", ["finished", "user_error", "interrupted"])
def test_a_script_job_ends_with_its_log_complete_and_the_right_status(tmp_path, outcome):
    """A finished job ends as any Python process does: exit status 0 and the log, usage line last, complete on
    disk; a user error exits 1 with its one message in the log and on stderr, no traceback; Ctrl-C (SIGINT to the
    terminal's process group) exits 130 with one line saying how to go on, no traceback."""
    import subprocess
    import sys

    from normscape.pipeline.jobstats import parse_usage

    log = tmp_path / "job.log"
    script = f"""
import os, signal, types
from normscape.pipeline.errors import ConfigError
from normscape.pipeline.runtime import script_main

def main(smk):
    with open({str(tmp_path / "out.txt")!r}, "w") as fh:
        fh.write("written")
    if {outcome == "user_error"}:
        raise ConfigError("training.lr must be positive: fix config.yaml")
    if {outcome == "interrupted"}:
        os.kill(os.getpid(), signal.SIGINT)

script_main(types.SimpleNamespace(log=[{str(log)!r}], threads=1), main)
"""
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert (tmp_path / "out.txt").read_text() == "written"
    text = log.read_text()
    if outcome == "finished":
        assert proc.returncode == 0, proc.stderr
        assert parse_usage(text.splitlines()[-1]) is not None and text.endswith("\n"), text
    elif outcome == "user_error":
        assert proc.returncode == 1 and "training.lr must be positive" in text and "Traceback" not in text
        assert proc.stderr.count("training.lr must be positive") == 1 and "Traceback" not in proc.stderr
    else:
        assert proc.returncode == 130 and "interrupted: run the same command again" in text, proc.stderr
        assert proc.stderr.count("interrupted") == 1 and "Traceback" not in proc.stderr
