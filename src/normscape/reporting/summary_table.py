"""The quantitative comparison table (replaces the study's qualitative Table 5): one row per experiment x head
x variant, mean +- std over seeds, as CSV (all numbers) and paste-ready Markdown.

Each run's sharpness numbers are used only when their recorded run identity equals the run's summary.json
identity (docs/provenance.md): sharpness of another training of the same run is an error, not a table row.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from normscape.models.norms import NORM_LABELS
from normscape.pipeline.atomic import atomic_path, write_text
from normscape.pipeline.errors import DataError
from normscape.reporting.run_files import load_metrics, load_summaries, norm_sort_key, run_key, variant_value
from normscape.reporting.run_table import curve_statistics

COLUMNS = [
    ("final_test_acc", "test acc, final epoch"),
    ("best_test_acc", "test acc, best-val checkpoint"),
    ("epochs_to_plateau", "epochs to plateau"),
    ("val_auc", "mean val acc (AUC)"),
    ("val_loss_auc", "mean val loss (AUC)"),
    ("final_val_loss", "final val loss"),
    ("grad_norm_median", "|g| median"),
    ("grad_norm_p99", "|g| p99"),
    ("clipped_fraction", "clipped"),
    ("top_eigenvalue", "λmax (sharpness)"),
    ("min_eigenvalue", "λmin"),
    ("hessian_trace", "Hessian trace (exact)"),
    ("wall_time_s", "wall time (s)"),
]


def run_rows(
    summary_paths: list[str],
    sharpness_paths: list[str],
    metrics_paths: list[str] = (),
    plateau_fraction: float = 0.95,
) -> pd.DataFrame:
    """One row per run. Convergence relative to the run's own plateau (normscape.reporting.run_table.curve_statistics,
    from its metrics.csv): frozen features cap the accuracy, so fixed thresholds would read "—" for every head."""
    curves = {}
    metrics = load_metrics(list(metrics_paths))
    if len(metrics):
        for key, g in metrics.groupby(["experiment", "head", "variant", "seed"]):
            g = g.sort_values("epoch")
            val_loss = g["val_loss"].to_numpy(float) if "val_loss" in g else None
            curves[key] = curve_statistics(
                g["val_acc"].to_numpy(float), g["epoch"].to_numpy(float), plateau_fraction, val_loss
            )
    sharp, sharp_path = {}, {}
    for path in sharpness_paths:
        k = run_key(path)
        key = (k["experiment"], k["head"], k["variant"], k["seed"])
        sharp[key], sharp_path[key] = json.loads(Path(path).read_text()), path
    rows = []
    for s in load_summaries(summary_paths):
        key = (s["experiment"], s["head"], s["variant"], s["seed"])
        sh = sharp.get(key, {})
        run_identity = (s.get("provenance") or {}).get("identity")
        if sh and run_identity and (sh.get("provenance") or {}).get("run_identity") != run_identity:
            raise DataError(
                f"{sharp_path[key]} was computed from another training of run {'/'.join(map(str, key))} than its "
                f"summary.json ({run_identity}); rerun its landscape: snakemake --cores 2 --forcerun landscape all"
            )
        rows.append(
            {
                "experiment": s["experiment"],
                "head": s["head"],
                "variant": s["variant"],
                "seed": s["seed"],
                "final_test_acc": s["final"]["test_acc"],
                "best_test_acc": s["best"]["test_acc"],
                **curves.get(key, {"epochs_to_plateau": None, "val_auc": None, "val_loss_auc": None}),
                "final_val_loss": s["final"]["val_loss"],
                "grad_norm_median": s["grad_norm"]["median"],
                "grad_norm_p99": s["grad_norm"]["p99"],
                "clipped_fraction": s["grad_norm"]["clipped_fraction"],
                "diverged": bool(s["diverged"]),
                "top_eigenvalue": sh.get("top_eigenvalue"),
                "min_eigenvalue": sh.get("min_eigenvalue"),
                "saddle": sh.get("saddle"),
                "hessian_trace": sh.get("hessian_trace"),
                "wall_time_s": s["wall_time_s"],
            }
        )
    return pd.DataFrame(rows)


def aggregate(runs: pd.DataFrame) -> pd.DataFrame:
    """Mean and std over seeds of every numeric column; ``diverged`` as k/n."""
    out = []
    for (exp, head, variant), g in runs.groupby(["experiment", "head", "variant"], sort=False):
        row = {
            "experiment": exp,
            "head": head,
            "variant": variant,
            "seeds": len(g),
            "diverged": f"{int(g['diverged'].sum())}/{len(g)}",
            # runs whose Hessian is indefinite beyond the eigenvalue tolerance (a saddle, not a minimum)
            "saddle": f"{int(g['saddle'].eq(True).sum())}/{int(g['saddle'].notna().sum())}",
        }
        for col, _ in COLUMNS:
            values = pd.to_numeric(g[col], errors="coerce").to_numpy(dtype=float)
            finite = values[np.isfinite(values)]
            row[f"{col}_mean"] = float(finite.mean()) if finite.size else np.nan
            row[f"{col}_std"] = float(finite.std(ddof=1)) if finite.size > 1 else np.nan
            row[f"{col}_n"] = int(finite.size)
        out.append(row)
    df = pd.DataFrame(out)
    if len(df):
        df["_variant"] = df["variant"].map(variant_sort_key)
        df["_order"] = df["head"].map(norm_sort_key)
        df = df.sort_values(["experiment", "_variant", "_order"]).drop(columns=["_variant", "_order"])
        df = df.reset_index(drop=True)
    return df


def variant_sort_key(variant: str) -> tuple[float, str]:
    """Swept variants in the order of their value (bs-8, bs-32, bs-128, bs-256), not as text; 'base' first."""
    value = variant_value(variant)
    return (-np.inf if value is None else value, variant)


PERCENT = ("final_test_acc", "best_test_acc", "clipped_fraction", "val_auc")


def _fmt(mean: float, std: float, n: int, seeds: int, col: str) -> str:
    if not np.isfinite(mean):
        return "—"
    pct = col in PERCENT
    scale, digits = (100.0, 1) if pct else (1.0, 3 if abs(mean) < 100 else 0)
    if col.startswith("epochs_to"):
        digits = 1
    unit = "%" if pct else ""
    if n > 1 and std == 0:  # every seed gave the same number: a spread of 0.000 would read as a measured one
        return f"{mean * scale:.{digits}f}{unit} (every seed)"
    text = f"{mean * scale:.{digits}f}"
    if np.isfinite(std):
        text += f" ± {std * scale:.{digits}f}"
    if col.startswith("epochs_to") and n < seeds:
        text += f" ({n} of {seeds} seeds)"  # the others never reached their plateau (diverged or did not learn)
    return text + unit


def _constant(g: pd.DataFrame, col: str) -> bool:
    """True when every run of the experiment has the same value of ``col`` (at least two runs): a column that
    says nothing about any difference, e.g. epochs to plateau = 1 when every run plateaus in its first epoch."""
    means, stds = g[f"{col}_mean"].to_numpy(float), g[f"{col}_std"].to_numpy(float)
    runs = int(g[f"{col}_n"].sum())
    return (
        runs > 1
        and bool(np.isfinite(means).all())
        and np.ptp(means) == 0
        and bool(np.all((stds == 0) | ~np.isfinite(stds)))
    )


def _seed_spread(table: pd.DataFrame) -> float:
    """The largest seed-to-seed std of final test accuracy among rows with several seeds (NaN if none)."""
    multi = table[table["seeds"] > 1]["final_test_acc_std"].to_numpy(float)
    multi = multi[np.isfinite(multi)]
    return float(multi.max()) if multi.size else np.nan


def experiment_markdown(exp: str, g: pd.DataFrame, seed_spread: float) -> str:
    """One experiment's table: only the columns that can say something about it, and a line saying why the
    others are not there (not measured for this experiment, or the same in every run)."""
    swept = bool((g["variant"] != "base").any())
    measured_saddles = not g["saddle"].str.endswith("/0").all()
    shown, constant, absent = [], [], []
    for col, name in COLUMNS:
        if not np.isfinite(g[f"{col}_mean"].to_numpy(float)).any():
            absent.append(name)
        elif _constant(g, col):
            value = _fmt(float(g[f"{col}_mean"].iloc[0]), np.nan, 1, 1, col)
            constant.append(f"{name} = {value} in every run")
        else:
            shown.append((col, name))
    head = ["head"] + (["variant"] if swept else []) + ["seeds", "diverged"] + (["saddle"] if measured_saddles else [])
    head += [name for _, name in shown]
    lines = ["| " + " | ".join(h.replace("|", "\\|") for h in head) + " |", "|" + "---|" * len(head)]
    for _, r in g.iterrows():
        cells = [NORM_LABELS.get(r["head"], r["head"])] + ([r["variant"]] if swept else [])
        saddle = "—" if r["saddle"].endswith("/0") else r["saddle"]  # none of its runs measured
        cells += [str(r["seeds"]), r["diverged"]] + ([saddle] if measured_saddles else [])
        cells += [_fmt(r[f"{c}_mean"], r[f"{c}_std"], r[f"{c}_n"], r["seeds"], c) for c, _ in shown]
        lines.append("| " + " | ".join(cells) + " |")
    seeds = int(g["seeds"].max())
    notes = []
    if seeds == 1:
        spread = (
            f" (test accuracy varies by up to ±{100 * seed_spread:.1f} points between seeds in this study's "
            "multi-seed experiments)"
            if np.isfinite(seed_spread)
            else ""
        )
        notes.append(
            "One seed per run, so no spread: a difference between rows is an effect only where it exceeds the "
            f"seed-to-seed variation{spread}."
        )
    if constant:
        notes.append("Not shown, the same in every run: " + "; ".join(constant) + ".")
    if absent:
        notes.append("Not measured for this experiment: " + ", ".join(absent) + ".")
    title = f"### {exp} — {len(g)} row{'s' if len(g) > 1 else ''}, {seeds} seed{'s' if seeds > 1 else ''} each"
    text = title + "\n\n" + "\n".join(lines) + "\n"
    return text + ("\n" + " ".join(notes) + "\n" if notes else "")


def to_markdown(table: pd.DataFrame, plateau_fraction: float = 0.95) -> str:
    """One table per experiment (its own columns: a sweep's variants, only the statistics it measured and that
    differ between its runs), then the notes on every column."""
    spread = _seed_spread(table)
    sections = [experiment_markdown(exp, g, spread) for exp, g in table.groupby("experiment", sort=False)]
    note = (
        "Mean ± std over seeds. Accuracies in %. 'epochs to plateau': first epoch whose validation accuracy "
        f"reaches {plateau_fraction:.0%} of that run's own best; 'mean val acc "
        "(AUC)' / 'mean val loss (AUC)': area under the validation accuracy / loss curve / epoch span. Test acc: of "
        "the final epoch's weights and of the checkpoint with the best validation accuracy. |g|: global gradient "
        "L2 norm per step before clipping. Hessian numbers on the training loss w.r.t. the head's parameters (eval "
        "mode): λmax = largest algebraic eigenvalue (sharpness), λmin = smallest, both by Lanczos to a relative "
        "residual tolerance; 'saddle': runs (of those measured) whose λmin < 0 beyond that tolerance — there λmax "
        "is the curvature of the steepest upward direction, not of a minimum. Trace: exact (its diagonal summed)."
    )
    return "# Summary of all runs\n\n" + "\n".join(sections) + "\n" + note + "\n"


def write_summary_table(
    summary_paths: list[str],
    sharpness_paths: list[str],
    csv_path: str,
    md_path: str,
    metrics_paths: list[str] = (),
    plateau_fraction: float = 0.95,
) -> pd.DataFrame:
    table = aggregate(run_rows(summary_paths, sharpness_paths, metrics_paths, plateau_fraction))
    with atomic_path(csv_path, suffix=".csv") as tmp:
        table.to_csv(tmp, index=False)
    write_text(md_path, to_markdown(table, plateau_fraction))
    return table
