"""The study's figures, paper-ready: one function per figure, each from the run files Snakemake hands it.

Curves show the mean over seeds as a line and mean +- one standard deviation as a band; smoothed curves use
a trailing running average (``smoothing_window`` epochs, as the study's Fig. 4) with the raw mean drawn faint.
Gradient histograms are epoch x log10|grad| heatmaps of the fraction of gradient elements per bin. Landscapes
of different heads share one colour scale. Every figure is written as PDF (vector) and PNG (300 dpi).
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


def running_average(values: np.ndarray, window: int) -> np.ndarray:
    """Trailing mean over the last ``window`` values (shorter at the start), NaN-aware."""
    out = np.empty_like(values, dtype=float)
    for i in range(len(values)):
        chunk = values[max(0, i - window + 1) : i + 1]
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
) -> None:
    """Mean over seeds (smoothed, raw faint) and +-1 std band, one curve per value of ``group``."""
    keys = sorted(df[group].unique(), key=lambda k: (head_sort_key(k) if group == "head" else 0, str(k)))
    for key in keys:
        sub = df[df[group] == key]
        stats = _seed_stats(sub, metric)
        style = (styles or {}).get(key, {"color": PALETTE.get(key)})
        label = label_of(key) if label_of else HEAD_LABELS.get(key, key)
        mean = stats["mean"].to_numpy()
        std = np.nan_to_num(stats["std"].to_numpy())
        smooth = running_average(mean, window)
        ax.plot(stats["epoch"], mean, alpha=0.3, lw=0.8, **{k: v for k, v in style.items() if k != "ls"})
        ax.plot(stats["epoch"], smooth, lw=1.8, label=f"{label} (n={int(stats['count'].max())})", **style)
        ax.fill_between(stats["epoch"], mean - std, mean + std, alpha=0.15, color=style.get("color"), lw=0)
        diverged = sub[sub["diverged"] == 1]
        if len(diverged):
            ax.scatter(
                diverged["epoch"],
                np.nan_to_num(diverged[metric], nan=ax.get_ylim()[1]),
                marker="x",
                color=style.get("color"),
                zorder=5,
            )
    ax.set_xlabel("epoch")
    ax.xaxis.set_major_locator(ticker.MaxNLocator(integer=True))
    ax.set_ylabel(METRIC_LABELS.get(metric, metric))
    ax.grid(alpha=0.3)


def curves_figure(metrics: list[str], experiment: str, panels: list[str], window: int, title: str) -> plt.Figure:
    df = load_metrics(metrics)
    df = df[df["experiment"] == experiment]
    fig, axes = plt.subplots(1, len(panels), figsize=(3.6 * len(panels), 3.0), squeeze=False, layout="constrained")
    for ax, metric in zip(axes[0], panels):
        plot_curves(ax, df, metric, "head", window)
        ax.set_title(METRIC_LABELS.get(metric, metric).capitalize())
    axes[0][0].legend(loc="best")
    fig.suptitle(title)
    return fig


def clipping_figure(metrics: list[str], heads: list[str], settings: dict, metric: str = "val_loss") -> plt.Figure:
    df = load_metrics(metrics)
    df = df[df["head"].isin(heads)]
    heads = [h for h in heads if h in set(df["head"])]  # the heads the config has
    fig, axes = plt.subplots(1, len(heads), figsize=(3.4 * len(heads), 2.9), squeeze=False, layout="constrained")
    styles = {"convergence": {"color": "#1f77b4"}, "clipping": {"color": "#d62728", "ls": "--"}}
    window = settings["smoothing_window"]
    for ax, head in zip(axes[0], sorted(heads, key=head_sort_key)):
        plot_curves(
            ax, df[df["head"] == head], metric, "experiment", window, styles, lambda e: clipping_label(settings, e)
        )
        ax.set_title(HEAD_LABELS.get(head, head))
    axes[0][0].legend(loc="best")
    return fig


def grad_heatmaps(
    grads: list[str],
    group: str,
    layer: str = "fc2.weight",
    title: str = "",
    label_of: Callable[[str], str] | None = None,
) -> plt.Figure:
    """One epoch x log10|grad| heatmap per run (first seed of each group value), shared colour scale."""
    chosen = first_seed(grads, group)
    keys = sorted(chosen, key=lambda k: head_sort_key(k) if group == "head" else (variant_value(k) or 0))
    fig, axes = plt.subplots(
        1, len(keys), figsize=(2.9 * len(keys), 2.8), squeeze=False, sharey=True, sharex=True, layout="constrained"
    )
    norm = colors.LogNorm(vmin=1e-4, vmax=1.0)
    image = None
    hists = {key: load_grad_hist(chosen[key], layer) for key in keys}
    # one x range for all panels (the bins any panel uses, plus a margin) so the heads compare directly
    used = np.flatnonzero(sum(h["counts"].sum(0) for h in hists.values()))
    n_edges = len(next(iter(hists.values()))["edges"])
    lo, hi = (max(used[0] - 2, 0), min(used[-1] + 3, n_edges - 1)) if used.size else (0, n_edges - 1)
    for ax, key in zip(axes[0], keys):
        h = hists[key]
        counts = h["counts"].astype(float)
        frac = counts / np.maximum(counts.sum(1, keepdims=True), 1)
        log_edges = np.log10(h["edges"])
        epochs = np.arange(1, counts.shape[0] + 2) - 0.5
        image = ax.pcolormesh(
            log_edges[lo : hi + 1],
            epochs,
            np.ma.masked_equal(frac[:, lo:hi], 0),
            norm=norm,
            cmap="viridis",
            shading="flat",
        )
        ax.plot(
            np.log10(np.maximum(h["mean_abs"], 1e-30)),
            np.arange(1, counts.shape[0] + 1),
            ".-",
            color="red",
            lw=0.8,
            ms=3,
            label="mean |g|",
        )
        ax.yaxis.set_major_locator(ticker.MaxNLocator(integer=True))
        zero_rows = np.flatnonzero((counts.sum(1) == 0) & (h["underflow"] > 0)) + 1
        if zero_rows.size:  # every gradient element below the lowest bin: the layer receives no gradient
            ax.text(
                0.5,
                (zero_rows.mean() - 0.5) / counts.shape[0],
                f"epochs {zero_rows[0]}-{zero_rows[-1]}:\nall |grad| < {h['edges'][0]:.0e}",
                transform=ax.transAxes,
                ha="center",
                va="center",
                fontsize=8,
                bbox={"facecolor": "white", "alpha": 0.8, "lw": 0},
            )
        ax.set_title(label_of(key) if label_of else HEAD_LABELS.get(key, key))
        ax.set_xlabel(f"log10 |grad| of {layer}")
    axes[0][0].set_ylabel("epoch")
    axes[0][0].legend(loc="lower left", fontsize=7)
    if image is not None:
        fig.colorbar(image, ax=axes[0].tolist(), label="fraction of gradient elements", shrink=0.9)
    if title:
        fig.suptitle(title)
    return fig


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


def _finite_landscapes(chosen: dict) -> list[dict]:
    return [ls for ls in chosen.values() if "diverged" not in ls] or [{"plane": {"loss": np.ones((1, 1))}}]


def landscape_surfaces(landscapes: list[str]) -> plt.Figure:
    chosen = {h: load_landscape(p) for h, p in first_seed(landscapes).items()}
    zmax = max(float(np.nanmax(ls["plane"]["loss"])) for ls in _finite_landscapes(chosen))
    fig = plt.figure(figsize=(3.2 * len(chosen), 3.2), layout="constrained")
    for i, (head, ls) in enumerate(chosen.items(), 1):
        if "diverged" in ls:
            mark_diverged(fig.add_subplot(1, len(chosen), i), head, ls["diverged"])
            continue
        ax = fig.add_subplot(1, len(chosen), i, projection="3d")
        a, b = np.meshgrid(ls["plane"]["alphas"], ls["plane"]["betas"], indexing="ij")
        ax.plot_surface(a, b, ls["plane"]["loss"], cmap="viridis", vmin=0, vmax=zmax, linewidth=0, antialiased=True)
        ax.set_zlim(0, zmax)
        ax.set_box_aspect(None, zoom=0.8)  # leave room for the axis labels inside each panel
        ax.set_title(HEAD_LABELS.get(head, head))
        ax.set_xlabel("α (d1)")
        ax.set_ylabel("β (d2)")
        ax.set_zlabel("loss")
    return fig


def landscape_contours(landscapes: list[str]) -> plt.Figure:
    chosen = {h: load_landscape(p) for h, p in first_seed(landscapes).items()}
    lo = min(float(np.nanmin(ls["plane"]["loss"])) for ls in _finite_landscapes(chosen))
    hi = max(float(np.nanmax(ls["plane"]["loss"])) for ls in _finite_landscapes(chosen))
    levels = np.geomspace(max(lo, 1e-3), max(hi, lo * 1.01 + 1e-3), 25)
    norm = colors.LogNorm(vmin=levels[0], vmax=levels[-1])
    fig, axes = plt.subplots(1, len(chosen), figsize=(3.0 * len(chosen), 2.9), squeeze=False, layout="constrained")
    cs = None
    for ax, (head, ls) in zip(axes[0], chosen.items()):
        if "diverged" in ls:
            mark_diverged(ax, head, ls["diverged"])
            continue
        p = ls["plane"]
        cs = ax.contourf(
            p["alphas"],
            p["betas"],
            np.clip(p["loss"].T, levels[0], levels[-1]),
            levels=levels,
            norm=norm,
            cmap="viridis",
        )
        ax.contour(p["alphas"], p["betas"], p["loss"].T, levels=levels[::3], colors="white", linewidths=0.4)
        ax.plot(0, 0, "r*", ms=8)
        ax.set_title(HEAD_LABELS.get(head, head))
        ax.set_xlabel("α (d1)")
        ax.set_aspect("equal")
    axes[0][0].set_ylabel("β (d2)")
    if cs is not None:
        fig.colorbar(cs, ax=axes[0].tolist(), label="loss (shared log scale)", shrink=0.9, format="%.3g")
    return fig


def landscape_pca(landscapes: list[str]) -> plt.Figure:
    chosen = {h: load_landscape(p) for h, p in first_seed(landscapes).items()}
    fig, axes = plt.subplots(1, len(chosen), figsize=(3.0 * len(chosen), 2.9), squeeze=False, layout="constrained")
    for ax, (head, ls) in zip(axes[0], chosen.items()):
        if "diverged" in ls:
            mark_diverged(ax, head, ls["diverged"])
            continue
        p = ls["pca"]
        loss = p["loss"].T
        levels = np.geomspace(max(np.nanmin(loss), 1e-3), max(np.nanmax(loss), np.nanmin(loss) * 1.01 + 1e-3), 20)
        ax.contourf(
            p["alphas"],
            p["betas"],
            np.clip(loss, levels[0], levels[-1]),
            levels=levels,
            norm=colors.LogNorm(levels[0], levels[-1]),
            cmap="viridis",
        )
        tr = p["trajectory"]
        ax.plot(tr[:, 0], tr[:, 1], "w.-", lw=1.2, ms=4)
        ax.plot(tr[0, 0], tr[0, 1], "o", color="orange", ms=5, label="init")
        ax.plot(tr[-1, 0], tr[-1, 1], "r*", ms=8, label="final")
        ev = p["explained_variance_ratio"]
        ax.set_xlabel(f"PC1 ({100 * ev[0]:.0f}% var.)")
        ax.set_ylabel(f"PC2 ({100 * ev[1]:.0f}% var.)")
        ax.set_title(HEAD_LABELS.get(head, head))
    axes[0][0].legend(loc="best", fontsize=7)
    return fig


def landscape_1d(landscapes: list[str]) -> plt.Figure:
    chosen = {h: load_landscape(p) for h, p in first_seed(landscapes).items()}
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(7.2, 2.9), layout="constrained")
    for head, ls in chosen.items():
        if "diverged" in ls:  # no curve: named in the legend as diverged
            ax1.plot([], [], color=PALETTE.get(head), ls=":", label=f"{HEAD_LABELS.get(head, head)} (diverged)")
            continue
        c = PALETTE.get(head)
        ax1.plot(ls["interpolation"]["t"], ls["interpolation"]["loss"], color=c, label=HEAD_LABELS.get(head, head))
        ax2.plot(ls["line"]["alphas"], ls["line"]["loss"], color=c)
    for x in (0, 1):
        ax1.axvline(x, color="k", lw=0.5, ls=":")
    ax1.set_xlabel("t  (0 = initialisation, 1 = trained)")
    ax1.set_ylabel("loss")
    finite = [ls for ls in chosen.values() if "diverged" not in ls]
    log_scale(ax1, "y", [ls["interpolation"]["loss"] for ls in finite], "every run diverged: no curve")
    log_scale(ax2, "y", [ls["line"]["loss"] for ls in finite], "every run diverged: no curve")
    ax1.set_title("Linear interpolation init → final")
    ax2.set_xlabel("α along filter-normalised d1")
    ax2.set_ylabel("loss")
    ax2.set_title("Random direction through the minimum")
    ax1.legend(loc="best")
    for ax in (ax1, ax2):
        ax.grid(alpha=0.3)
    return fig


def batch_size_figure(summaries: list[str]) -> plt.Figure:
    rows = [
        {"head": s["head"], "batch_size": variant_value(s["variant"]), "test_acc": s["final"]["test_acc"]}
        for s in load_summaries(summaries)
    ]
    df = pd.DataFrame(rows)
    fig, ax = plt.subplots(figsize=(4.2, 3.0), layout="constrained")
    for head in sorted(df["head"].unique(), key=head_sort_key):
        stats = df[df["head"] == head].groupby("batch_size")["test_acc"].agg(["mean", "std"]).reset_index()
        ax.errorbar(
            stats["batch_size"],
            stats["mean"],
            yerr=np.nan_to_num(stats["std"]),
            marker="o",
            capsize=3,
            color=PALETTE.get(head),
            label=HEAD_LABELS.get(head, head),
        )
    ax.set_xscale("log", base=2)
    ax.set_xlabel("batch size")
    ax.set_ylabel("final test accuracy")
    ax.grid(alpha=0.3)
    ax.legend(loc="best")
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
        "landscapes", CONVERGENCE_LANDSCAPES, lambda i, s: landscape_surfaces(i["landscapes"])
    ),
    "fig5_landscape_contour": FigureSpec(
        "landscapes", CONVERGENCE_LANDSCAPES, lambda i, s: landscape_contours(i["landscapes"])
    ),
    "fig5_trajectory_pca": FigureSpec(
        "landscapes", CONVERGENCE_LANDSCAPES, lambda i, s: landscape_pca(i["landscapes"])
    ),
    "fig_landscape_1d": FigureSpec("landscapes", CONVERGENCE_LANDSCAPES, lambda i, s: landscape_1d(i["landscapes"])),
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
        lambda i, s: clipping_figure(i["metrics"], ["layer"], s),
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
        lambda i, s: clipping_figure(i["metrics"], CLIPPING_HEADS, s),
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
            title="Baseline head: |grad| of fc2 at each learning rate",
            label_of=lambda v: f"lr = {variant_value(v):g}",
        ),
    ),
    "figA_batch_size": FigureSpec(
        "appendix",
        {"summaries": [("batch_size", "summary.json", None)]},
        lambda i, s: batch_size_figure(i["summaries"]),
    ),
    # optimisation diagnostics (normscape.plots_diagnostics; measures registered in normscape.measures)
    "fig_smoothness": FigureSpec(
        "diagnostics",
        {"smoothness": [("convergence", "smoothness.h5", None)]},
        lambda i, s: _diagnostics().plot_smoothness(i["smoothness"], None, None),
    ),
    "fig_hessian_density": FigureSpec(
        "diagnostics",
        {"spectra": [("convergence", "spectrum.h5", None)]},
        lambda i, s: _diagnostics().plot_spectrum_density(
            i["spectra"], None, None, sigma_fraction=s["density_sigma_fraction"]
        ),
        settings="spectrum",
    ),
    "fig_adaptive_sharpness": FigureSpec(
        "diagnostics",
        {"adaptive": [("convergence", "adaptive_sharpness.json", None)]},
        lambda i, s: _diagnostics().plot_adaptive_sharpness(i["adaptive"], None, None),
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
