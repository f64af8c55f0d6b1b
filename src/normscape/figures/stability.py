"""Figures of Adam's edge of stability (issue 30): preconditioned sharpness along training, and the stability map.

``preconditioned_sharpness_figure``: lambda_1(P^-1 H) per probe step (thin: each seed; thick: the mean over the
seeds with a finite value at that step; a diverged run's first non-finite probe is a cross on its threshold) with
raw lambda_1(H) dashed and the run's stability threshold (2 + 2 beta1) / ((1 - beta1) lr) as a dotted horizontal
line, one row per experiment (learning rate), one column per norm, log y shared along a row. The threshold and its
coefficient come from the records (their lr and beta1).

``stability_map_figure``: per norm, final test accuracy over the learning-rate grid (log x) at each batch size
(mean ± std over seeds, dots: each seed), diverged runs as crosses under the curves, and the critical learning rate
(:mod:`normscape.reporting.critical_lr`) as a vertical line with the range of the per-seed critical lrs as a bar at the
top. Titles and legend entries state the experiments' settings from the config (``settings["conditions"]``).
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np

from normscape.curvature.edge_of_stability import read_preconditioned_sharpness_h5
from normscape.figures.axes import panel_note, set_round_log_axis
from normscape.figures.style import experiment_title, format_number, log_scale, pd, plt, ticker
from normscape.models.norms import NORM_COLOURS, NORM_LABELS
from normscape.reporting.critical_lr import TOLERANCE, critical_lrs, sweep_runs
from normscape.reporting.run_files import load_summaries, norm_sort_key, run_key

MIN_VAL_ACC = 0.2  # as claims.min_val_acc's default: a seed whose best run stays below it has no critical lr
# the study's batch size and the large batch, in this order: colour, line, marker
BATCH_STYLES = ({"color": "tab:blue", "ls": "-", "marker": "o"}, {"color": "tab:red", "ls": "--", "marker": "s"})


def _records_by_panel(paths: list) -> dict[tuple[str, str], list[dict]]:
    """(experiment, head) -> the records of each probed run (runs without probes, zero records, left out). The
    probe at step 0 is left out, as from the summaries (normscape.curvature.edge_of_stability.summarize: before
    the first step P = |g|, a number about the initialisation that would set the axis range)."""
    out = defaultdict(list)
    for path in sorted(paths, key=lambda p: run_key(p)["seed"]):
        record = read_preconditioned_sharpness_h5(path)
        after_start = record["step"] > 0 if "step" in record else np.zeros(0, dtype=bool)
        record = {
            k: v[after_start] if isinstance(v, np.ndarray) and v.shape == after_start.shape else v
            for k, v in record.items()
        }
        if len(record.get("step", [])):
            key = run_key(path)
            out[(key["experiment"], key["head"])].append({**record, "seed": key["seed"]})
    return out


def _mean_over_seeds(runs: list[dict], field: str) -> tuple[np.ndarray, np.ndarray]:
    """Every probed step and the mean of ``field`` over the seeds with a finite value there (a diverged run stops
    being probed, and its last probes are NaN: the others' curve goes on)."""
    steps = np.array(sorted(set().union(*(r["step"].tolist() for r in runs))))
    values = np.full((len(runs), len(steps)), np.nan)
    for i, r in enumerate(runs):
        values[i, np.searchsorted(steps, r["step"])] = r[field]
    finite = np.isfinite(values)
    with np.errstate(all="ignore"):
        mean = np.where(finite.any(0), np.where(finite, values, 0).sum(0) / finite.sum(0), np.nan)
    return steps, mean


def threshold_label(beta1: float, threshold: float) -> str:
    """'threshold 38/η = 3,800' (the coefficient (2 + 2 beta1) / (1 - beta1) from the run's beta1)."""
    value = f"{threshold:,.0f}" if threshold >= 100 else format_number(threshold)
    return f"threshold {format_number((2 + 2 * beta1) / (1 - beta1))}/η = {value}"


def preconditioned_sharpness_figure(paths: list, settings: dict, experiments: list[str]):
    """One row per experiment of ``experiments`` that has probed runs, one column per norm."""
    panels = _records_by_panel(paths)
    rows = [e for e in experiments if any(k[0] == e for k in panels)]
    if not rows:
        fig, ax = plt.subplots(figsize=(7, 2.5))
        ax.axis("off")
        ax.text(0.5, 0.5, "Preconditioned sharpness: no run was probed", ha="center", va="center")
        return fig
    heads = sorted({h for _, h in panels}, key=norm_sort_key)
    fig, axes = plt.subplots(
        len(rows),
        len(heads),
        figsize=(2.9 * len(heads) + 0.6, 2.6 * len(rows) + 1.0),
        squeeze=False,
        sharey="row",
        layout="constrained",
    )
    seeds = set()
    for i, experiment in enumerate(rows):
        drawn = []
        for j, head in enumerate(heads):
            ax, runs = axes[i, j], panels.get((experiment, head), [])
            ax.set_title(f"{NORM_LABELS.get(head, head)} — {experiment_title(settings, experiment)}", fontsize=8)
            if not runs:
                panel_note(ax, f"{NORM_LABELS.get(head, head)} is not in {experiment}", width=28)
                ax.axis("off")
                continue
            colour = NORM_COLOURS.get(head)
            seeds.add(len(runs))
            for r in runs:
                ax.plot(r["step"], r["preconditioned_sharpness"], color=colour, lw=0.6, alpha=0.35)
                drawn += [r["preconditioned_sharpness"], r["sharpness"]]
                lost = np.flatnonzero(~np.isfinite(r["preconditioned_sharpness"]))
                if (
                    lost.size
                ):  # a diverged run: its first non-finite probe, drawn on its threshold (the edge it crossed)
                    ax.scatter(
                        r["step"][lost[0]],
                        r["threshold"][lost[0]],
                        marker="x",
                        color=colour,
                        s=24,
                        zorder=5,
                        gid="diverged",
                        label="first non-finite probe of a run (diverged), on the threshold",
                    )
            steps, mean = _mean_over_seeds(runs, "preconditioned_sharpness")
            ax.plot(steps, mean, color=colour, lw=1.6, label="λ1(P⁻¹H), mean over seeds (thin: each seed)")
            steps, raw = _mean_over_seeds(runs, "sharpness")
            ax.plot(steps, raw, color=colour, lw=1.2, ls="--", label="λ1(H) (raw sharpness), mean over seeds")
            for threshold, beta1 in sorted(
                {(float(t), float(b)) for r in runs for t, b in zip(r["threshold"], r["beta1"])}
            ):
                ax.axhline(
                    threshold, color="k", ls=":", lw=1.0, gid="threshold", label=threshold_label(beta1, threshold)
                )
                drawn.append(np.array([threshold]))
            ax.set_xlabel("optimiser step")
            ax.grid(alpha=0.3)
        for j in range(len(heads)):
            log_scale(axes[i, j], "y", drawn)
        axes[i, 0].set_ylabel("top eigenvalue")
    legend = {}  # each kind of entry once (the first panel's handle); the threshold's value is on its line
    for ax in axes.ravel():
        for handle, label in zip(*ax.get_legend_handles_labels()):
            generic = "stability threshold (2+2β1)/((1−β1)η)" if label.startswith("threshold") else label
            legend.setdefault(generic, handle)
    fig.legend(legend.values(), legend.keys(), loc="outside lower center", ncol=min(len(legend), 4), frameon=False)
    n = f"n = {min(seeds)}" + (f"–{max(seeds)}" if max(seeds) > min(seeds) else "")
    n += " seed per panel" if max(seeds) == 1 else " seeds per panel"
    fig.suptitle(
        "Adam's preconditioned sharpness λ1(P⁻¹H) along training (edge of stability, Cohen et al. 2022), "
        f"with its stability threshold\n(dotted, its value written on it) and the raw sharpness "
        f"λ1(H); {n}, log scale; from the first probe after step 0 (there P = |g|)"
    )
    for ax in axes.ravel():
        for line in ax.get_lines():
            if line.get_gid() == "threshold":
                ax.annotate(
                    line.get_label(),
                    (0.98, line.get_ydata()[0]),
                    xycoords=("axes fraction", "data"),
                    ha="right",
                    va="bottom",
                    fontsize=6.5,
                )
    return fig


def sweep_table(summary_paths: list, min_val_acc: float = MIN_VAL_ACC) -> pd.DataFrame:
    """The runs of the summaries as :func:`normscape.reporting.critical_lr.sweep_runs` reads a run table."""
    rows = [
        {
            "experiment": s["experiment"],
            "head": s["head"],
            "variant": s["variant"],
            "seed": s["seed"],
            "final_test_acc": np.nan if s["final"].get("test_acc") is None else s["final"]["test_acc"],
            "diverged": float(bool(s.get("diverged", False))),
            "learned": (s["best"].get("val_acc") or 0.0) >= min_val_acc,
        }
        for s in load_summaries(summary_paths)
    ]
    return sweep_runs(pd.DataFrame(rows))


def batch_label(settings: dict, experiment: str) -> str:
    c = settings.get("conditions", {}).get(experiment, {})
    parts = [f"batch {c['batch_size']}" if "batch_size" in c else experiment]
    if "epochs" in c:
        parts.append(f"{c['epochs']} epoch{'' if c['epochs'] == 1 else 's'}")
    return ", ".join(parts)


def stability_map_figure(summary_paths: list, settings: dict, experiments: list[str]):
    """One panel per norm; in each, one curve per experiment (batch size) of ``experiments`` that has runs."""
    runs = sweep_table(summary_paths)
    experiments = [e for e in experiments if (runs["experiment"] == e).any()]
    heads = sorted(runs["head"].unique(), key=norm_sort_key)
    critical = critical_lrs(runs)
    fig, axes = plt.subplots(
        1, len(heads), figsize=(3.0 * len(heads) + 0.6, 3.6), squeeze=False, sharey=True, layout="constrained"
    )
    axes = axes[0]
    finite = runs["acc"].dropna()
    lo, hi = (float(finite.min()), float(finite.max())) if len(finite) else (0.0, 1.0)
    span = max(hi - lo, 0.02)
    bottom = lo - 0.14 * span  # a strip below the data for the diverged runs' crosses
    lrs = np.sort(runs["lr"].unique())
    for ax, head in zip(axes, heads):
        ax.set_title(NORM_LABELS.get(head, head))
        for k, (experiment, style) in enumerate(zip(experiments, BATCH_STYLES)):
            mine = runs[(runs["experiment"] == experiment) & (runs["head"] == head)]
            if mine.empty:
                continue
            stats = mine.groupby("lr")["acc"].agg(["mean", "std", "count"]).reset_index()
            label = f"{batch_label(settings, experiment)}: mean ± std over seeds"
            ax.plot(
                stats["lr"],
                stats["mean"],
                color=style["color"],
                ls=style["ls"],
                marker=style["marker"],
                ms=3.5,
                label=label,
            )
            std = stats["std"].fillna(0).to_numpy()
            ax.fill_between(
                stats["lr"], stats["mean"] - std, stats["mean"] + std, color=style["color"], alpha=0.15, lw=0
            )
            ax.scatter(mine["lr"], mine["acc"], color=style["color"], s=5, alpha=0.5, lw=0)
            diverged = mine[mine["diverged"]].groupby("lr").size()
            if len(diverged):
                ax.scatter(
                    diverged.index,
                    np.full(len(diverged), bottom + (0.03 + 0.05 * k) * span),
                    marker="x",
                    color=style["color"],
                    s=22,
                    zorder=5,
                    gid="diverged",
                    label=f"{batch_label(settings, experiment)}: diverged run(s)",
                )
            row = critical[(critical["experiment"] == experiment) & (critical["head"] == head)]
            value = float(row["critical_lr"].iloc[0]) if len(row) else np.nan
            if np.isfinite(value):
                ax.axvline(
                    value,
                    color=style["color"],
                    ls=":",
                    lw=1.2,
                    gid="critical_lr",
                    label=f"{batch_label(settings, experiment)}: critical lr",
                )
            low, high = (
                (float(row["seed_min"].iloc[0]), float(row["seed_max"].iloc[0])) if len(row) else (np.nan, np.nan)
            )
            if np.isfinite(low):
                y = 0.965 - 0.05 * k
                ax.plot(
                    [low, high],
                    [y, y],
                    transform=ax.get_xaxis_transform(),
                    color=style["color"],
                    lw=3,
                    alpha=0.6,
                    solid_capstyle="butt",
                    gid="critical_lr_spread",
                )
                ax.plot(
                    [low, high],
                    [y, y],
                    transform=ax.get_xaxis_transform(),
                    color=style["color"],
                    ls="none",
                    marker="|",
                    ms=7,
                )
                text = f"critical lr {format_number(value) if np.isfinite(value) else 'none'}"
                seeds = format_number(low) if low == high else f"{format_number(low)}–{format_number(high)}"
                # in the band above the data, under the bars
                ax.annotate(
                    f"{text} (seeds: {seeds})",
                    (0.03, 0.84 - 0.07 * k),
                    xycoords="axes fraction",
                    fontsize=6.5,
                    color=style["color"],
                    bbox={"facecolor": "white", "alpha": 0.85, "lw": 0, "pad": 1},
                    zorder=6,
                )
        if len(lrs) and (lrs > 0).all():
            set_round_log_axis(ax, "x", lrs.min(), lrs.max(), pad=0.1)
            ax.xaxis.set_major_formatter(ticker.FuncFormatter(lambda v, _: format_number(v)))
        ax.set_xlabel("learning rate η")
        ax.grid(alpha=0.3)
    axes[0].set_ylim(bottom, hi + 0.6 * span)  # a band above the data for the critical-lr bars and numbers
    axes[0].set_ylabel("final test accuracy")
    legend = {}  # every panel's entries once (a panel may lack a batch size's crosses or critical lr)
    for ax in axes:
        for handle, label in zip(*ax.get_legend_handles_labels()):
            legend.setdefault(label, handle)
    fig.legend(legend.values(), legend.keys(), loc="outside lower center", ncol=2, frameon=False)
    seeds = runs.groupby(["experiment", "head", "lr"])["seed"].nunique()
    n = f"{seeds.min()}" + (f"–{seeds.max()}" if seeds.max() > seeds.min() else "") if len(seeds) else "0"
    fig.suptitle(
        "Stability map: final test accuracy over the learning-rate grid per norm "
        f"({', '.join(experiment_title(settings, e) for e in experiments)}; mean ± std over n = {n} seed(s) per point, "
        "dots: each seed; × diverged)\n"
        f"critical lr (dotted line): the largest lr with every seed within {100 * TOLERANCE:g} points of its own "
        "best; bar at the top: the range of the per-seed critical lrs"
    )
    return fig
