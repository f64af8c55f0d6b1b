"""Where a study's time went: every finished job's CPU, system time and memory, summed per stage.

Each job's log ends with the line :func:`normscape.pipeline.runtime.format_usage` writes (wall time, user and system
CPU seconds, peak RSS, page faults of the job's process and its exited children). This module reads them back
from ``results/logs`` and sums them per stage (the first folder under ``logs/``: train, landscape, features, ...;
a log directly in ``logs/`` is its own stage)::

    python -m normscape.pipeline.jobstats results/logs

System time is the kernel's share (page faults, file reads, process start-up); the study aims at <= 5 % of its
CPU time. Jobs without the line (failed, still running, or written by an older version) are counted apart.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

from normscape.pipeline.runtime import USAGE_PREFIX

FIELDS = ("wall_s", "user_s", "sys_s", "max_rss_mb", "minor_faults", "major_faults")


def parse_usage(text: str) -> dict[str, float] | None:
    """The last usage line of a job log as numbers; None when the log has none."""
    for line in reversed(text.splitlines()):
        at = line.find(USAGE_PREFIX)
        if at < 0:
            continue
        usage = {}
        for item in line[at + len(USAGE_PREFIX) :].split():
            key, _, value = item.partition("=")
            if key in FIELDS:
                try:
                    usage[key] = float(value)
                except ValueError:
                    continue
        return usage if all(key in usage for key in FIELDS) else None
    return None


def stage_of(log: Path, logs_dir: Path) -> str:
    parts = log.relative_to(logs_dir).parts
    return parts[0] if len(parts) > 1 else log.stem


def new_total() -> dict[str, float]:
    return {"jobs": 0, **{key: 0.0 for key in FIELDS}}


def accumulate(total: dict[str, float], usage: dict[str, float], jobs: float = 1) -> None:
    """Add one job's usage (or a stage's total, with its job count) to ``total``: sums, but the peak RSS is the
    largest; an unknown (NaN) wall time adds nothing."""
    total["jobs"] += jobs
    for key in FIELDS:
        if key == "max_rss_mb":
            total[key] = max(total[key], usage[key])
        elif not math.isnan(usage[key]):
            total[key] += usage[key]


def collect(logs_dir: str | Path) -> tuple[dict[str, dict[str, float]], dict[str, int]]:
    """Per stage: summed usage (max for peak RSS) and job count; plus per stage the logs without a usage line."""
    logs_dir = Path(logs_dir)
    stages: dict[str, dict[str, float]] = {}
    missing: dict[str, int] = {}
    for log in sorted(logs_dir.rglob("*.log")):
        stage = stage_of(log, logs_dir)
        usage = parse_usage(log.read_text(errors="replace"))
        if usage is None:
            missing[stage] = missing.get(stage, 0) + 1
            continue
        accumulate(stages.setdefault(stage, new_total()), usage)
    return stages, missing


def sys_share(row: dict[str, float]) -> float:
    cpu = row["user_s"] + row["sys_s"]
    return row["sys_s"] / cpu if cpu > 0 else 0.0


def table(stages: dict[str, dict[str, float]], missing: dict[str, int]) -> str:
    """A Markdown table, stages by CPU time (largest first), with a total row."""
    header = "| stage | jobs | wall s (sum) | CPU s (user + sys) | sys s | sys % | peak RSS MB | page faults |"
    lines = [header, "|" + "---|" * 8]
    order = sorted(stages, key=lambda s: -(stages[s]["user_s"] + stages[s]["sys_s"]))
    total = new_total()
    for stage in order:
        accumulate(total, stages[stage], jobs=stages[stage]["jobs"])
    for name, row in [*((stage, stages[stage]) for stage in order), ("**total**", total)]:
        lines.append(
            f"| {name} | {int(row['jobs'])} | {row['wall_s']:.0f} | {row['user_s'] + row['sys_s']:.0f} | "
            f"{row['sys_s']:.0f} | {100 * sys_share(row):.1f} | {row['max_rss_mb']:.0f} | "
            f"{int(row['minor_faults'] + row['major_faults']):,} |"
        )
    if missing:
        listed = ", ".join(f"{stage} {n}" for stage, n in sorted(missing.items()))
        lines.append(f"\nLogs without a usage line (failed, running, or older): {listed}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m normscape.pipeline.jobstats", description=__doc__.split("\n\n")[0])
    parser.add_argument("logs", nargs="?", default="results/logs", help="the study's logs folder (results/logs)")
    args = parser.parse_args(argv)
    if not Path(args.logs).is_dir():
        print(f"normscape: {args.logs} is not a folder; give the study's logs folder (results/logs).", file=sys.stderr)
        return 2
    stages, missing = collect(args.logs)
    if not stages:
        print(f"normscape: no job log in {args.logs} has a usage line yet (run the study first).", file=sys.stderr)
        return 1
    print(table(stages, missing))
    return 0


if __name__ == "__main__":
    sys.exit(main())
