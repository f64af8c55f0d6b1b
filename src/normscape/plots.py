"""The study's figures, paper-ready: one function per figure, each from the run files Snakemake hands it.

Curves show the raw mean over seeds as the line and mean +- one standard deviation as a band (a centred running
average of ``smoothing_window`` epochs, if > 1, is drawn thin and light over it: centred, so it never lags the
data). Axes fit the heads that learn; a dead or diverged curve is named in the panel, not allowed to squash the
others (:mod:`normscape.plotaxes`). Panels that are compared share a y scale. Gradient histograms are epoch x
log10|grad| heatmaps of the fraction of gradient elements per bin, empty bins grey. Each landscape has its own
colour (and z) scale with round ticks. Titles name the experiment and its learning rate, from the config. Every
figure is written as PDF (vector) and PNG (300 dpi).
"""

from __future__ import annotations

import dataclasses
import importlib
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path

import numpy as np

from normscape.norms import COLOURS, LazyModule
from normscape.plotaxes import (
    apply_limits,
    at_chance,
    colorbar_ticks,
    fit_limits,
    legend_label,
    mark_off_axis,
    set_round_log_axis,
)
from normscape.results import (
    HEAD_LABELS,
    head_sort_key,
    load_grad_hist,
    load_landscape,
    load_metrics,
    load_summaries,
    run_key,
    variant_value,
)

PALETTE = COLOURS  # from the norm registry (plugins' norms included)
METRIC_LABELS = {
    "val_acc": "validation accuracy",
    "train_acc": "training accuracy",
    "val_loss": "validation loss",
    "train_loss": "training loss",
}

RC_PARAMS = {
    "font.size": 9,
    "axes.titlesize": 10,
    "axes.labelsize": 9,
    "legend.fontsize": 8,
    "figure.dpi": 100,
    "savefig.bbox": "tight",
    "axes.spines.top": False,
    "axes.spines.right": False,
}


class _Pyplot(LazyModule):
    """matplotlib.pyplot with the Agg backend and our rcParams, imported when a figure is first drawn: the
    workflow imports this module (for :data:`FIGURES`) every time it parses, and matplotlib costs ~1 s."""

    def __getattr__(self, attr: str):
        import matplotlib

        if "matplotlib.pyplot" not in sys.modules:
            matplotlib.use("Agg")
        pyplot = importlib.import_module("matplotlib.pyplot")
        if not getattr(pyplot, "_normscape_style", False):
            pyplot.rcParams.update(RC_PARAMS)
            pyplot._normscape_style = True
        return getattr(pyplot, attr)


plt = _Pyplot("matplotlib.pyplot")
colors = LazyModule("matplotlib.colors")
ticker = LazyModule("matplotlib.ticker")
pd = LazyModule("pandas")


def save(fig: plt.Figure, pdf: str | Path, png: str | Path) -> None:
    """PDF and 300-dpi PNG, each written atomically (a full disk leaves no half figure)."""
    from normscape.atomic import atomic_path

    for path, options in ((pdf, {"format": "pdf"}), (png, {"format": "png", "dpi": 300})):
        with atomic_path(path) as tmp:
            fig.savefig(tmp, **options)
    plt.close(fig)


def log_scale(ax, axis: str, values, empty: str = "no positive finite value to draw") -> bool:
    """Put ``axis`` ("x" or "y") of ``ax`` on a log scale if ``values`` hold a positive finite number; else keep
    it linear and say so in the panel (a log axis over nothing but zeros, NaN and inf cannot be drawn: every run
    diverged, or none moved)."""
    parts = values if isinstance(values, (list, tuple)) else [values]
    v = np.concatenate([np.asarray(x, dtype=float).ravel() for x in parts]) if parts else np.zeros(0)
    if (np.isfinite(v) & (v > 0)).any():
        (ax.set_xscale if axis == "x" else ax.set_yscale)("log")
        return True
    ax.text(
        0.5,
        0.5,
        textwrap.fill(empty, 30),
        transform=ax.transAxes,
        ha="center",
        va="center",
        fontsize=8,
        color="tab:red",
        bbox={"facecolor": "white", "alpha": 0.8, "lw": 0},
    )
    return False


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
    """Mean over seeds (the line) and +-1 std band, one curve per value of ``group``; with ``window`` > 1 a
    centred running average drawn thin and light over it. Returns what it drew, from which
    :func:`finish_curve_axes` fits the axis."""
    order = list(styles or {})  # the styles' order (e.g. without clipping before with), else heads' / by name
    keys = sorted(
        df[group].unique(),
        key=lambda k: (head_sort_key(k) if group == "head" else order.index(k) if k in order else len(order), str(k)),
    )
    drawn, marks, dead = {}, [], set()
    for key in keys:
        sub = df[df[group] == key]
        stats = _seed_stats(sub, metric)
        style = (styles or {}).get(key, {"color": PALETTE.get(key)})
        name = label_of(key) if label_of else HEAD_LABELS.get(key, key)
        mean = stats["mean"].to_numpy()
        std = np.nan_to_num(stats["std"].to_numpy())
        ax.plot(stats["epoch"], mean, lw=1.6, label=legend_label(name, int(stats["count"].max())), **style)
        if window > 1:
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
    ax.set_ylabel(METRIC_LABELS.get(metric, metric))
    ax.grid(alpha=0.3)
    return Curves(drawn, marks, dead)


@dataclasses.dataclass
class Curves:
    """What :func:`plot_curves` drew: label -> values (mean and band), and the diverged epochs to mark
    (epochs, values, colour) once the axis range is known."""

    values: dict[str, np.ndarray]
    diverged: list[tuple[np.ndarray, np.ndarray, str | None]]
    dead: set[str]  # labels of the curves of runs that did not learn (plotaxes.at_chance)


def finish_curve_axes(axes: list, drawn: list[Curves]) -> None:
    """One y range for ``axes`` (shared where panels are compared), fitted to the curves that learn; a dead or
    diverged curve is named in the panel instead of stretching the axis. Diverged epochs are marked x, at the
    top of the axis when their value is not finite."""
    limits = fit_limits(
        {f"{i}:{k}": v for i, d in enumerate(drawn) for k, v in d.values.items()},
        dead={f"{i}:{k}" for i, d in enumerate(drawn) for k in d.dead},
    )
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


def place_legend(fig: plt.Figure, ax) -> None:
    """The legend below the panels, outside every data area."""
    handles, labels = ax.get_legend_handles_labels()
    if handles:
        ncol = len(labels) if len(labels) <= 5 else -(-len(labels) // 2)
        fig.legend(handles, labels, loc="outside lower center", ncol=ncol, frameon=False)


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
    for ax, head in zip(axes[0], sorted(heads, key=head_sort_key)):
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
        ax.set_title(HEAD_LABELS.get(head, head))
    finish_curve_axes(list(axes[0]), drawn)
    for ax in axes[0][1:]:
        ax.set_ylabel("")
    place_legend(fig, axes[0][0])
    if title:
        fig.suptitle(title)
    return fig


def grad_heatmaps(
    grads: list[str],
    group: str,
    layer: str = "fc2.weight",
    title: str = "",
    label_of: Callable[[str], str] | None = None,
) -> plt.Figure:
    """One epoch x log10|grad| heatmap per run (first seed of each group value), one colour scale spanning the
    fractions that occur. Empty bins are grey (distinct from the smallest fractions, which are dark); a run
    whose gradient vanished or diverged says so in its panel."""
    chosen = first_seed(grads, group)
    keys = sorted(chosen, key=lambda k: head_sort_key(k) if group == "head" else (variant_value(k) or 0))
    fig, axes = plt.subplots(
        1, len(keys), figsize=(2.9 * len(keys), 3.0), squeeze=False, sharey=True, sharex=True, layout="constrained"
    )
    hists = {key: load_grad_hist(chosen[key], layer) for key in keys}
    fractions = {key: h["counts"] / np.maximum(h["counts"].sum(1, keepdims=True), 1) for key, h in hists.items()}
    norm = fraction_norm(np.concatenate([f.ravel() for f in fractions.values()]))
    cmap = plt.get_cmap("viridis").with_extremes(bad=EMPTY_BIN_COLOUR)
    image = None
    # one x range for all panels (the bins any panel uses, plus a margin) so the heads compare directly
    used = np.flatnonzero(sum(h["counts"].sum(0) for h in hists.values()))
    n_edges = len(next(iter(hists.values()))["edges"])
    lo, hi = (max(used[0] - 2, 0), min(used[-1] + 3, n_edges - 1)) if used.size else (0, n_edges - 1)
    for ax, key in zip(axes[0], keys):
        h, frac = hists[key], fractions[key]
        log_edges = np.log10(h["edges"])
        epochs = np.arange(1, frac.shape[0] + 2) - 0.5
        image = ax.pcolormesh(
            log_edges[lo : hi + 1],
            epochs,
            np.ma.masked_equal(frac[:, lo:hi], 0),
            norm=norm,
            cmap=cmap,
            shading="flat",
        )
        ax.plot(
            np.log10(np.maximum(h["mean_abs"], 1e-30)),
            np.arange(1, frac.shape[0] + 1),
            ".-",
            color="red",
            lw=0.8,
            ms=3,
            label="mean |g|",
        )
        ax.yaxis.set_major_locator(ticker.MaxNLocator(integer=True))
        fate = gradient_fate(h, max(len(f) for f in fractions.values()))
        if fate:
            ax.text(
                0.5,
                0.5,
                textwrap.fill(fate, 26),
                transform=ax.transAxes,
                ha="center",
                va="center",
                fontsize=8,
                color="tab:red",
                bbox={"facecolor": "white", "alpha": 0.85, "lw": 0},
            )
        ax.set_title(label_of(key) if label_of else HEAD_LABELS.get(key, key))
        ax.set_xlabel(f"log10 |grad| of {layer}")
    axes[0][0].set_ylabel("epoch")
    handles = [*axes[0][0].get_legend_handles_labels()[0], _empty_bin_patch()]
    fig.legend(handles=handles, loc="outside lower center", ncol=2, frameon=False, fontsize=7)
    if image is not None:
        fig.colorbar(image, ax=axes[0].tolist(), label="fraction of gradient elements per epoch", shrink=0.9)
    if title:
        fig.suptitle(title)
    return fig


EMPTY_BIN_COLOUR = "#d9d9d9"


def _empty_bin_patch():
    from matplotlib.patches import Patch

    return Patch(facecolor=EMPTY_BIN_COLOUR, edgecolor="0.6", lw=0.5, label="no element in bin (count 0)")


def fraction_norm(fractions: np.ndarray) -> colors.LogNorm:
    """A log colour scale from the decade of the smallest non-zero fraction to that of the largest (at most 1):
    the scale spans the data, not 1e-4...1 whatever they are."""
    positive = fractions[np.isfinite(fractions) & (fractions > 0)]
    if not positive.size:
        return colors.LogNorm(vmin=1e-4, vmax=1.0)
    vmin = 10.0 ** np.floor(np.log10(positive.min()))
    vmax = min(10.0 ** np.ceil(np.log10(positive.max())), 1.0)
    return colors.LogNorm(vmin=vmin, vmax=max(vmax, vmin * 10))


def gradient_fate(hist: dict[str, np.ndarray], epochs: int | None = None) -> str:
    """In words, what the histogram shows happened to a run whose gradient stopped being measurable: 'run
    diverged in epoch 2' (most elements non-finite or above the top bin, or training stopped before ``epochs``
    after an epoch with such elements) or 'no gradient after epoch 2: the run died' (every element below the
    lowest bin); '' for a run that kept a gradient."""
    in_bins = hist["counts"].sum(1)
    recorded = len(in_bins)
    over = f"|grad| not finite or ≥ {format_number(hist['edges'][-1])}"
    diverged = np.flatnonzero(hist["overflow"] > in_bins + hist["underflow"])
    dead = np.flatnonzero((in_bins == 0) & (hist["underflow"] > 0))
    stopped = epochs is not None and 0 < recorded < epochs
    if not diverged.size and stopped and hist["overflow"][-1] > 0:
        diverged = np.array([recorded - 1])
    if diverged.size and (not dead.size or diverged[0] <= dead[0]):
        return f"run diverged in epoch {diverged[0] + 1} ({over}); training stopped"
    if dead.size:
        below = f"every |grad| < {hist['edges'][0]:.0e}"
        if dead[0] == 0:
            return f"no gradient from epoch 1 on: the run is dead ({below})"
        return f"no gradient after epoch {dead[0]}: the run died ({below} from epoch {dead[0] + 1})"
    if stopped:
        return f"training stopped after epoch {recorded}"
    return ""


def first_seed(paths: list[str], group: str = "head") -> dict[str, str]:
    """The lowest-seed file for each value of ``group`` (heads in the usual order)."""
    chosen: dict[str, str] = {}
    for path in sorted(paths, key=lambda p: run_key(p)["seed"]):
        chosen.setdefault(run_key(path)[group], path)
    return dict(sorted(chosen.items(), key=lambda kv: head_sort_key(kv[0])))


def mark_diverged(ax: plt.Axes, head: str, reason: str) -> None:
    """A panel for a run that has no landscape because it diverged: the head and the reason, no axes."""
    ax.set_axis_off()
    ax.set_title(HEAD_LABELS.get(head, head))
    ax.text(
        0.5,
        0.5,
        "diverged:\nno landscape\n\n" + textwrap.fill(reason, 28),
        ha="center",
        va="center",
        transform=ax.transAxes,
        fontsize=7,
        color="tab:red",
    )


def _chosen_landscapes(landscapes: list[str]) -> tuple[dict[str, dict], str]:
    """The first-seed landscape of each head and the seed(s) they are of, in words ('seed 0')."""
    paths = first_seed(landscapes)
    seeds = sorted({run_key(p)["seed"] for p in paths.values()})
    return {h: load_landscape(p) for h, p in paths.items()}, "seed " + "/".join(str(s) for s in seeds)


def _joined(*parts: str) -> str:
    return ", ".join(p for p in parts if p)


def _colorbar(fig, mappable, ax, lo: float, hi: float, log: bool, label: str = "loss"):
    """A colour bar beside one panel with round ticks inside [lo, hi]."""
    bar = fig.colorbar(mappable, ax=ax, shrink=0.8, pad=0.02, ticks=colorbar_ticks(lo, hi, log))
    bar.ax.yaxis.set_major_formatter(ticker.FuncFormatter(lambda v, _: f"{v:g}"))
    bar.ax.yaxis.set_minor_locator(ticker.NullLocator())
    bar.set_label(label)
    return bar


def _loss_range(loss: np.ndarray) -> tuple[float, float]:
    finite = loss[np.isfinite(loss)]
    if not finite.size:
        return 1e-3, 1.0
    lo = max(float(finite.min()), 1e-3)
    return lo, max(float(finite.max()), lo * 1.01 + 1e-3)


def landscape_surfaces(landscapes: list[str], title: str = "") -> plt.Figure:
    """3D loss surface per head, each on its own z (and colour) scale: a shared scale would make every head
    but the one with the highest walls look flat."""
    chosen, seeds = _chosen_landscapes(landscapes)
    fig = plt.figure(figsize=(3.6 * len(chosen), 3.4), layout="constrained")
    for i, (head, ls) in enumerate(chosen.items(), 1):
        if "diverged" in ls:
            mark_diverged(fig.add_subplot(1, len(chosen), i), head, ls["diverged"])
            continue
        ax = fig.add_subplot(1, len(chosen), i, projection="3d")
        loss = ls["plane"]["loss"]
        lo, hi = float(np.nanmin(loss)), float(np.nanmax(loss))
        hi = hi if hi > lo else lo + 1e-3
        a, b = np.meshgrid(ls["plane"]["alphas"], ls["plane"]["betas"], indexing="ij")
        surface = ax.plot_surface(a, b, loss, cmap="viridis", vmin=lo, vmax=hi, linewidth=0, antialiased=True)
        ax.set_zlim(lo, hi)
        ax.zaxis.set_major_locator(ticker.MaxNLocator(nbins=4))
        ax.set_box_aspect(None, zoom=0.78)  # leave room for the axis labels inside each panel
        ax.set_title(HEAD_LABELS.get(head, head))
        ax.set_xlabel("α (d1)")
        ax.set_ylabel("β (d2)")
        ax.set_zlabel("loss")
        _colorbar(fig, surface, ax, lo, hi, log=False)
    fig.suptitle(f"{_joined(title, seeds)}: loss surface around each trained head (z and colour scale per head)")
    return fig


def landscape_contours(landscapes: list[str], title: str = "") -> plt.Figure:
    """Filled log-spaced loss contours per head, each head on its own colour scale (its own colour bar)."""
    chosen, seeds = _chosen_landscapes(landscapes)
    fig, axes = plt.subplots(1, len(chosen), figsize=(3.4 * len(chosen), 3.1), squeeze=False, layout="constrained")
    for ax, (head, ls) in zip(axes[0], chosen.items()):
        if "diverged" in ls:
            mark_diverged(ax, head, ls["diverged"])
            continue
        p = ls["plane"]
        lo, hi = _loss_range(p["loss"])
        levels = np.geomspace(lo, hi, 25)
        cs = ax.contourf(
            p["alphas"],
            p["betas"],
            np.clip(p["loss"].T, lo, hi),
            levels=levels,
            norm=colors.LogNorm(vmin=lo, vmax=hi),
            cmap="viridis",
        )
        ax.contour(p["alphas"], p["betas"], p["loss"].T, levels=levels[::3], colors="white", linewidths=0.4)
        ax.plot(0, 0, "r*", ms=8)
        ax.set_title(HEAD_LABELS.get(head, head))
        ax.set_xlabel("α (d1)")
        ax.set_ylabel("β (d2)")
        ax.set_aspect("equal")
        _colorbar(fig, cs, ax, lo, hi, log=True)
    fig.suptitle(
        f"{_joined(title, seeds)}: loss around each trained head (★) on a random filter-normalised plane\n"
        "(log colour scale per head)"
    )
    return fig


def landscape_pca(landscapes: list[str], title: str = "") -> plt.Figure:
    """The optimisation path on its first two principal components over the loss on that plane; both PCs in
    the same units on equal scales, so the path's shape is not stretched along the minor component."""
    chosen, seeds = _chosen_landscapes(landscapes)
    fig, axes = plt.subplots(1, len(chosen), figsize=(3.6 * len(chosen), 3.3), squeeze=False, layout="constrained")
    for ax, (head, ls) in zip(axes[0], chosen.items()):
        if "diverged" in ls:
            mark_diverged(ax, head, ls["diverged"])
            continue
        p = ls["pca"]
        loss = p["loss"].T
        lo, hi = _loss_range(loss)
        levels = np.geomspace(lo, hi, 20)
        cs = ax.contourf(
            p["alphas"],
            p["betas"],
            np.clip(loss, lo, hi),
            levels=levels,
            norm=colors.LogNorm(lo, hi),
            cmap="viridis",
        )
        tr = p["trajectory"]
        ax.plot(tr[:, 0], tr[:, 1], "w.-", lw=1.2, ms=4)
        ax.plot(tr[0, 0], tr[0, 1], "o", color="orange", ms=5, label="init")
        ax.plot(tr[-1, 0], tr[-1, 1], "r*", ms=8, label="final")
        ev = p["explained_variance_ratio"]
        ax.set_xlabel(f"PC1 ({100 * ev[0]:.0f}% var.)")
        ax.set_ylabel(f"PC2 ({100 * ev[1]:.0f}% var.)")
        ax.set_xlim(p["alphas"][0], p["alphas"][-1])
        ax.set_ylim(p["betas"][0], p["betas"][-1])
        ax.set_aspect("equal", adjustable="box")
        ax.set_title(HEAD_LABELS.get(head, head))
        _colorbar(fig, cs, ax, lo, hi, log=True)
    place_legend(fig, axes[0][0])
    fig.suptitle(
        f"{_joined(title, seeds)}: optimisation path on its first two principal components\n"
        "(both axes on one scale; log colour scale per head)"
    )
    return fig


def log_axis_over(ax, axis: str, values: list, empty: str) -> None:
    """A log axis with round labelled ticks around the positive finite ``values``; without any, a linear axis
    that says why (:func:`log_scale`)."""
    v = np.concatenate([np.asarray(x, dtype=float).ravel() for x in values]) if values else np.zeros(0)
    v = v[np.isfinite(v) & (v > 0)]
    if v.size:
        set_round_log_axis(ax, axis, v.min(), v.max())
    else:
        log_scale(ax, axis, v, empty)


def landscape_1d(landscapes: list[str], title: str = "") -> plt.Figure:
    chosen, seeds = _chosen_landscapes(landscapes)
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(7.4, 3.3), layout="constrained")
    for head, ls in chosen.items():
        if "diverged" in ls:  # no curve: named in the legend as diverged
            ax1.plot([], [], color=PALETTE.get(head), ls=":", label=f"{HEAD_LABELS.get(head, head)}: diverged")
            continue
        c = PALETTE.get(head)
        ax1.plot(ls["interpolation"]["t"], ls["interpolation"]["loss"], color=c, label=HEAD_LABELS.get(head, head))
        ax2.plot(ls["line"]["alphas"], ls["line"]["loss"], color=c)
    for x in (0, 1):
        ax1.axvline(x, color="k", lw=0.5, ls=":")
    ax1.set_xlabel("t  (0 = initialisation, 1 = trained)")
    ax1.set_ylabel("loss")
    finite = [ls for ls in chosen.values() if "diverged" not in ls]
    log_axis_over(ax1, "y", [ls["interpolation"]["loss"] for ls in finite], "every run diverged: no curve")
    log_axis_over(ax2, "y", [ls["line"]["loss"] for ls in finite], "every run diverged: no curve")
    ax1.set_title("Linear interpolation init → final")
    ax2.set_xlabel("α along filter-normalised d1")
    ax2.set_ylabel("loss")
    ax2.set_title("Random direction through the minimum")
    place_legend(fig, ax1)
    for ax in (ax1, ax2):
        ax.grid(alpha=0.3)
    fig.suptitle(f"{_joined(title, seeds)}: loss along one-dimensional cuts")
    return fig


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
    for head in sorted(df["head"].unique(), key=head_sort_key):
        if at_chance(df.loc[df["head"] == head, "test_acc"], df.loc[df["head"] == head, "test_loss"]):
            dead.add(HEAD_LABELS.get(head, head))
        stats = df[df["head"] == head].groupby("batch_size")["test_acc"].agg(["mean", "std", "count"]).reset_index()
        std = np.nan_to_num(stats["std"].to_numpy())
        label = HEAD_LABELS.get(head, head)
        ax.errorbar(
            stats["batch_size"],
            stats["mean"],
            yerr=std if (stats["count"] > 1).any() else None,
            marker="o",
            capsize=3,
            color=PALETTE.get(head),
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


# ------------------------------------------------------------------------------------------------ the figures
@dataclasses.dataclass(frozen=True)
class FigureSpec:
    """One figure: the run files it reads, its report category and how it is drawn from them.

    ``inputs``: kind (metrics, grads, landscapes, summaries) -> [(experiment, run file, heads or None = all)].
    The figure rule (figures.smk) asks for exactly these files; a figure whose experiment (or head) the config
    lacks is not defined."""

    category: str
    inputs: dict[str, list[tuple[str, str, list[str] | None]]]
    # (input files by kind, the figure settings: figures slice, ``conditions`` of its experiments, and the
    # diagnostics slice named by ``settings``) -> figure
    draw: Callable[[dict[str, list[str]], dict], plt.Figure]
    # the diagnostics.<key> config slice the drawing reads (merged into the figure rule's settings), if any
    settings: str | None = None


INPUT_KINDS = ("metrics", "grads", "landscapes", "summaries", "smoothness", "spectra", "adaptive")
CLIPPING_HEADS = ["batch", "frn", "none"]
CONVERGENCE_LANDSCAPES = {"landscapes": [("convergence", "landscape.h5", None)]}

# the study's numbering of the experiments the figures show (Abolhasani 2025)
STUDY_NUMBERS = {"convergence": 1, "clipping": 2, "high_lr": 3}


def condition_text(settings: dict, experiment: str) -> str:
    """What the runs of ``experiment`` share, from the config (``settings["conditions"]``): 'lr 0.001, clipping at
    norm 1'. Never a default written here: a figure states the learning rate its runs were trained with."""
    c = settings.get("conditions", {}).get(experiment, {})
    parts = [f"lr {format_number(c['lr'])}"] if "lr" in c else []
    if c.get("clip_grad_norm"):
        parts.append(clipping_label(settings, experiment))
    return ", ".join(parts)


def experiment_title(settings: dict, experiment: str) -> str:
    """'Exp. 1 (lr 0.001)' for the study's experiments, else the experiment's name with its condition."""
    number = STUDY_NUMBERS.get(experiment)
    name = f"Exp. {number}" if number else experiment
    condition = condition_text(settings, experiment)
    return f"{name} ({condition})" if condition else name


def epochs_text(settings: dict, experiment: str) -> str:
    """'3 epochs' from the config's conditions of ``experiment`` ('' when they do not say)."""
    epochs = settings.get("conditions", {}).get(experiment, {}).get("epochs")
    return f"{epochs} epochs" if epochs else ""


def format_number(value: float) -> str:
    """3 significant digits, exponent without padding: 0.001, 0.0025, 0.2, 1, 1e30, 1e-12."""
    text = f"{value:.3g}"
    if "e" in text:
        mantissa, exponent = text.split("e")
        return f"{mantissa}e{int(exponent)}"
    return text


def clipping_label(settings: dict, experiment: str) -> str:
    clip = settings.get("conditions", {}).get(experiment, {}).get("clip_grad_norm")
    return f"clipping at norm {clip:g}" if clip else "no clipping"


FIGURES: dict[str, FigureSpec] = {
    "fig4_convergence_accuracy": FigureSpec(
        "experiments",
        {"metrics": [("convergence", "metrics.csv", None)]},
        lambda i, s: curves_figure(
            i["metrics"],
            "convergence",
            ["val_acc", "train_acc"],
            s["smoothing_window"],
            f"{experiment_title(s, 'convergence')}: accuracy per epoch",
        ),
    ),
    "fig5_landscape_surface": FigureSpec(
        "landscapes",
        CONVERGENCE_LANDSCAPES,
        lambda i, s: landscape_surfaces(i["landscapes"], experiment_title(s, "convergence")),
    ),
    "fig5_landscape_contour": FigureSpec(
        "landscapes",
        CONVERGENCE_LANDSCAPES,
        lambda i, s: landscape_contours(i["landscapes"], experiment_title(s, "convergence")),
    ),
    "fig5_trajectory_pca": FigureSpec(
        "landscapes",
        CONVERGENCE_LANDSCAPES,
        lambda i, s: landscape_pca(i["landscapes"], experiment_title(s, "convergence")),
    ),
    "fig_landscape_1d": FigureSpec(
        "landscapes",
        CONVERGENCE_LANDSCAPES,
        lambda i, s: landscape_1d(i["landscapes"], experiment_title(s, "convergence")),
    ),
    "fig6_grad_hist_fc2": FigureSpec(
        "gradients",
        {"grads": [("convergence", "grads.h5", None)]},
        lambda i, s: grad_heatmaps(
            i["grads"], "head", title=f"{experiment_title(s, 'convergence')}: |grad| of the second FC layer per epoch"
        ),
    ),
    "fig7_layernorm_clipping_val_loss": FigureSpec(
        "experiments",
        {"metrics": [("convergence", "metrics.csv", ["layer"]), ("clipping", "metrics.csv", ["layer"])]},
        lambda i, s: clipping_figure(
            i["metrics"],
            ["layer"],
            s,
            title=f"LayerNorm: validation loss without / with clipping ({condition_text(s, 'convergence')})",
        ),
    ),
    "fig8_layernorm_clipping_grads": FigureSpec(
        "gradients",
        {"grads": [("convergence", "grads.h5", ["layer"]), ("clipping", "grads.h5", ["layer"])]},
        lambda i, s: grad_heatmaps(
            i["grads"],
            "experiment",
            title=f"LayerNorm: |grad| of fc2 without / with clipping ({condition_text(s, 'convergence')})",
            label_of=lambda e: clipping_label(s, e),
        ),
    ),
    "fig9_clipping_val_loss": FigureSpec(
        "experiments",
        {
            "metrics": [
                ("convergence", "metrics.csv", CLIPPING_HEADS),
                ("clipping", "metrics.csv", CLIPPING_HEADS),
            ]
        },
        lambda i, s: clipping_figure(
            i["metrics"],
            CLIPPING_HEADS,
            s,
            title=f"{experiment_title(s, 'convergence')} vs {experiment_title(s, 'clipping')}: validation loss",
        ),
    ),
    "fig10_high_lr": FigureSpec(
        "experiments",
        {"metrics": [("high_lr", "metrics.csv", None)]},
        lambda i, s: curves_figure(
            i["metrics"],
            "high_lr",
            ["val_acc", "val_loss"],
            s["smoothing_window"],
            f"{experiment_title(s, 'high_lr')}: accuracy and loss per epoch",
        ),
    ),
    "fig11_lr_sweep_grads": FigureSpec(
        "appendix",
        {"grads": [("lr_sweep", "grads.h5", None)]},
        lambda i, s: grad_heatmaps(
            i["grads"],
            "variant",
            title=_joined(
                f"{experiment_title(s, 'lr_sweep')}: baseline head's |grad| of fc2 at each learning rate",
                epochs_text(s, "lr_sweep"),
            ),
            label_of=lambda v: f"lr = {variant_value(v):g}",
        ),
    ),
    "figA_batch_size": FigureSpec(
        "appendix",
        {"summaries": [("batch_size", "summary.json", None)]},
        lambda i, s: batch_size_figure(
            i["summaries"],
            _joined(
                f"{experiment_title(s, 'batch_size')}: final test accuracy vs batch size", epochs_text(s, "batch_size")
            ),
        ),
    ),
    # optimisation diagnostics (normscape.plots_diagnostics; measures registered in normscape.measures)
    "fig_smoothness": FigureSpec(
        "diagnostics",
        {"smoothness": [("convergence", "smoothness.h5", None)]},
        lambda i, s: _diagnostics().plot_smoothness(
            i["smoothness"], None, None, title=experiment_title(s, "convergence")
        ),
    ),
    "fig_hessian_density": FigureSpec(
        "diagnostics",
        {"spectra": [("convergence", "spectrum.h5", None)]},
        lambda i, s: _diagnostics().plot_spectrum_density(
            i["spectra"],
            None,
            None,
            sigma_fraction=s["density_sigma_fraction"],
            title=experiment_title(s, "convergence"),
        ),
        settings="spectrum",
    ),
    "fig_adaptive_sharpness": FigureSpec(
        "diagnostics",
        {"adaptive": [("convergence", "adaptive_sharpness.json", None)]},
        lambda i, s: _diagnostics().plot_adaptive_sharpness(
            i["adaptive"], None, None, title=experiment_title(s, "convergence")
        ),
    ),
}


def _diagnostics():
    """normscape.plots_diagnostics, imported when drawn (it imports this module)."""
    return importlib.import_module("normscape.plots_diagnostics")


def draw(name: str, inputs: dict[str, list[str]], settings: dict) -> plt.Figure:
    """The figure called ``name`` (see FIGURES.md) from its input files."""
    if name not in FIGURES:
        raise ValueError(f"unknown figure {name!r}; defined: {sorted(FIGURES)}")
    return FIGURES[name].draw(inputs, {"smoothing_window": 3, **settings})


def render(name: str, inputs: dict[str, list[str]], settings: dict, pdf: str | Path, png: str | Path) -> None:
    save(draw(name, inputs, settings), pdf, png)
