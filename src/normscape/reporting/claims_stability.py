"""The edge-of-stability claims (issue 30), as rows of :mod:`normscape.reporting.claims` over the run table.

Three claims, each skipped (no rows: "not testable (runs missing)") when the config lacks its experiment or the
``preconditioned_sharpness`` measure:

* **equilibrium** (Cohen et al. 2022): in the large-batch sweep, Adam's preconditioned sharpness settles within
  ±20 % of its stability threshold (2 + 2 beta1) / ((1 - beta1) lr). One row per (norm, lr) at the learning rates
  where every seed's run reached 0.9 x the threshold at some probe and none diverged (below them Adam has not yet
  sharpened to the edge within the run: no evidence either way): per seed ln(late median of lambda_1(P^-1 H) /
  threshold) — the median over the last half of the probes — tested for equivalence with 0 by TOST within
  ±ln 1.2 (ratio in [1/1.2, 1.2]). A norm with no such lr gets one row saying so ("not applicable").
* **critical learning rate**: per seed log10 of the critical lr (:mod:`normscape.reporting.critical_lr`) of each norm
  minus the baseline's, paired over seeds, on the sweep at the study's batch size and on the large batch.
* **time to the threshold at lr 1e-2** (experiment ``high_lr``): the baseline's first probed step with
  lambda_1(P^-1 H) >= 0.9 x threshold minus each norm's, expected < 0. A run that never reaches it (a diverged
  run's non-finite probes do not count) is censored at its last probed step + 1: later than any step it was seen
  at, so the sign test still orders it.

Per-(experiment, head, seed) statistics over the sweep's variants (the critical lr) live in rows of the table with
the pseudo-variant :data:`GRID`; :func:`with_stability_statistics` adds them and the per-run derived columns.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from normscape.curvature.edge_of_stability import NEAR_THRESHOLD
from normscape.models.norms import NORM_LABELS
from normscape.reporting.claims import Claim, Row, experiment_lr, norms_in
from normscape.reporting.critical_lr import TOLERANCE, seed_critical_lrs, sweep_runs
from normscape.reporting.run_files import variant_value

GRID = "grid"  # pseudo-variant: one row per (experiment, head, seed) holding a statistic over the lr grid
CRITICAL = "stability.log10_critical_lr"
LOG_RATIO = "preconditioned_sharpness.log_late_median_ratio"
FIRST_STEP = "preconditioned_sharpness.first_step_at_threshold_censored"
EQUILIBRIUM_MARGIN = math.log(1.2)
EXPERIMENTS = {"convergence": "convergence", "high_lr": "high_lr", "stability": "stability"}
EXPERIMENTS |= {"stability_large_batch": "stability_large_batch"}


# the claims table's footnote on these rows (normscape.reporting.claims_markdown.to_markdown)
NOTE = (
    "Edge of stability (eos_* claims): the threshold is (2+2β1)/((1−β1)η) of each run's lr η and β1; "
    "ln(late median λ1(P⁻¹H) / threshold) is the log of the median ratio over the last half of a run's probes, "
    "tested where every seed reached 0.9 × the threshold at some probe and none diverged, equivalent to 0 within "
    f"±ln 1.2 (TOST). The critical lr of a seed is the largest lr of the grid at which its final test accuracy is "
    f"within {100 * TOLERANCE:g} points of its own best on that grid (a diverged run never is; none if its best run "
    "did not learn), compared as log10. The first step at the threshold is the first probed optimiser step with "
    "λ1(P⁻¹H) ≥ 0.9 × threshold; a run that never reaches it counts as its last probed step + 1."
)


def experiment_names(settings: dict) -> dict:
    """The claims' experiment names, the defaults where ``claims.experiments`` leaves one out."""
    return {**EXPERIMENTS, **(settings.get("experiments") or {})}


def _column(table: pd.DataFrame, name: str) -> pd.Series:
    return pd.to_numeric(table[name], errors="coerce") if name in table else pd.Series(np.nan, index=table.index)


def with_stability_statistics(table: pd.DataFrame, settings: dict) -> pd.DataFrame:
    """``table`` with the derived per-run columns (:data:`LOG_RATIO`, :data:`FIRST_STEP`, where the measure was
    read) and one :data:`GRID` row per (sweep experiment, head, seed) with :data:`CRITICAL` and ``learned``."""
    table = table.copy()
    if "preconditioned_sharpness.probes" in table:
        ratio = _column(table, "preconditioned_sharpness.late_median_ratio")
        table[LOG_RATIO] = np.log(ratio.where(ratio > 0))
        probes = _column(table, "preconditioned_sharpness.probes")
        every = _column(table, "preconditioned_sharpness.every")
        first = _column(table, "preconditioned_sharpness.first_step_at_threshold")
        censored = ((probes - 1) * every + 1).where(probes > 0)
        table[FIRST_STEP] = first.where(first.notna(), censored)
    e = experiment_names(settings)
    sweeps = [e["stability"], e["stability_large_batch"]]
    if "final_test_acc" not in table or not table["experiment"].isin(sweeps).any():
        return table
    per_seed = seed_critical_lrs(sweep_runs(table, sweeps), TOLERANCE)
    grid = per_seed.assign(variant=GRID)[["experiment", "head", "variant", "seed", "learned"]]
    grid[CRITICAL] = np.log10(per_seed["critical_lr"].to_numpy(dtype=float))
    return pd.concat([table, grid], ignore_index=True)


def _label(head: str) -> str:
    return NORM_LABELS.get(head, head)


def equilibrium_rows(table: pd.DataFrame, experiment: str) -> list[Row]:
    """One TOST row per (norm, lr) where every seed reached the threshold and none diverged; one "not applicable"
    row per norm with no such lr; none when the runs or the measure are missing."""
    if LOG_RATIO not in table:
        return []
    runs = table[(table["experiment"] == experiment) & (table["variant"] != GRID)]
    rows = []
    for head in norms_in(runs, experiment):
        mine = runs[runs["head"] == head]
        measured = mine[_column(mine, "preconditioned_sharpness.probes") > 0]
        if measured.empty:
            continue  # this norm's runs were not probed
        tested = []
        for variant, g in sorted(mine.groupby("variant"), key=lambda kv: variant_value(kv[0]) or 0.0):
            reached = _column(g, "preconditioned_sharpness.first_step_at_threshold").notna()
            diverged = _column(g, "diverged").fillna(0) > 0 if "diverged" in g else _column(g, "final_test_acc").isna()
            if reached.all() and not diverged.any() and _column(g, LOG_RATIO).notna().all():
                tested.append(variant)
        for variant in tested:
            lr = variant_value(variant)
            rows.append(
                Row(
                    LOG_RATIO,
                    [(1, experiment, head, variant)],
                    "equivalent",
                    f"{_label(head)}, {f'lr {lr:g}' if lr else variant}: ln(late median λ1(P⁻¹H) / threshold)",
                    margin=EQUILIBRIUM_MARGIN,
                )
            )
        if not tested:
            why = (
                f"not applicable: at no learning rate of {experiment} did every seed reach {NEAR_THRESHOLD:g} × the "
                "threshold without diverging"
            )
            rows.append(Row(LOG_RATIO, [(1, experiment, head, None)], "equivalent", _label(head), untestable=why))
    return rows


def critical_lr_rows(table: pd.DataFrame, experiments: list[str]) -> list[Row]:
    if CRITICAL not in table:
        return []
    grid = table[table["variant"] == GRID]
    return [
        Row(
            CRITICAL,
            [(1, experiment, head, GRID), (-1, experiment, "none", GRID)],
            "greater",
            f"{_label(head)} - baseline ({experiment})",
            require_learning=True,  # a head at chance on the whole grid is "within 2 points" everywhere
        )
        for experiment in experiments
        if "none" in norms_in(grid, experiment)
        for head in norms_in(grid, experiment)
        if head != "none"
    ]


def first_step_rows(table: pd.DataFrame, experiment: str) -> list[Row]:
    if FIRST_STEP not in table or "none" not in norms_in(table, experiment):
        return []
    return [
        Row(
            FIRST_STEP,
            [(1, experiment, "none", "base"), (-1, experiment, head, "base")],
            "less",
            f"baseline - {_label(head)}: first step at {NEAR_THRESHOLD:g} × threshold (never: last probe + 1)",
        )
        for head in norms_in(table, experiment)
        if head != "none"
    ]


def stability_claims(table: pd.DataFrame, settings: dict) -> list[Claim]:
    """The three claims over ``table`` (after :func:`with_stability_statistics`)."""
    e = experiment_names(settings)
    sweeps = [e["stability"], e["stability_large_batch"]]
    return [
        Claim(
            "eos_equilibrium",
            "Adam's preconditioned sharpness equilibrates within ±20 % of (2+2β1)/((1−β1)η) in large-batch runs "
            "(Cohen et al. 2022)",
            equilibrium_rows(table, e["stability_large_batch"]),
        ),
        Claim(
            "eos_critical_lr",
            f"Normalised heads have a larger critical learning rate than the baseline (log10; the largest lr with "
            f"the seed's final test accuracy within {100 * TOLERANCE:g} points of its best on the grid)",
            critical_lr_rows(table, sweeps),
        ),
        Claim(
            "eos_threshold_earlier",
            f"At {experiment_lr(table, e['high_lr'])} the baseline's preconditioned sharpness reaches the threshold "
            "earlier than the normalised heads'",
            first_step_rows(table, e["high_lr"]),
        ),
    ]
