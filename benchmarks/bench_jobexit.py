"""CPU a finished job's process spends ending: ``normscape.runtime.exit_finished_job`` vs the interpreter's exit.

A job process of the study imports torch, h5py, numpy and W&B; once its outputs are written, a normal Python
exit still unloads all of them (module teardown, garbage collection of everything left). Naive: the process
returns normally; ours: it ends with ``exit_finished_job`` (flush the logs, ``os._exit``). Both start the same
way (the imports of a training job, one small tensor op); the figure is the CPU time (user + system) of the
whole process, median of interleaved rounds, and the difference is what each of the study's ~150 jobs saves.
"""

from __future__ import annotations

import resource
import statistics
import subprocess
import sys

from benchmarks.common import result

JOB = (
    "import logging, torch, h5py, numpy, wandb\n"
    "import normscape.train, normscape.tracking\n"
    "logging.basicConfig(level=logging.INFO)\n"
    "torch.ones(256, 256) @ torch.ones(256, 256)\n"
    "logging.getLogger('bench').info('done')\n"
)
ENDINGS = {
    "interpreter_exit": "",
    "exit_finished_job": "from normscape.runtime import exit_finished_job\nexit_finished_job()\n",
}


def process_cpu_s(code: str) -> float:
    """User + system CPU seconds of one child process running ``code``."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def run(quick: bool) -> list[dict]:
    rounds = 2 if quick else 7
    raw = {name: [] for name in ENDINGS}
    process_cpu_s(JOB)  # warm the page cache: the first process reads torch's libraries from disk
    for _ in range(rounds):
        for name, ending in ENDINGS.items():  # interleaved: the machine's slow phases hit both alike
            raw[name].append(process_cpu_s(JOB + ending))
    ours, naive = statistics.median(raw["exit_finished_job"]), statistics.median(raw["interpreter_exit"])
    return [
        result(
            "job_process_cpu",
            ours,
            "s",
            naive,
            "informational: ours < naive",
            False,
            saved_per_job_s=naive - ours,
            rounds=rounds,
            raw_s=raw,
            note="CPU of a job process that imports torch/h5py/W&B and exits; naive = the interpreter's own exit",
        )
    ]
