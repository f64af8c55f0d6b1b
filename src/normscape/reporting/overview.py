"""What a finished `snakemake all` prints last: the study in a few lines, read from its generated tables.

Final test accuracy (mean ± std over seeds) per head and experiment, each claim with its verdict, and where the
full tables and the report are. Read from ``tables/summary.csv`` and ``tables/claims.csv`` (never computed
here), and only when the run that ends wrote them: a run that targeted one figure, downloaded, or found the tables
up to date prints nothing (tables from before a config edit would be shown as if they were its results).
"""

from __future__ import annotations

import csv
import math
import shlex
from collections.abc import Sequence
from pathlib import Path

from normscape.models.norms import label


def _rows(path: Path) -> list[dict]:
    with path.open(newline="") as fh:
        return list(csv.DictReader(fh))


def _accuracy(row: dict) -> str:
    mean, std = row.get("final_test_acc_mean") or "", row.get("final_test_acc_std") or ""
    if not mean or math.isnan(float(mean)):
        return "diverged" if row.get("diverged", "").split("/")[0] not in ("", "0") else "-"
    spread = f" ± {100 * float(std):.1f}" if std and not math.isnan(float(std)) else ""
    return f"{100 * float(mean):.1f}{spread} %"


# Snakemake's options that say which workflow and config a command reads, with how many values each takes (None:
# every word up to the next option): the report command must repeat them, or it reads another config.
CONFIG_OPTIONS = {
    "--configfile": None,
    "--configfiles": None,
    "--config": None,
    "-C": None,
    "--replace-workflow-config": 0,
    "--profile": 1,
    "--workflow-profile": 1,
    "--snakefile": 1,
    "-s": 1,
    "--directory": 1,
    "-d": 1,
}


def config_options(argv: Sequence[str]) -> list[str]:
    """The options of a Snakemake command line (``sys.argv``) that choose its workflow and config, in order, with
    their values: one word for a one-value option, every word up to the next option for ``--config(file)``
    (Snakemake reads those so too), attached forms (``--profile=p``, ``-dDIR``) as they are."""
    kept, wanted = [], 0
    for arg in argv[1:]:
        if not arg.startswith("-"):
            if wanted:
                kept.append(arg)
                wanted -= 1
            continue
        name = arg.split("=", 1)[0]
        short = name if name.startswith("--") else name[:2]
        wanted = 0
        if name in CONFIG_OPTIONS:
            kept.append(arg)
            if "=" not in arg:
                wanted = len(argv) if CONFIG_OPTIONS[name] is None else CONFIG_OPTIONS[name]
        elif short in CONFIG_OPTIONS and len(arg) > 2:  # -dDIR, -Cseeds=[0]
            kept.append(arg)
    return kept


def study_overview(results_dir: str | Path, written_since: float | None = None, argv: Sequence[str] = ()) -> str | None:
    """The lines to print, or None when the study's tables are not there (or, with ``written_since``, a
    ``time.time()``, were last written before it). ``argv``: the Snakemake command line that ran, whose config
    options the report command repeats."""
    tables = Path(results_dir) / "tables"
    summary, claims = tables / "summary.csv", tables / "claims.csv"
    if not summary.is_file() or (written_since is not None and summary.stat().st_mtime < written_since):
        return None
    rows = [r for r in _rows(summary) if r.get("variant") == "base"]
    experiments = list(dict.fromkeys(r["experiment"] for r in rows))
    heads = list(dict.fromkeys(r["head"] for r in rows))
    cells = {(r["head"], r["experiment"]): _accuracy(r) for r in rows}
    width = max([len(label(h)) for h in heads] + [4])
    columns = [max(len(e), *(len(cells.get((h, e), "")) for h in heads)) for e in experiments]
    lines = ["", "normscape: final test accuracy (mean ± std over seeds)"]
    lines.append("  " + "head".ljust(width) + "  " + "  ".join(e.ljust(w) for e, w in zip(experiments, columns)))
    for head in heads:
        values = "  ".join(cells.get((head, e), "").ljust(w) for e, w in zip(experiments, columns))
        lines.append("  " + label(head).ljust(width) + "  " + values)
    if claims.is_file():
        lines += ["", "claims (verdicts and statistics: tables/claims.md):"]
        verdicts = {c.get("claim_id", c["claim"]): c for c in _rows(claims)}  # a claim's rows share its verdict
        lines += [f"  - {c['claim']}: {c.get('claim_verdict') or c['verdict']}" for c in verdicts.values()]
    lines += [
        "",
        f"tables: {tables}/summary.md, {tables}/claims.md; figures: {Path(results_dir) / 'figures'}/",
        "report: "
        + shlex.join(["snakemake", "--report", str(Path(results_dir) / "report.html"), *config_options(argv)])
        + "  (one self-contained HTML file)",
    ]
    return "\n".join(lines)
