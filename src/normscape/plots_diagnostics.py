"""Figures of the optimisation diagnostics: smoothness along training, Hessian spectral density, adaptive sharpness.

Each function takes the per-run files the measures write (``smoothness.h5``, ``spectrum.h5``,
``adaptive_sharpness.json``; runs identified from their paths, as every figure of :mod:`normscape.plots`) and
writes a PDF and a 300-dpi PNG. BatchNorm's train-mode numbers (batch statistics) are drawn dashed and labelled
"train mode" wherever they appear, next to the eval-mode (running statistics) ones.
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np

from normscape.adaptive_sharpness import read_adaptive_sharpness
from normscape.plots import PALETTE, log_scale, plt, save
from normscape.results import HEAD_LABELS, head_sort_key, run_key
from normscape.smoothness import derived, read_smoothness_h5
from normscape.spectrum import read_spectrum_h5, spectral_density

SMOOTHNESS_PANELS = (
    ("loss_range", "loss range along the step"),
    ("grad_change", "‖∇L(θ+u) − ∇L(θ)‖ (gradient change)"),
    ("beta", "effective β-smoothness"),
)


def _label(head: str, mode: str = "eval") -> str:
    name = HEAD_LABELS.get(head, head)
    return f"{name} (train mode: batch statistics)" if mode == "train" else name


def _finish(fig, drawn: dict, pdf, png):
    """Save and return what was drawn; ``pdf=None``: return the figure unsaved (plots.FIGURES saves it)."""
    if pdf is None:
        return fig
    save(fig, pdf, png)
    return drawn


def _nothing_measured(title: str, pdf, png):
    """The figure of a study whose every run diverged (or was not measured): one panel that says so."""
    fig, ax = plt.subplots(figsize=(7, 2.5))
    ax.axis("off")
    ax.text(0.5, 0.5, f"{title}:\nno run has numbers (every run diverged)", ha="center", va="center")
    return _finish(fig, {}, pdf, png)


def _measured(path) -> bool:
    """False for the files of a diverged run (no numbers: the curvature rule records only the reason)."""
    import h5py

    if str(path).endswith(".json"):
        return "eval" in read_adaptive_sharpness(path)
    with h5py.File(path, "r") as f:
        return len(f.keys()) > 0 and ("step" not in f or len(f["step"]) > 0)


def _by_head(paths: list) -> dict[str, list]:
    out = defaultdict(list)
    for path in filter(_measured, paths):
        out[run_key(path)["head"]].append(path)
    return dict(sorted(out.items(), key=lambda kv: head_sort_key(kv[0])))


def plot_smoothness(smoothness_paths: list, pdf, png) -> dict:
    """Top: per probe step, the median over seeds (line) and min-max over seeds (band), log scale.
    Bottom: distribution over all probe steps and seeds per head (box: quartiles, whiskers 5-95 %)."""
    heads = _by_head(smoothness_paths)
    if not heads:
        return _nothing_measured("Smoothness along the training trajectory", pdf, png)
    fig, axes = plt.subplots(2, 3, figsize=(11, 6), gridspec_kw={"height_ratios": [3, 2]})
    drawn = {}
    for col, (key, title) in enumerate(SMOOTHNESS_PANELS):
        ax, box = axes[0, col], axes[1, col]
        pooled, labels, colours, values_drawn = [], [], [], []
        for head, paths in heads.items():
            runs = [read_smoothness_h5(p) for p in paths]
            steps = runs[0]["step"]
            values = [derived(r)[key] for r in runs if np.array_equal(r["step"], steps)]
            stack = np.vstack(values)
            colour = PALETTE.get(head, None)
            drawn[(key, head)] = np.nanmedian(stack, 0) if stack.size else stack
            values_drawn.append(stack)
            ax.plot(steps, drawn[(key, head)], color=colour, label=_label(head), lw=1.2)
            ax.fill_between(steps, np.nanmin(stack, 0), np.nanmax(stack, 0), color=colour, alpha=0.2, lw=0)
            flat = np.concatenate([derived(r)[key] for r in runs])
            pooled.append(flat[np.isfinite(flat) & (flat > 0)])
            labels.append(HEAD_LABELS.get(head, head))
            colours.append(colour)
        nothing = "no positive finite value: every probe step diverged or did not move"
        log_scale(ax, "y", [v.ravel() for v in values_drawn], nothing)
        ax.set_xlabel("training step")
        ax.set_title(title)
        if any(p.size for p in pooled):
            parts = box.boxplot(pooled, whis=(5, 95), showfliers=False, patch_artist=True)
            for patch, colour in zip(parts["boxes"], colours):
                patch.set_facecolor(colour or "grey")
                patch.set_alpha(0.5)
            box.set_xticks(range(1, len(labels) + 1), labels, rotation=30, ha="right")
            log_scale(box, "y", np.concatenate(pooled))
        else:
            box.axis("off")
    axes[0, 0].legend(frameon=False)
    fig.suptitle("Smoothness along the training trajectory (steps along the optimiser's update)")
    fig.tight_layout()
    return _finish(fig, drawn, pdf, png)


def robust_eigenvalue_range(nodes_by_head: dict[str, np.ndarray], quantile: float = 0.01) -> tuple[float, float]:
    """The x range of the density figure: the ``quantile`` .. 1 - ``quantile`` range of the SLQ nodes (every
    head weighted equally, so one head's many nodes do not decide), widened by half its width on each side and
    never beyond the nodes. A few far outliers (fixed-eps FRN's negative eigenvalues down to -280 among a bulk in
    -15..20) fall outside it and are named in the figure instead of stretching the axis."""
    values = np.concatenate([v.ravel() for v in nodes_by_head.values()])
    weights = np.concatenate([np.full(v.size, 1.0 / v.size) for v in nodes_by_head.values()])
    order = np.argsort(values)
    values, cumulative = values[order], np.cumsum(weights[order]) / weights.sum()
    q_lo = values[np.searchsorted(cumulative, quantile)]
    q_hi = values[min(np.searchsorted(cumulative, 1 - quantile), len(values) - 1)]
    width = max(q_hi - q_lo, 1e-9 * max(abs(q_lo), abs(q_hi), 1.0))
    return float(max(values[0], q_lo - width / 2)), float(min(values[-1], q_hi + width / 2))


def plot_spectrum_density(spectrum_paths: list, pdf, png, sigma_fraction: float = 0.01, points: int = 2000) -> dict:
    """SLQ eigenvalue density per head (mean over seeds), log scale, one panel per head on shared axes (so every
    head is visible however close their spectra are); the x range is robust (:func:`robust_eigenvalue_range`) and
    the Gaussian width ``sigma_fraction`` of it. Eigenvalues beyond the range are listed in their head's panel."""
    data = {head: [read_spectrum_h5(p) for p in paths] for head, paths in _by_head(spectrum_paths).items()}
    if not data:
        return _nothing_measured("Hessian eigenvalue density", pdf, png)
    nodes = {head: np.concatenate([r[m]["nodes"].ravel() for r in runs for m in r]) for head, runs in data.items()}
    lo, hi = robust_eigenvalue_range(nodes)
    pad = 0.05 * max(hi - lo, 1e-9)
    grid = np.linspace(lo - pad, hi + pad, points)
    sigma = sigma_fraction * max(hi - lo, 1e-9)
    fig, axes = plt.subplots(
        len(data),
        1,
        figsize=(7, 1.0 + 1.25 * len(data)),
        sharex=True,
        sharey=True,
        squeeze=False,
        layout="constrained",
    )
    drawn = {"grid": grid}
    for ax, (head, runs) in zip(axes[:, 0], data.items()):
        for mode in ("eval", "train"):
            if mode not in runs[0] or (mode == "train" and head != "batch"):
                continue  # other heads: train mode is the same function as eval mode
            dens = np.mean([spectral_density(r[mode]["nodes"], r[mode]["weights"], grid, sigma) for r in runs], 0)
            drawn[(head, mode)] = dens
            ax.semilogy(
                grid,
                dens + 1e-12,
                color=PALETTE.get(head),
                ls="--" if mode == "train" else "-",
                label=_label(head, mode),
            )
        outside = nodes[head][(nodes[head] < grid[0]) | (nodes[head] > grid[-1])]
        if outside.size:
            ax.text(
                0.99,
                0.92,
                f"{outside.size} SLQ node(s) off axis: {outside.min():.3g} … {outside.max():.3g}",
                transform=ax.transAxes,
                ha="right",
                va="top",
                fontsize=7,
                color="tab:red",
            )
        ax.legend(loc="upper left", frameon=False, fontsize=7)
        ax.axvline(0, color="k", lw=0.4, ls=":")
        ax.set_ylabel("density")
    axes[0, 0].set_ylim(bottom=1e-6)
    axes[-1, 0].set_xlabel("eigenvalue of the training-loss Hessian")
    fig.suptitle(
        "Hessian eigenvalue density (stochastic Lanczos quadrature, log scale; "
        f"Gaussian width {sigma:.2g} = {sigma_fraction:g} of the x range)"
    )
    return _finish(fig, drawn, pdf, png)


def plot_adaptive_sharpness(paths: list, pdf, png) -> dict:
    """Average- and worst-case adaptive sharpness vs radius: mean over seeds, error bars one std."""
    by_head = _by_head(paths)
    if not by_head:
        return _nothing_measured("Adaptive sharpness", pdf, png)
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.6), sharex=True)
    drawn = {}
    for head, files in by_head.items():
        runs = [read_adaptive_sharpness(p) for p in files]
        for mode in ("eval", "train"):
            if mode not in runs[0]:
                continue
            for ax, key in zip(axes, ("average", "worst")):
                radii = sorted(runs[0][mode][key], key=float)
                values = np.array([[r[mode][key][rho] for rho in radii] for r in runs], dtype=float)
                std = values.std(0, ddof=1) if len(runs) > 1 else None
                drawn[(head, mode, key)] = values.mean(0)
                ax.errorbar(
                    [float(r) for r in radii],
                    values.mean(0),
                    yerr=std,
                    color=PALETTE.get(head),
                    ls="--" if mode == "train" else "-",
                    marker="o",
                    ms=3,
                    capsize=2,
                    label=_label(head, mode),
                )
    first = read_adaptive_sharpness(next(iter(by_head.values()))[0])
    ball = "ℓ∞" if first["eval"]["ball"] == "linf" else "ℓ2"
    for ax, key in zip(axes, ("average", "worst")):
        ax.set_xscale("log")
        # the average case can be negative (first-order term, noise): a symmetric log scale keeps every head
        ax.set_yscale("log" if key == "worst" else "symlog", **({} if key == "worst" else {"linthresh": 1e-4}))
        ax.set_xlabel(f"radius ρ ({ball} ball, relative to |θ|)")
        ax.set_title(f"{key}-case adaptive sharpness")
    axes[0].set_ylabel("loss increase")
    axes[1].legend(frameon=False, fontsize=7)
    fig.tight_layout()
    return _finish(fig, drawn, pdf, png)
