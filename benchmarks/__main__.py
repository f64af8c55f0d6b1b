"""Run every benchmark and write benchmarks/results.json (see benchmarks/README.md).

python -m benchmarks            # full run, writes benchmarks/results.json and the README table
python -m benchmarks --quick    # small sizes, CI smoke test; writes benchmarks/.cache/results-quick.json
python -m benchmarks --only train    # just benchmarks/bench_train*.py; its rows replace theirs in
                                     # benchmarks/results.json, the other rows stay
"""

from __future__ import annotations

import argparse
import datetime
import importlib
import json
import os
import platform
import sys
import traceback
from pathlib import Path

HERE = Path(__file__).resolve().parent
TABLE_START = "<!-- results-table:start -->"
TABLE_END = "<!-- results-table:end -->"


def machine_info() -> dict:
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as fh:
            cpu = next(line.split(":", 1)[1].strip() for line in fh if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }


def modules() -> list[str]:
    return sorted(p.stem for p in HERE.glob("bench_*.py"))


def is_gpu_row(row: dict) -> bool:
    """A row measured on a CUDA GPU (bench_gpu.py): it names its own device and machine in ``details``."""
    return row.get("details", {}).get("device_type") == "cuda"


def render_table(doc: dict) -> str:
    lines = [
        f"Measured on {doc['machine']['cpu']} ({doc['machine']['cpu_count']} cores), torch {doc['torch']}; "
        f"latest run {doc['date']} (each row's time: `details.measured_at` in results.json).",
        "",
        "| benchmark | ours | naive | ratio vs naive | target |",
        "|---|---|---|---|---|",
    ]
    gpu = [r for r in doc["results"] if is_gpu_row(r)]
    if gpu:
        d = gpu[0]["details"]
        lines[0] += f" GPU rows (`gpu_*`): {d.get('device')}, {d.get('measured_at', '')[:10]}."
    for r in doc["results"]:
        fmt = lambda v: "—" if v is None else (f"{v:.3g}" if isinstance(v, float) else str(v))  # noqa: E731
        naive_unit = r["unit"] if r["naive_value"] is not None else ""
        ratio = "—" if r["ratio_vs_naive"] is None else f"{r['ratio_vs_naive']:.2f}x"
        lines.append(
            f"| `{r['name']}` | {fmt(r['value'])} {r['unit']} | {fmt(r['naive_value'])} {naive_unit} "
            f"| {ratio} | {r['target']} |"
        )
    return "\n".join(lines)


def update_readme(doc: dict) -> None:
    readme = HERE / "README.md"
    text = readme.read_text() if readme.exists() else ""
    if TABLE_START in text and TABLE_END in text:
        head, rest = text.split(TABLE_START, 1)
        _, tail = rest.split(TABLE_END, 1)
        readme.write_text(f"{head}{TABLE_START}\n{render_table(doc)}\n{TABLE_END}{tail}")


def gpu_rows_to_keep(rows: list[dict], previous: dict) -> list[dict]:
    """A full run on a machine without a GPU keeps the GPU rows (bench_gpu.py) of the last run that had one."""
    names = {row["name"] for row in rows}
    return [
        {**row, "details": {"measured_at": previous["date"], **row.get("details", {})}}
        for row in previous["results"]
        if is_gpu_row(row) and row["name"] not in names
    ]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m benchmarks", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--quick", action="store_true", help="tiny sizes for a CI smoke test (timings meaningless)")
    ap.add_argument(
        "--only", nargs="*", default=None, help="run only the bench_*.py modules whose name contains one of these"
    )
    ap.add_argument("--output", type=Path, default=None, help="where to write the JSON (default depends on --quick)")
    args = ap.parse_args(argv)
    if args.only is not None:  # a selection that runs nothing would still rewrite results.json and the README
        available = modules()
        unknown = [sel for sel in args.only if not any(sel in name for name in available)]
        if unknown or not args.only:
            names = " ".join(unknown) or "(nothing)"
            ap.error(f"--only {names} matches no benchmark module; the modules are: {', '.join(available)}")

    # Measure what the workflow's jobs run with: their environment, read by glibc's allocator when a process starts
    # (normscape.pipeline.runtime.JOB_ENV). Without it, the suite starts itself again with it (the same arguments).
    sys.path.insert(0, str(HERE.parent / "src"))
    from normscape.pipeline.runtime import job_environment

    env = job_environment()
    if any(os.environ.get(key) != value for key, value in env.items()):
        search = os.pathsep.join(
            p for p in (str(HERE.parent), str(HERE.parent / "src"), os.environ.get("PYTHONPATH")) if p
        )
        argv = sys.argv[1:] if argv is None else argv
        os.execve(
            sys.executable, [sys.executable, "-m", "benchmarks", *argv], {**os.environ, **env, "PYTHONPATH": search}
        )
    import torch

    sys.path.insert(0, str(HERE.parent))
    rows, failed = [], []
    for name in modules():
        if args.only and not any(sel in name for sel in args.only):
            continue
        print(f"== {name}", flush=True)
        try:
            module = importlib.import_module(f"benchmarks.{name}")
            for row in module.run(quick=args.quick):
                print(
                    f"   {row['name']}: {row['value']:.4g} {row['unit']} (naive {row['naive_value']}, "
                    f"ratio {row['ratio_vs_naive']})",
                    flush=True,
                )
                rows.append(row)
        except Exception:  # a broken benchmark is reported, the others still run
            traceback.print_exc()
            failed.append(name)
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    for row in rows:
        row.setdefault("details", {})["measured_at"] = now
    doc = {"machine": machine_info(), "torch": torch.__version__, "date": now, "quick": args.quick, "results": rows}
    out = args.output or (HERE / ".cache" / "results-quick.json" if args.quick else HERE / "results.json")
    official = out == HERE / "results.json"
    if official and args.only and out.exists():
        # a partial rerun updates its own rows of the full results and keeps the others (each row says when)
        previous = json.loads(out.read_text())
        for row in previous["results"]:
            row.setdefault("details", {}).setdefault("measured_at", previous["date"])
        fresh = {row["name"]: row for row in rows}
        doc["results"] = [fresh.pop(row["name"], row) for row in previous["results"]] + list(fresh.values())
        if rows and all(is_gpu_row(row) for row in rows):
            # GPU rows (each names its machine in details) measured elsewhere: the file's machine stays the CPU's
            doc.update({k: previous[k] for k in ("machine", "torch", "date") if k in previous})
    elif official and out.exists() and not torch.cuda.is_available():
        doc["results"] += gpu_rows_to_keep(rows, json.loads(out.read_text()))
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(doc, indent=2) + "\n")
    if official:
        update_readme(doc)
    print(f"wrote {out}")
    if failed:
        print(f"FAILED benchmarks: {failed}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
