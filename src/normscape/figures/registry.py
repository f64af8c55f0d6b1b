"""The study's figures, paper-ready: one function per figure, each from the run files Snakemake hands it.

Curves show the raw mean over seeds as the line and mean +- one standard deviation as a band (a centred running
average of ``smoothing_window`` epochs, if > 1, is drawn thin and light over it: centred, so it never lags the
data). Axes fit the heads that learn; a dead or diverged curve is named in the panel, not allowed to squash the
others (:mod:`normscape.figures.axes`). Panels that are compared share a y scale. Gradient histograms are epoch x
log10|grad| heatmaps of the fraction of gradient elements per bin, empty bins grey. Each landscape has its own
colour (and z) scale with round ticks. Titles name the experiment and its learning rate, from the config. Every
figure is written as PDF (vector) and PNG (300 dpi). Here: the figure registry (:data:`FIGURES`), titles from the
config, the curve and batch-size figures; gradient heatmaps, landscapes and diagnostics in ``figures.gradients``,
``figures.landscape`` and ``figures.diagnostics``; axis scaling in ``figures.axes``.
"""

from __future__ import annotations

import dataclasses
import importlib
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np

from normscape.figures.axes import (
    apply_limits,
    at_chance,
    fit_limits,
    legend_label,
    mark_off_axis,
    panel_note,
)
from normscape.models.norms import COLOURS, LazyModule
from normscape.reporting.run_files import (
    HEAD_LABELS,
    head_sort_key,
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
    from normscape.pipeline.atomic import atomic_path

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
    panel_note(ax, empty, width=30)
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
        single = {"marker": "o", "ms": 3} if len(mean) == 1 else {}  # a one-epoch curve: a point, not nothing
        ax.plot(stats["epoch"], mean, lw=1.6, label=legend_label(name, int(stats["count"].max())), **single, **style)
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


def _outside(values, lo: float, hi: float) -> bool:
    """Whether every finite value of a curve lies outside [lo, hi] (and there is one)."""
    finite = np.asarray(values, dtype=float)
    finite = finite[np.isfinite(finite)]
    return finite.size > 0 and bool(((finite < lo) | (finite > hi)).all())


def first_seed(paths: list[str], group: str = "head") -> dict[str, str]:
    """The lowest-seed file for each value of ``group`` (heads in the usual order)."""
    chosen: dict[str, str] = {}
    for path in sorted(paths, key=lambda p: run_key(p)["seed"]):
        chosen.setdefault(run_key(path)[group], path)
    return dict(sorted(chosen.items(), key=lambda kv: head_sort_key(kv[0])))


def joined(*parts: str) -> str:
    return ", ".join(p for p in parts if p)


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


INPUT_KINDS = (
    "metrics",
    "grads",
    "landscapes",
    "summaries",
    "smoothness",
    "spectra",
    "adaptive",
    "preconditioned_sharpness",
)
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
        lambda i, s: _module("landscape").landscape_surfaces(i["landscapes"], experiment_title(s, "convergence")),
    ),
    "fig5_landscape_contour": FigureSpec(
        "landscapes",
        CONVERGENCE_LANDSCAPES,
        lambda i, s: _module("landscape").landscape_contours(i["landscapes"], experiment_title(s, "convergence")),
    ),
    "fig5_trajectory_pca": FigureSpec(
        "landscapes",
        CONVERGENCE_LANDSCAPES,
        lambda i, s: _module("landscape").landscape_pca(i["landscapes"], experiment_title(s, "convergence")),
    ),
    "fig_landscape_1d": FigureSpec(
        "landscapes",
        CONVERGENCE_LANDSCAPES,
        lambda i, s: _module("landscape").landscape_1d(i["landscapes"], experiment_title(s, "convergence")),
    ),
    "fig6_grad_hist_fc2": FigureSpec(
        "gradients",
        {"grads": [("convergence", "grads.h5", None)]},
        lambda i, s: _module("gradients").grad_heatmaps(
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
        lambda i, s: _module("gradients").grad_heatmaps(
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
        lambda i, s: _module("gradients").grad_heatmaps(
            i["grads"],
            "variant",
            title=joined(
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
            joined(
                f"{experiment_title(s, 'batch_size')}: final test accuracy vs batch size", epochs_text(s, "batch_size")
            ),
        ),
    ),
    # optimisation diagnostics (normscape.figures.diagnostics; measures registered in normscape.pipeline.measures)
    "fig_smoothness": FigureSpec(
        "diagnostics",
        {"smoothness": [("convergence", "smoothness.h5", None)]},
        lambda i, s: _module("diagnostics").plot_smoothness(
            i["smoothness"], None, None, title=experiment_title(s, "convergence")
        ),
    ),
    "fig_hessian_density": FigureSpec(
        "diagnostics",
        {"spectra": [("convergence", "spectrum.h5", None)]},
        lambda i, s: _module("diagnostics").plot_spectrum_density(
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
        lambda i, s: _module("diagnostics").plot_adaptive_sharpness(
            i["adaptive"], None, None, title=experiment_title(s, "convergence")
        ),
    ),
    # Adam's edge of stability (normscape.figures.stability; issue 30): the study's two learning rates, and the
    # lr grid at the study's batch size and at a large batch
    "fig_preconditioned_sharpness": FigureSpec(
        "stability",
        {
            "preconditioned_sharpness": [
                ("convergence", "preconditioned_sharpness.h5", None),
                ("high_lr", "preconditioned_sharpness.h5", None),
            ]
        },
        lambda i, s: _module("stability").preconditioned_sharpness_figure(
            i["preconditioned_sharpness"], s, ["convergence", "high_lr"]
        ),
    ),
    "fig_stability_map": FigureSpec(
        "stability",
        {"summaries": [("stability", "summary.json", None), ("stability_large_batch", "summary.json", None)]},
        lambda i, s: _module("stability").stability_map_figure(
            i["summaries"], s, ["stability", "stability_large_batch"]
        ),
    ),
}


def _module(part: str):
    """normscape.figures.<part> (landscape, gradients, diagnostics, stability), imported when a figure of it is
    drawn: those modules import this one, and the workflow parses this one without drawing."""
    return importlib.import_module(f"normscape.figures.{part}")


def draw(name: str, inputs: dict[str, list[str]], settings: dict) -> plt.Figure:
    """The figure called ``name`` (see FIGURES.md) from its input files."""
    if name not in FIGURES:
        raise ValueError(f"unknown figure {name!r}; defined: {sorted(FIGURES)}")
    return FIGURES[name].draw(inputs, {"smoothing_window": 3, **settings})


def render(name: str, inputs: dict[str, list[str]], settings: dict, pdf: str | Path, png: str | Path) -> None:
    save(draw(name, inputs, settings), pdf, png)
