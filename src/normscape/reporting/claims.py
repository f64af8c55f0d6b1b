"""The study's claims as a generated table of verdicts (results/tables/claims.{md,csv}).

Each claim is tested by one or more *rows*. A row is a paired comparison across seeds: for every seed that
has all the runs it needs, d_s = (statistic of side A) - (statistic of side B), where a side is a sum of
signed terms (experiment, head, variant) — e.g. a difference of two runs, or a difference of differences —
or, for a sweep, the range of the statistic over the sweep's variants. From the d_s:

* mean and a 95 % percentile **bootstrap** confidence interval of the mean (seeds resampled; seeded);
* the **exact sign-flip** p-value (all 2^n sign patterns), sided per row: one-sided in the claimed direction
  for ``greater``/``less``, two-sided for ``different``, TOST (two one-sided tests against +-margin, the larger
  p) for ``equivalent``; beside it the smallest p the test can reach at this n and sidedness (its power ceiling);
* the row's **verdict** from the interval: ``greater``/``less`` — supported when the interval excludes 0 on
  the claimed side, refuted when it excludes 0 on the other; ``equivalent`` (no effect) — supported only when
  TOST gives p <= alpha (and "not testable at n seeds" when 2^-n > alpha: an interval inside +-margin from 3
  seeds is no evidence of equivalence), refuted when the interval lies outside +-margin; ``different`` —
  supported when it excludes 0, refuted when it lies inside +-margin; otherwise (and always with fewer than 2
  seeds) inconclusive. Two reasons replace a verdict: "uninformative" (the statistic has one value in every run
  compared, e.g. epochs to plateau = 1) and "estimator too noisy" (a stochastic measure whose difference at some
  seed is within ``noise_z`` of its combined standard errors: its sign there is not measured).

With n seeds the percentile bootstrap interval spans roughly [min d_s, max d_s] (n = 3: it excludes 0 exactly
when all seeds agree in sign), and the exact test cannot go below 2^-n (0.125 at n = 3): the table says so, and
"supported" means "consistent across every seed", not "significant". A claim is supported/refuted when all its
rows are, ``mixed`` when rows disagree, inconclusive otherwise.

Convergence speed is relative to each run's own plateau: the first epoch whose validation accuracy reaches
``plateau_fraction`` of that run's best, and the area under the validation-accuracy curve (trapezoid, divided
by the epoch span = mean accuracy over training), and the area under the validation-loss curve (lower =
faster). Accuracy claims are tested on the final epoch and the best-validation checkpoint both. Runs that never
learn (best validation accuracy below ``min_val_acc``) have no convergence speed and no curvature: a dead
network's flatness is not a finding. The edge-of-stability claims (Adam's preconditioned sharpness, the critical
learning rate of an lr grid) are built in :mod:`normscape.reporting.claims_stability` from the same rows; a row that
cannot be tested there carries its reason (``Row.untestable``, "not applicable: ...") instead of numbers.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from normscape.models.norms import NORMS
from normscape.pipeline.atomic import atomic_path, write_text
from normscape.reporting.run_files import HEAD_LABELS
from normscape.reporting.run_table import run_table

DEFAULTS = {
    "plateau_fraction": 0.95,
    "min_val_acc": 0.2,
    "confidence": 0.95,
    "bootstrap": 10000,
    "seed": 0,
    "accuracy_margin": 0.005,  # |difference| below 0.5 percentage points counts as "no effect"
    "alpha": 0.05,  # level of the exact tests: equivalence (TOST) needs p <= alpha, reachable only with enough seeds
    "noise_z": 2.0,  # a stochastic measure's difference counts only beyond this many of its standard errors
    "experiments": {
        "convergence": "convergence",
        "clipping": "clipping",
        "high_lr": "high_lr",
        "batch_size": "batch_size",
        "stability": "stability",  # the lr grid at the study's batch size (normscape.reporting.claims_stability)
        "stability_large_batch": "stability_large_batch",
    },
    "flatness_measures": {
        "sharpness.top_eigenvalue": "λmax (largest algebraic Hessian eigenvalue)",
        "sharpness.hessian_trace": "Hessian trace (exact)",
        "sharpness.hessian_trace_hutchinson": "Hessian trace (Hutchinson estimate)",
        "sharpness.loss_increase_at_radius.0.5": "loss increase at r = 0.5 (filter-normalised)",
        "spectrum.train.top_eigenvalues.0": "λmax in train mode (BatchNorm: batch statistics)",
        "spectrum.eval.slq_trace": "Hessian trace (SLQ)",
        "adaptive.eval.average.0.05": "average-case adaptive sharpness (rho = 0.05)",
        "adaptive.eval.worst.0.002": "worst-case adaptive sharpness (rho = 0.002)",
        # like with like: every head where its training loss first reaches a level all learning heads reach
        # (normscape.curvature.matched_loss), and beside it the final point measured the same way
        "matched.top_eigenvalue": "λmax at matched training loss",
        "matched.hessian_trace": "Hessian trace at matched training loss",
        "matched.final_top_eigenvalue": "λmax at the final point (measured as the matched one)",
    },
    # the standard error of each stochastic measure (a row on it says "estimator too noisy" within its error)
    "standard_errors": {
        "sharpness.hessian_trace_hutchinson": "sharpness.hessian_trace_hutchinson_sem",
        "spectrum.eval.slq_trace": "spectrum.eval.slq_trace_sem",
        "adaptive.eval.average.0.05": "adaptive.eval.average_sem.0.05",
        "matched.hessian_trace": "matched.hessian_trace_sem",
    },
    "smoothness_measures": {
        "smoothness.loss_range_median": "loss range along the update (median over steps)",
        "smoothness.grad_change_median": "gradient change along the update (median over steps)",
        "smoothness.beta_median": "effective beta-smoothness (median over steps)",
    },
}


# --------------------------------------------------------------------------------------------- statistics
def bootstrap_ci(d: np.ndarray, confidence: float, resamples: int, seed: int) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of ``d`` (seeds resampled with replacement)."""
    rng = np.random.default_rng(seed)
    means = d[rng.integers(0, len(d), size=(resamples, len(d)))].mean(1)
    tail = 100 * (1 - confidence) / 2
    return float(np.percentile(means, tail)), float(np.percentile(means, 100 - tail))


def sign_flip_p(d: np.ndarray, alternative: str) -> float:
    """Exact paired permutation (sign-flip) test of mean(d) = 0; alternative 'greater', 'less' or 'two-sided'."""
    signs = np.array(list(itertools.product((1.0, -1.0), repeat=len(d))))
    means = (signs * d[None, :]).mean(1)
    obs, tol = d.mean(), 1e-12 * max(np.abs(d).max(), 1e-300)
    if alternative == "greater":
        return float(np.mean(means >= obs - tol))
    if alternative == "less":
        return float(np.mean(means <= obs + tol))
    return float(np.mean(np.abs(means) >= abs(obs) - tol))


def sidedness(expect: str) -> str:
    """How the exact test of a row is sided."""
    return {"greater": "one-sided (> 0)", "less": "one-sided (< 0)", "different": "two-sided"}.get(
        expect, "TOST: two one-sided, vs ±margin"
    )


def smallest_p(n: int, expect: str) -> float:
    """The smallest p-value the exact sign-flip test can reach with n seeds: 2^-n one-sided (also each of TOST's
    two tests), 2^(1-n) two-sided (the observed pattern and its mirror)."""
    if n < 1:
        return float("nan")
    return 2.0 ** (1 - n) if expect == "different" else 2.0**-n


def tost_p(d: np.ndarray, margin: float) -> float:
    """Equivalence within ±margin by two one-sided exact sign-flip tests (TOST): max of p(mean > -margin) and
    p(mean < margin)."""
    return max(sign_flip_p(d + margin, "greater"), sign_flip_p(d - margin, "less"))


def verdict(lo: float, hi: float, expect: str, margin: float, n: int, p_tost: float = np.nan, alpha=0.05) -> str:
    if n < 2:
        return "inconclusive"
    inside = -margin <= lo and hi <= margin
    if expect == "greater":
        return "supported" if lo > 0 else "refuted" if hi < 0 else "inconclusive"
    if expect == "less":
        return "supported" if hi < 0 else "refuted" if lo > 0 else "inconclusive"
    if expect == "different":
        return "supported" if lo > 0 or hi < 0 else "refuted" if inside else "inconclusive"
    if expect == "equivalent":
        if lo > margin or hi < -margin:
            return "refuted"
        if smallest_p(n, expect) > alpha:
            return f"not testable at {n} seeds"  # TOST cannot reach p <= alpha: 'inside' would be no evidence
        return "supported" if inside and p_tost <= alpha else "inconclusive"
    raise ValueError(f"unknown expectation {expect!r}")


# --------------------------------------------------------------------------------------------- claims
@dataclass
class Row:
    """d_s = sum(coef * stat(experiment, head, variant)) over ``terms``; variant None = range over variants."""

    statistic: str
    terms: list[tuple[float, str, str, str | None]]
    expect: str
    label: str
    margin: float = 0.0
    require_learning: bool = False
    sem: str | None = None  # the column of the statistic's standard error (stochastic measures)
    untestable: str | None = None  # the row's verdict when it cannot be tested ("not applicable: <why>")


@dataclass
class Claim:
    id: str
    text: str
    rows: list[Row] = field(default_factory=list)


# Accuracy claims are tested on both checkpoints: rankings can flip between the best-validation checkpoint and
# the final epoch, and the study does not say which one its claims mean.
ACCURACIES = ("final_test_acc", "best_test_acc")
# convergence speed, each with the direction "faster" means: epochs to the plateau, mean validation accuracy and
# mean validation loss over the epochs (areas under the curves)
CONVERGENCE_SPEED = (("epochs_to_plateau", "less"), ("val_auc", "greater"), ("val_loss_auc", "less"))


def _heads(table: pd.DataFrame, experiment: str) -> list[str]:
    from normscape.reporting.run_files import head_sort_key

    return sorted(table.loc[table["experiment"] == experiment, "head"].unique(), key=head_sort_key)


def study_claims(table: pd.DataFrame, settings: dict | None = None) -> list[Claim]:
    """The claims of the study and the README, as rows over the runs present in ``table``."""
    s = {**DEFAULTS, **(settings or {})}
    e, m = s["experiments"], s["accuracy_margin"]
    conv, clip, high, bsz = e["convergence"], e["clipping"], e["high_lr"], e["batch_size"]
    label = lambda h: HEAD_LABELS.get(h, h)  # noqa: E731
    norms = [h for h in _heads(table, conv) if h != "none"]
    claims = [
        Claim(
            "faster_convergence",
            "A normalisation layer makes the head converge faster than the baseline",
            [
                Row(
                    statistic,
                    [(1, conv, h, "base"), (-1, conv, "none", "base")],
                    alternative,
                    f"{label(h)} - baseline",
                    require_learning=True,
                )
                for statistic, alternative in CONVERGENCE_SPEED
                for h in norms
            ],
        ),
        Claim(
            "clipping_layernorm_only",
            "Gradient clipping changes LayerNorm's result and no other head's",
            [
                Row(
                    acc,
                    [(1, clip, h, "base"), (-1, conv, h, "base")],
                    "different" if h == "layer" else "equivalent",
                    f"{label(h)}: clipped - unclipped",
                    margin=m,
                )
                for acc in ACCURACIES
                for h in _heads(table, clip)
            ],
        ),
        Claim(
            "high_lr_hurts_baseline_most",
            "Learning rate 1e-2 hurts the baseline more than any normalised head",
            [
                Row(
                    acc,
                    [
                        (1, conv, "none", "base"),
                        (-1, high, "none", "base"),
                        (-1, conv, h, "base"),
                        (1, high, h, "base"),
                    ],
                    "greater",
                    f"drop(baseline) - drop({label(h)})",
                    require_learning=True,  # a head at chance has no accuracy to lose: its zero drop is no evidence
                )
                for acc in ACCURACIES
                for h in _heads(table, high)
                if h != "none"
            ],
        ),
    ]
    for column, name in s["flatness_measures"].items():
        claims.append(
            Claim(
                f"flatter_minima[{column}]",
                f"Normalised heads find flatter minima than the baseline — by the {name}",
                [
                    Row(
                        column,
                        [(1, conv, h, "base"), (-1, conv, "none", "base")],
                        "less",
                        f"{label(h)} - baseline",
                        require_learning=True,
                        sem=s["standard_errors"].get(column),
                    )
                    for h in norms
                ],
            )
        )
    claims.append(
        Claim(
            "smoother_landscape",
            "Normalised heads descend a smoother landscape along their training trajectory (Santurkar et al.)",
            [
                Row(
                    column,
                    [(1, conv, h, "base"), (-1, conv, "none", "base")],
                    "less",
                    f"{label(h)} - baseline: {name}",
                    require_learning=True,
                )
                for column, name in s["smoothness_measures"].items()
                for h in norms
            ],
        )
    )
    bn_heads = [h for h in _heads(table, bsz) if h != "batch"]
    claims.append(
        Claim(
            "batchnorm_batch_size",
            "BatchNorm depends on the batch size more than the other heads (range of test accuracy over the sweep)",
            [
                Row(
                    acc,
                    [(1, bsz, "batch", None), (-1, bsz, h, None)],
                    "greater",
                    f"range(BatchNorm) - range({label(h)})",
                )
                for acc in ACCURACIES
                for h in bn_heads
            ],
        )
    )
    claims.append(
        Claim(
            "frn_needs_learnable_eps",
            "FRN on a vector needs a learnable eps (learned eps beats fixed eps)",
            [  # the registry's variants (normscape.models.norms: NormSpec.variant_of), e.g. FRN with a learnable eps
                Row(
                    acc,
                    [(1, conv, name, "base"), (-1, conv, spec.variant_of, "base")],
                    "greater",
                    f"{label(name)} - {label(spec.variant_of)}",
                )
                for acc in ACCURACIES
                for name, spec in NORMS.items()
                if spec.variant_of
            ],
        )
    )
    from normscape.reporting.claims_stability import stability_claims  # it builds on Row and Claim

    return claims + stability_claims(table, s)


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
        result = verdict(lo, hi, row.expect, row.margin, n, p_tost, s["alpha"])
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
                notes.append(f"{HEAD_LABELS.get(head, head)} s{run['seed']}: {low:.3g}{star}")
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


def claim_verdict(verdicts: list[str]) -> str:
    """A claim's verdict from its rows'; rows on heads that did not learn say nothing about it."""
    verdicts = [v for v in verdicts if not v.startswith("not applicable")]
    if not verdicts:
        return "not testable (runs missing)"
    if all(v == "supported" for v in verdicts):
        return "supported"
    if all(v == "refuted" for v in verdicts):
        return "refuted"
    if "supported" in verdicts and "refuted" in verdicts:
        return "mixed"
    return "refuted" if "refuted" in verdicts and "inconclusive" not in verdicts else "inconclusive"


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


def seed_count(result: pd.DataFrame) -> int:
    """The most seeds any row of the study compared (0 when none was testable)."""
    n = pd.to_numeric(result.get("n_seeds", pd.Series(dtype=float)), errors="coerce")
    return int(n.max()) if n.notna().any() else 0


def reading_guide(result: pd.DataFrame) -> str:
    """What a verdict and the CI column mean at this study's number of seeds, stated before the tables so that a
    reader does not take "supported" for "significant" or the interval for a confidence statement."""
    n = seed_count(result)
    if n < 2:
        return (
            "How to read the verdicts: fewer than 2 seeds per comparison, so every row is inconclusive — a single "
            "seed cannot tell an effect from seed-to-seed noise."
        )
    return (
        f"How to read the verdicts: with n = {n} seeds, **supported** means every seed's difference has the claimed "
        f"sign (refuted: every seed's has the other sign); the exact test's smallest p is then 2^-{n} = "
        f"{2.0**-n:.3g} (one-sided), so a verdict is consistency across seeds, not significance. The CI column is a "
        f"percentile bootstrap interval, at n = {n} about [min, max] of the per-seed differences: a range, not a "
        "significance test."
    )


def to_markdown(result: pd.DataFrame, settings: dict | None = None) -> str:
    s = {**DEFAULTS, **(settings or {})}
    lines = [reading_guide(result), ""]
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
        "one-sided, 2^(1-n) two-sided): the test's power ceiling. With n seeds the interval is about [min, max] of "
        f"the differences, so 'supported' means every seed agrees. '≈ 0' is supported only when TOST gives p <= "
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
