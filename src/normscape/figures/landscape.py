"""Loss-landscape figures (fig5 surface / contour / PCA trajectory, 1D cuts) of the first seed of each head.

Each head has its own z and colour scale with a colour bar of round ticks: one shared scale makes every head but
the steepest look flat. The PCA plane is drawn with both components on one scale, so the path is not stretched
along the minor one. Titles name the experiment, its learning rate and the seed.
"""

from __future__ import annotations

import textwrap

import numpy as np

from normscape.figures.axes import colorbar_ticks, set_round_log_axis
from normscape.figures.style import colors, first_seed, joined, log_scale, place_legend, plt, ticker
from normscape.models.norms import NORM_COLOURS, NORM_LABELS
from normscape.reporting.run_files import load_landscape, run_key


def mark_diverged(ax: plt.Axes, head: str, reason: str) -> None:
    """A panel for a run that has no landscape because it diverged: the head and the reason, no axes."""
    ax.set_axis_off()
    ax.set_title(NORM_LABELS.get(head, head))
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
        ax.set_title(NORM_LABELS.get(head, head))
        ax.set_xlabel("α (d1)")
        ax.set_ylabel("β (d2)")
        # no z label: in a panel this narrow it lands on the z tick labels; the colour bar beside it says "loss"
        _colorbar(fig, surface, ax, lo, hi, log=False)
    fig.suptitle(f"{joined(title, seeds)}: loss surface around each trained head (z and colour scale per head)")
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
        ax.set_title(NORM_LABELS.get(head, head))
        ax.set_xlabel("α (d1)")
        ax.set_ylabel("β (d2)")
        ax.set_aspect("equal")
        _colorbar(fig, cs, ax, lo, hi, log=True)
    fig.suptitle(
        f"{joined(title, seeds)}: loss around each trained head (★) on a random filter-normalised plane\n"
        "(log colour scale per head)"
    )
    return fig


# PC2's share of the path's variance below which the path is one line (rounding): PC2 is then any direction
# orthogonal to it, and on PC1's scale its grid is a sliver
DEGENERATE_PC2 = 1e-6


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
        if ev[1] < DEGENERATE_PC2:  # e.g. two epochs: three points, one line; PC2's sliver drawn at full height
            ax.text(0.5, 0.03, "path on one line: PC2 arbitrary", transform=ax.transAxes, ha="center", fontsize=7)
        else:
            ax.set_aspect("equal", adjustable="box")
        ax.set_title(NORM_LABELS.get(head, head))
        _colorbar(fig, cs, ax, lo, hi, log=True)
    place_legend(fig, axes[0][0])
    fig.suptitle(
        f"{joined(title, seeds)}: optimisation path on its first two principal components\n"
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
            ax1.plot([], [], color=NORM_COLOURS.get(head), ls=":", label=f"{NORM_LABELS.get(head, head)}: diverged")
            continue
        c = NORM_COLOURS.get(head)
        ax1.plot(ls["interpolation"]["t"], ls["interpolation"]["loss"], color=c, label=NORM_LABELS.get(head, head))
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
    fig.suptitle(f"{joined(title, seeds)}: loss along one-dimensional cuts")
    return fig
