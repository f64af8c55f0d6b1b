"""Are two benchmark runs the same within a tolerance? (is a figure reproducible, or noise?)

python -m benchmarks --output /tmp/run1.json && python -m benchmarks --output /tmp/run2.json
python -m benchmarks.compare /tmp/run1.json /tmp/run2.json            # every figure within 20 %? exit 0 / 1

Each row present in both files is compared on ``value`` and ``ratio_vs_naive`` (where both runs have one):
relative difference = |a - b| / max(|a|, |b|). Rows only one run has are listed, not failed.

A row may state its measurement resolution (``details.resolution``, in its unit): values that differ by no more
than that agree whatever their relative difference (0 vs 9 page faults per image is 10x, and the same at the
resolution of a figure whose naive side is 2,000), and where a run's value is within it of zero, its ratio vs
naive (a division by noise) is not compared.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

FIELDS = ("value", "ratio_vs_naive")


def relative_difference(a: float, b: float) -> float:
    scale = max(abs(a), abs(b))
    return 0.0 if scale == 0 else abs(a - b) / scale


def compare(first: list[dict], second: list[dict], tolerance: float = 0.2) -> tuple[list[dict], list[str]]:
    """(one record per compared figure: name, field, a, b, relative, ok; the row names only one run has)."""
    by_name = {row["name"]: row for row in second}
    records, unmatched = [], sorted(set(by_name) ^ {row["name"] for row in first})
    for row in first:
        other = by_name.get(row["name"])
        if other is None:
            continue
        resolution = max(float(r.get("details", {}).get("resolution", 0.0)) for r in (row, other))
        at_floor = any(abs(float(r["value"])) <= resolution for r in (row, other)) if resolution else False
        for field in FIELDS:
            a, b = row.get(field), other.get(field)
            if a is None or b is None or (field == "ratio_vs_naive" and at_floor):
                continue
            rel = relative_difference(float(a), float(b))
            ok = rel <= tolerance or (field == "value" and abs(float(a) - float(b)) <= resolution)
            records.append({"name": row["name"], "field": field, "a": a, "b": b, "relative": rel, "ok": ok})
    return records, unmatched


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.compare", description=__doc__.splitlines()[0])
    ap.add_argument("first", type=Path)
    ap.add_argument("second", type=Path)
    ap.add_argument("--tolerance", type=float, default=0.2, help="largest relative difference (default 0.2)")
    args = ap.parse_args(argv)
    first, second = (json.loads(p.read_text())["results"] for p in (args.first, args.second))
    records, unmatched = compare(first, second, args.tolerance)
    print("| benchmark | figure | first | second | difference | within |")
    print("|---|---|---|---|---|---|")
    for r in records:
        within = "yes" if r["ok"] else "NO"
        print(f"| `{r['name']}` | {r['field']} | {r['a']:.4g} | {r['b']:.4g} | {r['relative']:.1%} | {within} |")
    if unmatched:
        print(f"\nin one run only: {', '.join(unmatched)}")
    bad = [r for r in records if not r["ok"]]
    print(f"\n{len(records) - len(bad)} of {len(records)} figures within {args.tolerance:.0%}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
