"""The critical learning rate of a learning-rate sweep: how far the step size grows before accuracy is lost.

Per seed (of one experiment and head): the largest learning rate of the grid at which that seed's final test
accuracy lies within ``tolerance`` (2 accuracy points) of its own best accuracy on the grid. A diverged run has no
final accuracy and is never within. Over seeds: the largest learning rate at which *every* seed is within
``tolerance`` of its own best (the figure's marker; the per-seed values are its spread).

The reference is each seed's own best, not the mean curve's: a seed whose whole curve sits a little lower
(seed-to-seed offset of the level) is not unstable for it, and a seed's critical lr then depends on that seed's
runs only — what pairing seeds across heads needs (:mod:`normscape.reporting.claims_stability`). A seed whose best run
did not learn has no critical lr: a head at chance everywhere is "within 2 points" of its best at every learning rate,
which is no evidence of stability.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from normscape.reporting.run_files import variant_value

TOLERANCE = 0.02  # accuracy points (as a fraction) below a seed's own best that still count as "not lost"
KEYS = ["experiment", "head", "seed"]


def sweep_runs(table: pd.DataFrame, experiments: list[str] | None = None) -> pd.DataFrame:
    """The runs of lr sweeps in ``table`` (rows with identity columns, ``final_test_acc`` and, where known,
    ``diverged`` and ``learned``) as experiment, head, seed, lr, acc, ok_run (finite and not diverged), learned."""
    sel = table if experiments is None else table[table["experiment"].isin(experiments)]
    sel = sel[sel["variant"].astype(str).str.startswith("lr-")]
    acc = pd.to_numeric(sel.get("final_test_acc", pd.Series(np.nan, index=sel.index)), errors="coerce")
    diverged = sel["diverged"].fillna(0).astype(float) > 0 if "diverged" in sel else pd.Series(False, index=sel.index)
    learned = sel["learned"].fillna(False).astype(bool) if "learned" in sel else pd.Series(True, index=sel.index)
    return pd.DataFrame(
        {
            "experiment": sel["experiment"],
            "head": sel["head"],
            "seed": sel["seed"],
            "lr": [variant_value(v) for v in sel["variant"]],
            "acc": acc.where(~diverged),
            "diverged": diverged,
            "learned": learned,
        }
    )


def _within(group: pd.DataFrame, tolerance: float) -> tuple[pd.Series, float, bool]:
    """(per lr: within tolerance of the seed's best, the best accuracy, whether the best run learned)."""
    acc = group.set_index("lr")["acc"]
    if not np.isfinite(acc).any():
        return pd.Series(False, index=acc.index), np.nan, False
    best_lr = acc.idxmax()
    learned = bool(group.set_index("lr")["learned"].loc[best_lr])
    return (acc >= acc.max() - tolerance) & np.isfinite(acc), float(acc.max()), learned


def seed_critical_lrs(runs: pd.DataFrame, tolerance: float = TOLERANCE) -> pd.DataFrame:
    """One row per (experiment, head, seed) of :func:`sweep_runs`: ``critical_lr`` (NaN when the seed has no
    finite accuracy or its best run did not learn), ``best_acc``, ``learned`` (of the seed's best run)."""
    rows = []
    for (experiment, head, seed), g in runs.groupby(KEYS, sort=True):
        within, best, learned = _within(g, tolerance)
        stable = within.index[within.to_numpy()]
        critical = float(max(stable)) if len(stable) and learned else np.nan
        rows.append(
            {
                "experiment": experiment,
                "head": head,
                "seed": seed,
                "critical_lr": critical,
                "best_acc": best,
                "learned": learned,
            }
        )
    return pd.DataFrame(rows, columns=[*KEYS, "critical_lr", "best_acc", "learned"])


def critical_lrs(runs: pd.DataFrame, tolerance: float = TOLERANCE) -> pd.DataFrame:
    """One row per (experiment, head): ``critical_lr`` over seeds (the largest lr at which every seed is within
    ``tolerance`` of its own best; NaN if at none, or if some seed's best run did not learn), ``seed_min`` /
    ``seed_max`` of the per-seed critical lrs, ``seeds``."""
    per_seed = seed_critical_lrs(runs, tolerance)
    rows = []
    for (experiment, head), g in runs.groupby(["experiment", "head"], sort=True):
        lrs = np.array(sorted(g["lr"].unique()), dtype=float)
        every_seed = np.ones(len(lrs), dtype=bool)
        for _, seed_runs in g.groupby("seed"):
            within, _, learned = _within(seed_runs, tolerance)
            every_seed &= within.reindex(lrs, fill_value=False).to_numpy(dtype=bool) & learned  # missing run: not
        every = lrs[every_seed]
        mine = per_seed[(per_seed["experiment"] == experiment) & (per_seed["head"] == head)]["critical_lr"]
        rows.append(
            {
                "experiment": experiment,
                "head": head,
                "critical_lr": float(max(every)) if len(every) else np.nan,
                "seed_min": float(mine.min()) if mine.notna().any() else np.nan,
                "seed_max": float(mine.max()) if mine.notna().any() else np.nan,
                "seeds": int(g["seed"].nunique()),
            }
        )
    return pd.DataFrame(rows, columns=["experiment", "head", "critical_lr", "seed_min", "seed_max", "seeds"])
