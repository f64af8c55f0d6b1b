"""Gradient-histogram figures (fig6, fig8, fig11): epoch x log10|grad| heatmaps of the fraction of gradient
elements per bin, one panel per run (first seed), on one colour scale spanning the fractions that occur. Empty
bins are grey, distinct from the smallest fractions; a run whose gradient vanished or diverged says so in words.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from normscape.figures.axes import panel_note
from normscape.figures.style import colors, first_seed, format_number, plt, ticker
from normscape.models.norms import NORM_LABELS
from normscape.reporting.run_files import load_grad_hist, norm_sort_key, variant_value


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
    keys = sorted(chosen, key=lambda k: norm_sort_key(k) if group == "head" else (variant_value(k) or 0))
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
            panel_note(ax, fate, width=26)
        ax.set_title(label_of(key) if label_of else NORM_LABELS.get(key, key))
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
