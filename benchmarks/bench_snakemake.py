"""Snakemake no-op dry run on a completed tiny workflow (how long `snakemake -n all` takes to say "nothing to do").

Naive comparison: the same dry run with `--rerun-triggers mtime` only (skipping the params/code/input
checks that make our config-slice reruns work) — the ratio is what those checks cost (< 1 means they cost).
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from benchmarks.common import result

REPO = Path(__file__).resolve().parents[1]


def snakemake(args: list[str], config: Path) -> float:
    t0 = time.perf_counter()
    subprocess.run(
        [
            sys.executable,
            "-m",
            "snakemake",
            "--snakefile",
            str(REPO / "Snakefile"),
            "--directory",
            str(REPO),
            "--configfile",
            str(config),
            "--replace-workflow-config",
            *args,
        ],
        check=True,
        capture_output=True,
        text=True,
    )
    return time.perf_counter() - t0


def run(quick: bool) -> list[dict]:
    from normscape.data.synthetic import make_cifar_archive

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        cfg = yaml.safe_load((REPO / "tests" / "config" / "tiny.yaml").read_text())
        cfg["data"]["archive"] = str(make_cifar_archive(tmp / "cifar.tar.gz"))
        cfg["results_dir"] = str(tmp / "results")
        if quick:  # a smoke test: one run, not the tiny study's 47 jobs
            cfg["experiments"] = {"convergence": {**cfg["experiments"]["convergence"], "heads": ["batch"]}}
            cfg["diagnostics"]["preconditioned_sharpness"]["experiments"] = ["convergence"]
            cfg["landscape"]["experiments"] = []
        config = tmp / "config.yaml"
        config.write_text(yaml.safe_dump(cfg))
        snakemake(["all", "--cores", "2"], config)
        snakemake(["-n", "all"], config)  # untimed: the first dry run after a run also reads cold caches
        reps = 1 if quick else 5
        ours = sorted(snakemake(["-n", "all"], config) for _ in range(reps))[reps // 2]
        naive = sorted(snakemake(["-n", "all", "--rerun-triggers", "mtime"], config) for _ in range(reps))[reps // 2]
    return [
        result(
            "snakemake_noop_dryrun",
            ours,
            "s",
            naive,
            "informational (no target)",
            False,
            note="naive = --rerun-triggers mtime only",
        )
    ]
