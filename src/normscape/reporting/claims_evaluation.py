"""Testing the claims on the run table: each row's per-seed differences, their statistics and verdict, and the
table of every claim's rows (:func:`evaluate_claims`).

Reasons replace a verdict where the numbers cannot carry one: "uninformative" (the statistic has one value in
every run compared), "estimator too noisy" (a stochastic measure's difference within ``noise_z`` standard errors
at some seed) and "not applicable" (a compared head did not learn in any seed).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from normscape.models.norms import NORM_LABELS
from normscape.reporting.claims import DEFAULTS, Row, study_claims
from normscape.reporting.claims_stats import (
    bootstrap_ci,
    claim_verdict,
    sidedness,
    sign_flip_p,
    smallest_p,
    tost_p,
    verdict,
)


def _term_values(table: pd.DataFrame, statistic: str, experiment: str, head: str, variant, learning: bool):
    sel = table[(table["experiment"] == experiment) & (table["head"] == head)]
    if variant is not None:
        sel = sel[sel["variant"] == variant]
    if statistic not in sel or sel.empty:
        return None
    values = pd.to_numeric(sel[statistic], errors="coerce")
    if learning and "learned" in sel:
        values = values.where(sel["learned"].astype(bool))
    if variant is not None:
        return dict(zip(sel["seed"], values))
    by_seed = pd.DataFrame({"seed": sel["seed"], "v": values}).groupby("seed")["v"]
    # the range over the sweep's variants needs every variant's value
    return {seed: (g.max() - g.min()) if g.notna().all() and len(g) > 1 else np.nan for seed, g in by_seed}


def _diffs(table: pd.DataFrame, statistic: str, row: Row) -> tuple[dict, list] | None:
    parts = [_term_values(table, statistic, e, h, v, row.require_learning) for _, e, h, v in row.terms]
    if any(p is None for p in parts):
        return None
    seeds = sorted(set.intersection(*(set(p) for p in parts)))
    return {seed: sum(c * p[seed] for (c, *_), p in zip(row.terms, parts)) for seed in seeds}, parts


def uninformative_reason(parts: list[dict], d: np.ndarray) -> str | None:
    """Why a row's statistic cannot speak: the same value in every run it compares (e.g. epochs to plateau = 1
    everywhere), or a difference that is identically zero."""
    values = np.array([v for p in parts for v in p.values()], dtype=float)
    values = values[np.isfinite(values)]
    if len(values) > 1 and np.ptp(values) == 0:
        return f"uninformative: the statistic is {values[0]:g} in every run compared"
    if len(d) > 1 and np.all(d == 0):
        return "uninformative: the difference is 0 for every seed"
    return None


def noisy_reason(table: pd.DataFrame, row: Row, diffs: dict, z: float) -> str | None:
    """'estimator too noisy' when some seed's difference is within ``z`` combined standard errors of 0: the
    verdict rests on every seed's sign, and that sign is not measured there."""
    if row.sem is None:
        return None
    sems = [_term_values(table, row.sem, e, h, v, row.require_learning) for _, e, h, v in row.terms]
    if any(p is None for p in sems):
        return "estimator too noisy: its standard error is not recorded"
    # independent estimates: the variance of the difference is the coefficient^2-weighted sum of variances
    variance = {seed: sum(c**2 * p.get(seed, np.nan) ** 2 for (c, *_), p in zip(row.terms, sems)) for seed in diffs}
    for seed, d in diffs.items():
        error = np.sqrt(variance.get(seed, np.nan))
        if not np.isfinite(error):
            return f"estimator too noisy: seed {seed} has no standard error (a single probe or draw)"
        if abs(d) <= z * error:
            return f"estimator too noisy: seed {seed} differs by {d:.3g}, within {z:g} x its standard error {error:.3g}"
    return None


def evaluate_row(table: pd.DataFrame, row: Row, settings: dict | None = None) -> dict | None:
    s = {**DEFAULTS, **(settings or {})}
    if row.untestable:
        return untestable_row(row)
    found = _diffs(table, row.statistic, row)
    if found is None:
        return None  # a run group this row needs is not in the study
    diffs, parts = found
    diffs = {seed: float(v) for seed, v in diffs.items() if np.isfinite(v)}
    d = np.array(list(diffs.values()))
    n = len(d)
    lo = hi = mean = p = p_tost = np.nan
    if n:
        mean = float(d.mean())
        lo, hi = bootstrap_ci(d, s["confidence"], s["bootstrap"], s["seed"])
        alternative = row.expect if row.expect in ("greater", "less") else "two-sided"
        p = sign_flip_p(d, alternative)
        if row.expect == "equivalent":
            p_tost = tost_p(d, row.margin)
    if n:
        result = verdict(d, lo, hi, row.expect, row.margin, p_tost, s["alpha"])
    elif row.require_learning and any(parts):
        result = NOT_APPLICABLE  # the runs exist, but a compared head did not learn in any seed
    else:
        result = "inconclusive"
    reason = (uninformative_reason(parts, d) or noisy_reason(table, row, diffs, s["noise_z"])) if n else None
    return {
        "statistic": row.statistic,
        "comparison": row.label,
        "expected": {
            "greater": "> 0",
            "less": "< 0",
            "equivalent": f"≈ 0 (within ±{row.margin:g}, TOST)",
            "different": f"≠ 0 (beyond ±{row.margin:g} to refute)",
        }[row.expect],
        "sided": sidedness(row.expect),
        "n_seeds": n,
        "per_seed": "; ".join(f"s{seed}: {v:.4g}" for seed, v in diffs.items()),
        "mean": mean,
        "ci_low": lo,
        "ci_high": hi,
        "p_exact": p_tost if row.expect == "equivalent" else p,
        "p_smallest": smallest_p(n, row.expect),
        "verdict": reason or result,
        "saddles": saddle_note(table, row),
    }


def saddle_note(table: pd.DataFrame, row: Row) -> str:
    """For rows on lambda_max: lambda_min of every run compared, * where the run sits at a saddle (its Hessian is
    indefinite beyond the eigenvalue tolerance), so the reader sees what the sharpness is the curvature of."""
    if not row.statistic.startswith("sharpness.top_eigenvalue") or "sharpness.min_eigenvalue" not in table:
        return ""
    notes = []
    for _, experiment, head, variant in row.terms:
        sel = table[(table["experiment"] == experiment) & (table["head"] == head) & (table["variant"] == variant)]
        for _, run in sel.sort_values("seed").iterrows():
            low = pd.to_numeric(pd.Series([run["sharpness.min_eigenvalue"]]), errors="coerce").iloc[0]
            if np.isfinite(low):
                star = "*" if run.get("sharpness.saddle") == 1 else ""
                notes.append(f"{NORM_LABELS.get(head, head)} s{run['seed']}: {low:.3g}{star}")
    return "λmin " + "; ".join(notes) if notes else ""


def untestable_row(row: Row) -> dict:
    """The result of a row that cannot be tested: its reason as the verdict, no numbers."""
    nan = float("nan")
    numbers = dict.fromkeys(("mean", "ci_low", "ci_high", "p_exact", "p_smallest"), nan)
    return {
        "statistic": row.statistic,
        "comparison": row.label,
        "expected": "—",
        "sided": "—",
        "n_seeds": 0,
        "per_seed": "",
        **numbers,
        "verdict": row.untestable,
        "saddles": "",
    }


NOT_APPLICABLE = "not applicable: a compared head did not learn (best val acc below claims.min_val_acc) in any seed"


def evaluate_claims(table: pd.DataFrame, settings: dict | None = None) -> pd.DataFrame:
    from normscape.reporting.claims_stability import with_stability_statistics

    table = with_stability_statistics(table, {**DEFAULTS, **(settings or {})})  # per-seed statistics over lr grids
    out = []
    for claim in study_claims(table, settings):
        rows = [r for r in (evaluate_row(table, row, settings) for row in claim.rows) if r is not None]
        overall = claim_verdict([r["verdict"] for r in rows])
        if not rows:
            out.append({"claim_id": claim.id, "claim": claim.text, "claim_verdict": overall, "verdict": overall})
        for r in rows:
            out.append({"claim_id": claim.id, "claim": claim.text, "claim_verdict": overall, **r})
    return pd.DataFrame(out)
