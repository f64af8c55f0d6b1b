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


# Snakemake's options that say which workflow and config a command reads (True: followed by values): the report
# command must repeat them, or it reads another config (config.yaml's runs, not this study's).
CONFIG_OPTIONS = {
    "--configfile": True,
    "--configfiles": True,
    "--config": True,
    "-C": True,
    "--replace-workflow-config": False,
    "--profile": True,
    "--workflow-profile": True,
    "--snakefile": True,
    "-s": True,
    "--directory": True,
    "-d": True,
}


def config_options(argv: Sequence[str]) -> list[str]:
    """The options of a Snakemake command line (``sys.argv``) that choose its workflow and config, in order. An
    option's values run to the next argument starting with "-", as Snakemake reads them."""
    kept, taking = [], False
    for arg in argv[1:]:
        name = arg.split("=", 1)[0]
        if arg.startswith("-"):
            taking = name in CONFIG_OPTIONS and CONFIG_OPTIONS[name] and "=" not in arg
            if name in CONFIG_OPTIONS:
                kept.append(arg)
        elif taking:
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
