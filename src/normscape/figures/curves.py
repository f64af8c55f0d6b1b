"""Curve figures: metrics per epoch (convergence, high learning rate, clipping) and accuracy vs batch size.

Curves show the raw mean over seeds as the line and mean +- one standard deviation as a band (a centred running
average of ``smoothing_window`` epochs, if > 1, is drawn thin and light over it: centred, so it never lags the
data). Axes fit the heads that learn; a dead or diverged curve is named in the panel, not allowed to squash the
others (:mod:`normscape.figures.axes`). Panels that are compared share a y scale.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import numpy as np

from normscape.figures.axes import (
    apply_limits,
    at_chance,
    fit_limits,
    legend_label,
    mark_off_axis,
    panel_note,
)
from normscape.figures.style import METRIC_LABELS, clipping_label, pd, place_legend, plt, ticker
from normscape.models.norms import NORM_COLOURS, NORM_LABELS
from normscape.reporting.run_files import load_metrics, load_summaries, norm_sort_key, variant_value


def centred_average(values: np.ndarray, window: int) -> np.ndarray:
    """Mean over ``window`` epochs centred on each epoch (shorter at the ends), NaN-aware: it never lags the
    raw curve the way a trailing average does."""
    half = window // 2
    out = np.empty_like(values, dtype=float)
    for i in range(len(values)):
        chunk = values[max(0, i - half) : i + half + 1]
        out[i] = np.nanmean(chunk) if np.isfinite(chunk).any() else np.nan
    return out


def _seed_stats(df: pd.DataFrame, metric: str) -> pd.DataFrame:
    return df.groupby("epoch")[metric].agg(["mean", "std", "count"]).reset_index()


def plot_curves(
    ax,
    df: pd.DataFrame,
    metric: str,
    group: str,
    window: int,
    styles: dict | None = None,
    label_of: Callable[[str], str] | None = None,
) -> Curves:
    """Mean over seeds (the line) and +-1 std band, one curve per value of ``group``; with ``window`` > 1 (and
    more epochs than that) a centred running average drawn thin and light over it. Returns what it drew, from which
    :func:`finish_curve_axes` fits the axis."""
    order = list(styles or {})  # the styles' order (e.g. without clipping before with), else heads' / by name
    keys = sorted(
        df[group].unique(),
        key=lambda k: (norm_sort_key(k) if group == "head" else order.index(k) if k in order else len(order), str(k)),
    )
    drawn, marks, dead = {}, [], set()
    for key in keys:
        sub = df[df[group] == key]
        stats = _seed_stats(sub, metric)
        style = (styles or {}).get(key, {"color": NORM_COLOURS.get(key)})
        name = label_of(key) if label_of else NORM_LABELS.get(key, key)
        mean = stats["mean"].to_numpy()
        std = np.nan_to_num(stats["std"].to_numpy())
        single = {"marker": "o", "ms": 3} if len(mean) == 1 else {}  # a one-epoch curve: a point, not nothing
        ax.plot(stats["epoch"], mean, lw=1.6, label=legend_label(name, int(stats["count"].max())), **single, **style)
        if 1 < window < len(mean):  # over no more epochs than its window it is one flat line: nothing to show
            solid = {k: v for k, v in style.items() if k != "ls"}
            ax.plot(stats["epoch"], centred_average(mean, window), lw=0.8, alpha=0.45, ls=":", **solid)
        ax.fill_between(stats["epoch"], mean - std, mean + std, alpha=0.15, color=style.get("color"), lw=0)
        drawn[name] = np.concatenate([mean, mean - std, mean + std])
        if {"val_acc", "val_loss"} <= set(sub.columns):
            means = sub.groupby("epoch")[["val_acc", "val_loss"]].mean()
            if at_chance(means["val_acc"].to_numpy(), means["val_loss"].to_numpy()):
                dead.add(name)
        diverged = sub[sub["diverged"] == 1]
        if len(diverged):
            marks.append((diverged["epoch"].to_numpy(), diverged[metric].to_numpy(dtype=float), style.get("color")))
    ax.set_xlabel("epoch")
    ax.xaxis.set_major_locator(ticker.MaxNLocator(integer=True))
    if len(df) and df["epoch"].max() - df["epoch"].min() < 2:  # one or two epochs: whole-epoch ticks, some room
        ax.set_xticks(sorted(df["epoch"].unique()))
        ax.set_xlim(df["epoch"].min() - 0.5, df["epoch"].max() + 0.5)
    note_every_run_diverged(ax, df)
    ax.set_ylabel(METRIC_LABELS.get(metric, metric))
    ax.grid(alpha=0.3)
    return Curves(drawn, marks, dead)


def note_every_run_diverged(ax, df: pd.DataFrame) -> None:
    """Say so in the panel when every run drawn in it diverged (its crosses are then all there is)."""
    if not len(df) or "diverged" not in df.columns:
        return
    runs = df.groupby([c for c in ("experiment", "head", "variant", "seed") if c in df.columns])
    if runs["diverged"].max().all():
        first = int(df.loc[df["diverged"] == 1, "epoch"].min())
        panel_note(ax, f"every run diverged (from epoch {first}; × marks the epoch)", y=0.97, va="top")


@dataclasses.dataclass
class Curves:
    """What :func:`plot_curves` drew: label -> values (mean and band), and the diverged epochs to mark
    (epochs, values, colour) once the axis range is known."""

    values: dict[str, np.ndarray]
    diverged: list[tuple[np.ndarray, np.ndarray, str | None]]
    dead: set[str]  # labels of the curves of runs that did not learn (figures.axes.at_chance)


def finish_curve_axes(axes: list, drawn: list[Curves]) -> None:
    """One y range for ``axes`` (shared where panels are compared), fitted to the curves that learn; a dead or
    diverged curve is named in the panel instead of stretching the axis. Diverged epochs are marked x, at the
    top of the axis when their value is not finite."""
    limits = fit_limits(
        {f"{i}:{k}": v for i, d in enumerate(drawn) for k, v in d.values.items()},
        dead={f"{i}:{k}" for i, d in enumerate(drawn) for k in d.dead},
    )
    if limits is not None and len(axes) > 1:
        # a panel all of whose curves lie off the shared range (e.g. a head that barely learns) would be empty:
        # it gets its own range and says so; the others keep the range fitted to them
        alone = [
            i
            for i, d in enumerate(drawn)
            if d.values and all(_outside(v, limits.lo, limits.hi) for v in d.values.values())
        ]
        if alone and len(alone) < len(axes):
            for i in alone:
                finish_curve_axes([axes[i]], [drawn[i]])
                axes[i].set_title(f"{axes[i].get_title()} (own y scale)")
            shared = [i for i in range(len(axes)) if i not in alone]
            finish_curve_axes([axes[i] for i in shared], [drawn[i] for i in shared])
            return
    for i, ax in enumerate(axes):
        if limits is not None:
            prefix = f"{i}:"
            mine = {k.removeprefix(prefix): v for k, v in limits.off_axis.items() if k.startswith(prefix)}
            why = {k.removeprefix(prefix): v for k, v in limits.why.items() if k.startswith(prefix)}
            mark_off_axis(ax, dataclasses.replace(limits, off_axis=mine, why=why))
        top = ax.get_ylim()[1]
        for epochs, values, colour in drawn[i].diverged:
            shown = np.where(np.isfinite(values) & (values <= top), values, top)
            ax.scatter(epochs, shown, marker="x", color=colour, zorder=5, clip_on=False, label=None)


def curves_figure(metrics: list[str], experiment: str, panels: list[str], window: int, title: str) -> plt.Figure:
    """One panel per metric, every head; accuracy panels share one y range, loss panels their own."""
    df = load_metrics(metrics)
    df = df[df["experiment"] == experiment]
    fig, axes = plt.subplots(1, len(panels), figsize=(3.8 * len(panels), 3.2), squeeze=False, layout="constrained")
    drawn = []
    for ax, metric in zip(axes[0], panels):
        drawn.append(plot_curves(ax, df, metric, "head", window))
        ax.set_title(METRIC_LABELS.get(metric, metric).capitalize())
    for kind in ("acc", "loss"):
        same = [i for i, m in enumerate(panels) if m.endswith(kind)]
        finish_curve_axes([axes[0][i] for i in same], [drawn[i] for i in same])
    place_legend(fig, axes[0][0])
    fig.suptitle(title)
    return fig


def clipping_figure(
    metrics: list[str], heads: list[str], settings: dict, metric: str = "val_loss", title: str = ""
) -> plt.Figure:
    """Per head, the metric without (experiment ``convergence``) and with clipping (``clipping``); one y scale
    for every panel, so the heads compare."""
    df = load_metrics(metrics)
    df = df[df["head"].isin(heads)]
    heads = [h for h in heads if h in set(df["head"])]  # the heads the config has
    fig, axes = plt.subplots(1, len(heads), figsize=(3.4 * len(heads), 3.1), squeeze=False, layout="constrained")
    styles = {"convergence": {"color": "#1f77b4"}, "clipping": {"color": "#d62728", "ls": "--"}}
    window = settings["smoothing_window"]
    drawn = []
    for ax, head in zip(axes[0], sorted(heads, key=norm_sort_key)):
        drawn.append(
            plot_curves(
                ax,
                df[df["head"] == head],
                metric,
                "experiment",
                window,
                styles,
                lambda e: clipping_label(settings, e),
            )
        )
        ax.set_title(NORM_LABELS.get(head, head))
    finish_curve_axes(list(axes[0]), drawn)
    for ax in axes[0][1:]:
        ax.set_ylabel("")
    place_legend(fig, axes[0][0])
    if title:
        fig.suptitle(title)
    return fig


def _outside(values, lo: float, hi: float) -> bool:
    """Whether every finite value of a curve lies outside [lo, hi] (and there is one)."""
    finite = np.asarray(values, dtype=float)
    finite = finite[np.isfinite(finite)]
    return finite.size > 0 and bool(((finite < lo) | (finite > hi)).all())


def batch_size_figure(summaries: list[str], title: str = "") -> plt.Figure:
    """Final test accuracy vs batch size per head; the title states the seeds per point and the epochs (with one
    seed there is no spread to show, and the figure says so instead of drawing empty error bars)."""
    rows = [
        {
            "head": s["head"],
            "batch_size": variant_value(s["variant"]),
            "test_acc": s["final"]["test_acc"],
            "test_loss": s["final"].get("test_loss", np.nan),
        }
        for s in load_summaries(summaries)
    ]
    df = pd.DataFrame(rows)
    fig, ax = plt.subplots(figsize=(4.6, 3.4), layout="constrained")
    drawn, dead = {}, set()
    for head in sorted(df["head"].unique(), key=norm_sort_key):
        if at_chance(df.loc[df["head"] == head, "test_acc"], df.loc[df["head"] == head, "test_loss"]):
            dead.add(NORM_LABELS.get(head, head))
        stats = df[df["head"] == head].groupby("batch_size")["test_acc"].agg(["mean", "std", "count"]).reset_index()
        std = np.nan_to_num(stats["std"].to_numpy())
        label = NORM_LABELS.get(head, head)
        ax.errorbar(
            stats["batch_size"],
            stats["mean"],
            yerr=std if (stats["count"] > 1).any() else None,
            marker="o",
            capsize=3,
            color=NORM_COLOURS.get(head),
            label=label,
        )
        drawn[label] = np.concatenate([stats["mean"] - std, stats["mean"] + std])
    apply_limits(ax, fit_limits(drawn, dead=dead))
    ax.set_xscale("log", base=2)
    ax.xaxis.set_major_formatter(ticker.FuncFormatter(lambda v, _: f"{v:g}"))
    ax.set_xlabel("batch size")
    ax.set_ylabel("final test accuracy")
    ax.grid(alpha=0.3)
    place_legend(fig, ax)
    counts = df.groupby(["head", "batch_size"]).size()
    lo, hi = int(counts.min()), int(counts.max())
    if hi == 1:
        n = "n = 1 seed per point: no spread to show, no error bars"
    else:
        n = f"n = {lo if lo == hi else f'{lo}–{hi}'} seeds per point, mean ± std"
    fig.suptitle(f"{title}\n{n}" if title else n)
    return fig
