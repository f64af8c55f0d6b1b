"""Whole-study A/B on one host: the study as configured (B) and a variant of it (A), one after the other, each
`snakemake --cores N all` under `/usr/bin/time -v` in its own directory, from one feature cache extracted first
(untimed: both sides would extract the same features). The headline number of a change that adds work to the
study — e.g. the edge-of-stability experiments and probes (issue 30: wall-time growth <= 35 %) — is the
study's own wall time, not a micro-benchmark's.

python -m benchmarks.study_ab DIR --configfile real.yaml
    A = the study without the edge-of-stability experiments and the preconditioned-sharpness probes (defaults of
    --drop-experiments / --disable), B = the study as configured; writes DIR/ab.json and prints the growth.
python -m benchmarks.study_ab DIR --configfile real.yaml --baseline-rev REV --drop-experiments --disable
    A = the code at git REV (a detached worktree in DIR), B = this checkout, the same config.

A full default study on real data takes hours on 2 cores: run nothing else beside it (other work on the same
cores shows up as wall time of whichever side it overlaps).
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import yaml
from snakemake.utils import update_config

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from normscape.pipeline.config import load_yaml, validate_config  # noqa: E402
from normscape.pipeline.measures import settings_of  # noqa: E402
from normscape.pipeline.plugins import load_plugins  # noqa: E402

EDGE_OF_STABILITY_EXPERIMENTS = ["stability", "stability_large_batch"]
EDGE_OF_STABILITY_MEASURES = ["diagnostics.preconditioned_sharpness"]
TIME_KEYS = {
    "wall": "Elapsed (wall clock) time (h:mm:ss or m:ss)",
    "user_s": "User time (seconds)",
    "system_s": "System time (seconds)",
    "cpu_percent": "Percent of CPU this job got",
    "max_rss_kb": "Maximum resident set size (kbytes)",
    "exit_status": "Exit status",
}


def variant_config(config: dict, drop_experiments: list[str], disable: list[str]) -> dict:
    """``config`` without the experiments ``drop_experiments`` and with the measures at the dotted config paths
    ``disable`` switched off; every reference to a dropped experiment (a measure's ``experiments`` list,
    ``landscape.experiments``) goes with it, so the variant is a valid config of its own."""
    variant = copy.deepcopy(config)
    missing = [name for name in drop_experiments if name not in variant["experiments"]]
    if missing:
        raise SystemExit(f"study_ab: --drop-experiments names experiments the config lacks: {missing}")
    for name in drop_experiments:
        del variant["experiments"][name]
    for path in disable:
        try:
            settings_of(variant, path)["enabled"] = False
        except (KeyError, TypeError):
            raise SystemExit(f"study_ab: --disable {path}: the config has no such section") from None
    for section in [variant.get("landscape", {}), *variant.get("diagnostics", {}).values()]:
        if isinstance(section, dict) and "experiments" in section:
            section["experiments"] = [e for e in section["experiments"] if e not in drop_experiments]
    return variant


INPUT_PATHS = [("data", "archive"), ("data", "root"), ("backbone", "weights"), ("downloads_dir",)]


def absolute_inputs(overrides: dict) -> dict:
    """The overrides with relative input paths made absolute (each side runs in its own directory)."""
    overrides = copy.deepcopy(overrides)
    for *sections, key in INPUT_PATHS:
        holder = overrides
        for section in sections:
            holder = holder.get(section) if isinstance(holder, dict) else None
        value = holder.get(key) if isinstance(holder, dict) else None
        if isinstance(value, str) and not Path(value).is_absolute() and Path(value).exists():
            holder[key] = str(Path(value).resolve())
    return overrides


def side_config(repo: Path, overrides: dict, downloads: Path) -> dict:
    """The config a side's code runs with: its own config.yaml, the overrides merged in as Snakemake merges a
    --configfile; downloads shared by every side (the user's downloads_dir, else one fetched with the features)."""
    config = load_yaml(repo / "config.yaml")
    update_config(config, overrides)
    if "downloads_dir" not in overrides:
        config["downloads_dir"] = str(downloads)
    return config


def checked(config: dict) -> dict:
    """``config`` validated (a copy; registered plugin norms allowed), so a bad variant fails before hours of work."""
    config = copy.deepcopy(config)
    load_plugins(config.get("plugins"))
    return validate_config(config)


def parse_time(stderr: str) -> dict:
    """The `/usr/bin/time -v` block at the end of a run's stderr."""
    if "Command being timed" not in stderr:
        return {"wall_s": None, "user_s": None, "system_s": None}  # killed before /usr/bin/time reported
    block = stderr[stderr.rfind("Command being timed") :]
    found = {key: re.search(re.escape(label) + r": (.*)", block) for key, label in TIME_KEYS.items()}
    values = {key: m.group(1).strip() for key, m in found.items() if m}
    *hours_minutes, seconds = (float(x) for x in values["wall"].split(":"))
    values["wall_s"] = seconds + sum(v * 60 ** (i + 1) for i, v in enumerate(reversed(hours_minutes)))
    for key in ("user_s", "system_s"):
        values[key] = float(values[key])
    return values


def run_study(side: Path, repo: Path, config: dict, cores: int, features: Path) -> dict:
    """One side: its config, the shared feature cache, then the whole study under /usr/bin/time -v."""
    side.mkdir(parents=True, exist_ok=True)
    (side / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    cache = side / Path(config.get("results_dir", "results")) / "features" / features.name
    cache.parent.mkdir(parents=True, exist_ok=True)
    if not cache.exists():
        try:
            os.link(features, cache)  # the same file: no copy, and both sides read identical features
        except OSError:  # another filesystem
            shutil.copy2(features, cache)
    command = ["/usr/bin/time", "-v", sys.executable, "-m", "snakemake", "-s", str(repo / "Snakefile")]
    command += ["--cores", str(cores), "all"]
    env = {**os.environ, "PYTHONPATH": str(repo / "src")}
    with open(side / "study.log", "w") as out, open(side / "study.err", "w") as err:
        status = subprocess.run(command, cwd=side, stdout=out, stderr=err, env=env).returncode
    timing = parse_time((side / "study.err").read_text(errors="replace"))
    return {**timing, "returncode": status, "code": str(repo)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.study_ab", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("dir", type=Path, help="working directory (one subdirectory per side)")
    parser.add_argument("--configfile", type=Path, help="config overrides (e.g. the offline mirror's paths)")
    parser.add_argument("--cores", type=int, default=2)
    parser.add_argument("--drop-experiments", nargs="*", default=EDGE_OF_STABILITY_EXPERIMENTS)
    parser.add_argument("--disable", nargs="*", default=EDGE_OF_STABILITY_MEASURES, help="dotted measure paths")
    parser.add_argument("--baseline-rev", help="side A runs the code at this git revision")
    args = parser.parse_args(argv)
    root = args.dir.resolve()
    root.mkdir(parents=True, exist_ok=True)
    done = [side for side in ("A", "B") if (root / side).exists()]
    if done:
        raise SystemExit(f"study_ab: {root} already has side(s) {done}: remove them or choose another directory")
    overrides = absolute_inputs(load_yaml(args.configfile) or {}) if args.configfile else {}
    config = side_config(REPO, overrides, root / "features" / "downloads")
    results_dir = Path(checked(config)["results_dir"])
    if results_dir.is_absolute():
        raise SystemExit("study_ab: results_dir must be relative (each side writes its own results)")
    repo_a = REPO
    if args.baseline_rev:
        repo_a = root / "baseline"
        if not repo_a.exists():
            git = ["git", "-C", str(REPO), "worktree", "add", "--detach", str(repo_a), args.baseline_rev]
            subprocess.run(git, check=True)
    # a baseline revision runs with its own config.yaml (its keys may differ), the same overrides
    base = side_config(repo_a, overrides, root / "features" / "downloads") if args.baseline_rev else config
    config_a = variant_config(base, args.drop_experiments, args.disable)
    if not args.baseline_rev:
        checked(config_a)  # before hours of side B
    target = results_dir / "features" / "features.h5"
    features = root / "features" / target
    if not features.exists():  # untimed: extracted once, read by both sides
        (root / "features").mkdir(exist_ok=True)
        (root / "features" / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
        command = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "--cores", str(args.cores)]
        subprocess.run([*command, str(target)], cwd=root / "features", check=True)
    sides = {
        "B": run_study(root / "B", REPO, config, args.cores, features),
        "A": run_study(root / "A", repo_a, config_a, args.cores, features),
    }
    timed = all(side["returncode"] == 0 and side["wall_s"] for side in sides.values())
    growth = sides["B"]["wall_s"] / sides["A"]["wall_s"] - 1 if timed else None
    report = {
        "A": {**sides["A"], "dropped_experiments": args.drop_experiments, "disabled": args.disable},
        "B": sides["B"],
        "wall_time_growth_b_over_a": growth,
        "baseline_rev": args.baseline_rev,
    }
    (root / "ab.json").write_text(json.dumps(report, indent=2))
    for name, side in sides.items():
        print(f"{name}: " + ", ".join(f"{k} {side.get(k)}" for k in ("wall", "user_s", "system_s", "returncode")))
    if growth is None:
        print(f"no growth: a side failed or was not timed (logs: {root}/A, {root}/B; {root / 'ab.json'})")
    else:
        print(f"wall time of B over A: {100 * growth:+.1f} %  ({root / 'ab.json'})")
    return 1 if any(side["returncode"] for side in sides.values()) else 0


if __name__ == "__main__":
    raise SystemExit(main())
