"""The study's claims as a generated table of verdicts (results/tables/claims.{md,csv}).

Each claim is tested by one or more *rows*. A row is a paired comparison across seeds: for every seed that
has all the runs it needs, d_s = (statistic of side A) - (statistic of side B), where a side is a sum of
signed terms (experiment, head, variant) — e.g. a difference of two runs, or a difference of differences —
or, for a sweep, the range of the statistic over the sweep's variants. From the d_s a row gets a mean, a
bootstrap interval, an exact p-value and a verdict (:mod:`normscape.reporting.claims_stats`; rows are tested on
the run table in :mod:`normscape.reporting.claims_evaluation`, the table written by
:mod:`normscape.reporting.claims_markdown`).

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

from dataclasses import dataclass, field

import pandas as pd

from normscape.models.norms import NORM_LABELS, NORMS

DEFAULTS = {
    "plateau_fraction": 0.95,
    "min_val_acc": 0.2,
    "confidence": 0.95,
    "bootstrap": 10000,
    "seed": 0,
    "accuracy_margin": 0.005,  # |difference| below 0.5 percentage points counts as "no effect"
    "alpha": 0.05,  # level of the exact tests (directional rows: max(alpha, 2^-n)); TOST needs p <= alpha itself
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


def norms_in(table: pd.DataFrame, experiment: str) -> list[str]:
    """The norms ``experiment`` ran in ``table`` (its ``head`` column), in the registry's order."""
    from normscape.reporting.run_files import norm_sort_key

    return sorted(table.loc[table["experiment"] == experiment, "head"].unique(), key=norm_sort_key)


def experiment_lr(table: pd.DataFrame, experiment: str) -> str:
    """'lr 0.01': the learning rate the runs of ``experiment`` trained with, as their summaries record it (the
    config's, never a default written here); a generic name where they differ or none is recorded."""
    lrs = table.loc[table["experiment"] == experiment, "lr"].dropna().unique() if "lr" in table else []
    return f"lr {float(lrs[0]):g}" if len(lrs) == 1 else f"the learning rate of {experiment}"


def study_claims(table: pd.DataFrame, settings: dict | None = None) -> list[Claim]:
    """The claims of the study and the README, as rows over the runs present in ``table``."""
    s = {**DEFAULTS, **(settings or {})}
    e, m = s["experiments"], s["accuracy_margin"]
    conv, clip, high, bsz = e["convergence"], e["clipping"], e["high_lr"], e["batch_size"]
    label = lambda h: NORM_LABELS.get(h, h)  # noqa: E731
    norms = [h for h in norms_in(table, conv) if h != "none"]
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
                for h in norms_in(table, clip)
            ],
        ),
        Claim(
            "high_lr_hurts_baseline_most",
            f"Training at {experiment_lr(table, high)} hurts the baseline more than any normalised head",
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
                for h in norms_in(table, high)
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
    non_batch_norms = [h for h in norms_in(table, bsz) if h != "batch"]
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
                for h in non_batch_norms
            ],
        )
    )
    claims.append(
        Claim(
            "frn_needs_learnable_eps",
            "FRN on a vector needs a learnable eps (learned eps beats fixed eps)",
            [  # norms that modify another (normscape.models.norms: NormSpec.modifies), e.g. FRN with a learnable eps
                Row(
                    acc,
                    [(1, conv, name, "base"), (-1, conv, spec.modifies, "base")],
                    "greater",
                    f"{label(name)} - {label(spec.modifies)}",
                )
                for acc in ACCURACIES
                for name, spec in NORMS.items()
                if spec.modifies
            ],
        )
    )
    from normscape.reporting.claims_stability import stability_claims  # it builds on Row and Claim

    return claims + stability_claims(table, s)
