"""The claims table as files: results/tables/claims.md (a reading guide, then one table per claim) and
claims.csv (every number), written atomically.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from normscape.pipeline.atomic import atomic_path, write_text
from normscape.reporting.claims import DEFAULTS
from normscape.reporting.claims_evaluation import evaluate_claims
from normscape.reporting.run_table import run_table


def seed_count(result: pd.DataFrame) -> int:
    """The most seeds any row of the study compared (0 when none was testable)."""
    n = pd.to_numeric(result.get("n_seeds", pd.Series(dtype=float)), errors="coerce")
    return int(n.max()) if n.notna().any() else 0


def reading_guide(result: pd.DataFrame, alpha: float) -> str:
    """What a verdict and the CI column mean at this study's number of seeds, stated before the tables so that a
    reader does not take "supported" for "significant" or the interval for a confidence statement."""
    n = seed_count(result)
    if n < 2:
        return (
            "How to read the verdicts: fewer than 2 seeds per comparison, so every row is inconclusive — a single "
            "seed cannot tell an effect from seed-to-seed noise."
        )
    ci = (
        "The CI column is a percentile bootstrap interval of the mean difference over the seeds: a range, not a "
        "significance test."
    )
    if 2.0**-n > alpha:  # the test cannot reach alpha: its level is raised to the smallest p, 2^-n
        return (
            f"How to read the verdicts: with n = {n} seeds the exact one-sided test cannot reach p <= {alpha:g} "
            f"(its smallest p is 2^-{n} = {2.0**-n:.3g}), so **supported** means every seed's difference has the "
            "claimed sign (refuted: every seed's has the other sign): consistency across seeds, not significance. " + ci
        )
    if 2 * 2.0**-n > alpha:  # only full agreement reaches alpha
        return (
            f"How to read the verdicts: with n = {n} seeds, **supported** means every seed's difference has the "
            f"claimed sign (refuted: every seed's has the other sign): the only pattern whose exact one-sided p, "
            f"2^-{n} = {2.0**-n:.3g}, is at most {alpha:g}. " + ci
        )
    return (
        f"How to read the verdicts: with n = {n} seeds, **supported** means the exact sign-flip test in the claimed "
        f"direction gives p <= {alpha:g} and the CI lies on the claimed side of 0 (refuted: both on the other side). "
        + ci
    )


def to_markdown(result: pd.DataFrame, settings: dict | None = None) -> str:
    s = {**DEFAULTS, **(settings or {})}
    lines = [reading_guide(result, s["alpha"]), ""]
    for _, g in result.groupby("claim_id", sort=False):
        first = g.iloc[0]
        lines += [f"### {first['claim']} — **{first['claim_verdict']}**", ""]
        if "statistic" not in g or g["statistic"].isna().all():
            lines += ["(no runs for this claim in the study)", ""]
            continue
        lines += [
            "| verdict | comparison | statistic | expected | sided | n | per seed | mean | CI (≈ min/max at small n) "
            "| exact p | smallest p at n |",
            "|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for _, r in g.iterrows():
            ci = f"[{r['ci_low']:.4g}, {r['ci_high']:.4g}]" if np.isfinite(r["ci_low"]) else "—"
            mean = f"{r['mean']:.4g}" if np.isfinite(r["mean"]) else "—"
            p = f"{r['p_exact']:.3g}" if np.isfinite(r["p_exact"]) else "—"
            power = f"{r['p_smallest']:.3g}" if np.isfinite(r["p_smallest"]) else "—"
            n = f"{r['n_seeds']:.0f}" if np.isfinite(r["n_seeds"]) else "—"  # float once a row lacks it
            lines.append(
                f"| {r['verdict']} | {r['comparison']} | {r['statistic']} | {r['expected']} | {r['sided']} | {n} "
                f"| {r['per_seed'] or '—'} | {mean} | {ci} | {p} | {power} |"
            )
        notes = [
            f"{r['comparison']}: {r['saddles']}"
            for _, r in g.iterrows()
            if isinstance(r.get("saddles"), str) and r["saddles"]
        ]
        if notes:
            lines += [
                "",
                "λmin beside λmax (* = at a saddle: λmin < 0 beyond the eigenvalue tolerance) — " + " | ".join(notes),
            ]
        lines.append("")
    note = (
        f"Paired across seeds: per seed the comparison's difference; mean, {100 * s['confidence']:.0f} % percentile "
        f"bootstrap interval ({s['bootstrap']} resamples) and the exact sign-flip p-value, sided as the 'sided' "
        "column says (> 0 / < 0 rows one-sided, ≠ rows two-sided, ≈ rows TOST: the larger p of two one-sided tests "
        "against ±margin). 'smallest p at n': the smallest p the exact test can reach with these seeds (2^-n "
        "one-sided, 2^(1-n) two-sided): the test's power ceiling. '> 0' / '< 0' / '≠' rows are supported when the "
        f"interval lies on the claimed side of 0 and the exact p is at most max({s['alpha']:g}, the smallest p) "
        "(with few seeds only full agreement in sign reaches it). '≈ 0' is supported only when TOST gives p <= "
        f"{s['alpha']:g} — 'not testable at n seeds' when even the smallest p is above it. 'uninformative': the "
        "statistic is the same in every run compared. 'estimator too noisy': a stochastic estimate whose difference "
        f"at some seed is within {s['noise_z']:g} of its combined standard errors. Accuracies as fractions, tested "
        "on both the final epoch (final_test_acc) and the best-validation checkpoint (best_test_acc); 'no effect' "
        f"within ±{s['accuracy_margin']:g}. Convergence: epochs to {100 * s['plateau_fraction']:.0f} % of the run's "
        "own best validation accuracy; val_auc / val_loss_auc = mean validation accuracy / loss over training "
        "(area under the curve / epoch span). Runs with best validation accuracy < "
        f"{s['min_val_acc']:g} count as not learning (no convergence speed or flatness)."
    )
    if result["claim_id"].astype(str).str.startswith("eos_").any():
        from normscape.reporting.claims_stability import NOTE

        note += "\n\n" + NOTE
    return "\n".join(lines) + "\n" + note + "\n"


def write_claims(
    summary_paths: list, metrics_paths: list, measure_paths: dict[str, list], csv_path, md_path, settings=None
) -> pd.DataFrame:
    """Build the run table, evaluate every claim, write claims.csv and claims.md; returns the result table."""
    s = {**DEFAULTS, **(settings or {})}
    table = run_table(summary_paths, metrics_paths, measure_paths, s["plateau_fraction"], s["min_val_acc"])
    result = evaluate_claims(table, settings)
    with atomic_path(csv_path, suffix=".csv") as tmp:
        result.to_csv(tmp, index=False)
    write_text(md_path, "# Claims of the study, tested\n\n" + to_markdown(result, settings))
    return result
