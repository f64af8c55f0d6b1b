"""Figures of the optimisation diagnostics: smoothness along training, Hessian spectral density, adaptive sharpness.

Each function takes the per-run files the measures write (``smoothness.h5``, ``spectrum.h5``,
``adaptive_sharpness.json``; runs identified from their paths, as every figure of :mod:`normscape.figures.registry`) and
writes a PDF and a 300-dpi PNG. BatchNorm's train-mode numbers (batch statistics) are drawn dashed and labelled
"train mode" wherever they appear, next to the eval-mode (running statistics) ones.
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np

from normscape.curvature.adaptive_sharpness import read_adaptive_sharpness
from normscape.curvature.smoothness import derived, read_smoothness_h5
from normscape.curvature.spectrum import read_spectrum_h5, spectral_density
from normscape.figures.axes import set_round_log_axis
from normscape.figures.style import log_scale, plt, save
from normscape.models.norms import NORM_COLOURS, NORM_LABELS
from normscape.reporting.run_files import norm_sort_key, run_key

# (measure, panel title, y label with units: the loss is cross-entropy in nats, θ the head's parameters)
SMOOTHNESS_PANELS = (
    ("loss_range", "loss range along the step", "max − min loss (nats)"),
    ("grad_change", "‖∇L(θ+u) − ∇L(θ)‖ (gradient change)", "‖Δ∇L‖ (nats per unit of θ)"),
    ("beta", "effective β-smoothness: max ‖Δ∇L‖ / ‖Δθ‖", "β (nats per unit of θ²)"),
)


def _label(head: str, mode: str = "eval") -> str:
    name = NORM_LABELS.get(head, head)
    return f"{name} (train mode: batch statistics)" if mode == "train" else name


def _finish(fig, drawn: dict, pdf, png):
    """Save and return what was drawn; ``pdf=None``: return the figure unsaved (the figure rule saves it)."""
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
    return dict(sorted(out.items(), key=lambda kv: norm_sort_key(kv[0])))


def plot_smoothness(smoothness_paths: list, pdf, png, title: str = "") -> dict:
    """Top: per probe step, the median over seeds (line) and min-max over seeds (band), log scale.
    Bottom: distribution over all probe steps and seeds per head (box: quartiles, whiskers 5-95 %)."""
    heads = _by_head(smoothness_paths)
    if not heads:
        return _nothing_measured("Smoothness along the training trajectory", pdf, png)
    fig, axes = plt.subplots(2, 3, figsize=(11, 6.6), gridspec_kw={"height_ratios": [3, 2]}, layout="constrained")
    drawn = {}
    for col, (key, panel_title, unit_label) in enumerate(SMOOTHNESS_PANELS):
        ax, box = axes[0, col], axes[1, col]
        pooled, labels, colours, values_drawn = [], [], [], []
        for head, paths in heads.items():
            runs = [read_smoothness_h5(p) for p in paths]
            steps = runs[0]["step"]
            values = [derived(r)[key] for r in runs if np.array_equal(r["step"], steps)]
            stack = np.vstack(values)
            colour = NORM_COLOURS.get(head, None)
            drawn[(key, head)] = np.nanmedian(stack, 0) if stack.size else stack
            values_drawn.append(stack)
            ax.plot(steps, drawn[(key, head)], color=colour, label=_label(head), lw=1.2)
            ax.fill_between(steps, np.nanmin(stack, 0), np.nanmax(stack, 0), color=colour, alpha=0.2, lw=0)
            flat = np.concatenate([derived(r)[key] for r in runs])
            pooled.append(flat[np.isfinite(flat) & (flat > 0)])
            labels.append(NORM_LABELS.get(head, head))
            colours.append(colour)
        nothing = "no positive finite value: every probe step diverged or did not move"
        log_scale(ax, "y", [v.ravel() for v in values_drawn], nothing)
        ax.set_xlabel("training step")
        ax.set_ylabel(unit_label)
        ax.set_title(panel_title)
        if any(p.size for p in pooled):
            parts = box.boxplot(
                pooled, whis=(5, 95), showfliers=False, patch_artist=True, medianprops={"color": "black"}
            )
            for patch, colour in zip(parts["boxes"], colours):
                patch.set_facecolor(colour or "grey")
                patch.set_alpha(0.5)
            box.set_xticks(range(1, len(labels) + 1), labels, rotation=30, ha="right")
            log_scale(box, "y", np.concatenate(pooled))
            box.set_ylabel(unit_label)
        else:
            box.axis("off")
    handles, labels = axes[0, 0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncol=min(len(labels), 5), frameon=False)
    what = (
        "smoothness along the training trajectory (steps along the optimiser's update)\n"
        "top: median over seeds per probe step, band min–max; bottom: all probe steps and seeds (box 25–75 %, "
        "whiskers 5–95 %)"
    )
    fig.suptitle(f"{title}: {what}" if title else what)
    return _finish(fig, drawn, pdf, png)


def robust_eigenvalue_range(nodes_by_head: dict[str, np.ndarray], core: float = 0.1) -> tuple[float, float]:
    """The x range of the density figure. Each isolated eigenvalue captures about one Lanczos node per run, so a
    head's few far outliers (fixed-eps FRN's negative eigenvalues down to -280 among a bulk in -15..20) hold a
    fixed share of its nodes that any quantile of the pooled nodes may reach. Instead: the core of each head's
    nodes (its ``core`` .. 1 - ``core`` quantiles), united over heads and widened by the core's width on each
    side; the range is that of the nodes inside. Nodes outside are named in the figure."""
    cores = np.array([np.quantile(v, [core, 1 - core]) for v in nodes_by_head.values()])
    lo, hi = cores[:, 0].min(), cores[:, 1].max()
    width = max(hi - lo, 1e-9 * max(abs(lo), abs(hi), 1.0))
    values = np.concatenate([v.ravel() for v in nodes_by_head.values()])
    inside = values[(values >= lo - width) & (values <= hi + width)]
    return float(inside.min()), float(inside.max())


DENSITY_FLOOR = 1e-6  # the density figure's lowest y value


def off_axis_nodes(nodes: np.ndarray, lo: float, hi: float) -> str:
    """The Lanczos nodes beyond [lo, hi] in words: '← 3 eigenvalue nodes at -280 … -31'."""
    parts = []
    for arrow, beyond in (("←", nodes[nodes < lo]), ("→", nodes[nodes > hi])):
        if beyond.size:
            lo_text, hi_text = f"{beyond.min():.3g}", f"{beyond.max():.3g}"
            where = lo_text if lo_text == hi_text else f"{lo_text} … {hi_text}"
            parts.append(f"{arrow} {beyond.size} eigenvalue node(s) off the axis at {where}")
    return "\n".join(parts)


def plot_spectrum_density(
    spectrum_paths: list, pdf, png, sigma_fraction: float = 0.01, points: int = 2000, title: str = ""
) -> dict:
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
                color=NORM_COLOURS.get(head),
                ls="--" if mode == "train" else "-",
                label=_label(head, mode),
            )
        ax.legend(loc="upper right", frameon=False, fontsize=7)
        ax.axvline(0, color="k", lw=0.4, ls=":")
        ax.set_ylabel("density")
    axes[0, 0].set_ylim(bottom=DENSITY_FLOOR)
    # the x axis ends where every density has fallen below the floor drawn (nodes of negligible weight add none)
    visible = grid[np.any([d >= DENSITY_FLOOR for k, d in drawn.items() if k != "grid"], axis=0)]
    if visible.size:
        margin = 0.03 * max(visible[-1] - visible[0], 1e-9)
        axes[0, 0].set_xlim(visible[0] - margin, visible[-1] + margin)
    x_lo, x_hi = axes[0, 0].get_xlim()
    for ax, head in zip(axes[:, 0], data):
        off = off_axis_nodes(nodes[head], x_lo, x_hi)
        if off:
            ax.text(0.99, 0.45, off, transform=ax.transAxes, ha="right", va="top", fontsize=7, color="tab:red")
    axes[-1, 0].set_xlabel("eigenvalue of the training-loss Hessian")
    fig.suptitle(
        f"{title}{': ' if title else ''}Hessian eigenvalue density (stochastic Lanczos quadrature, log scale)\n"
        f"Gaussian width {sigma:.2g} ({sigma_fraction:g} of the x range); one panel per head, shared axes"
    )
    return _finish(fig, drawn, pdf, png)


def value_axis(ax, axis: str, values: np.ndarray) -> str:
    """The scale the values allow, set on ``axis``: log (round ticks) when all are positive; symmetric log when
    they take both signs over decades (the negative half then holds data); else linear. Returns its name."""
    v = np.asarray(values, dtype=float).ravel()
    v = v[np.isfinite(v)]
    if v.size and (v > 0).all():
        set_round_log_axis(ax, axis, v.min(), v.max())
        return "log"
    nonzero = np.abs(v[v != 0])
    if (v < 0).any() and (v > 0).any() and nonzero.max() / nonzero.min() > 100:
        linthresh = 10.0 ** np.floor(np.log10(np.percentile(nonzero, 10)))
        (ax.set_yscale if axis == "y" else ax.set_xscale)("symlog", linthresh=linthresh)
        return "symlog"
    return "linear"


def plot_adaptive_sharpness(paths: list, pdf, png, title: str = "") -> dict:
    """Average- and worst-case adaptive sharpness vs radius: mean over seeds, error bars one std. Each panel has
    its own x range (the two cases are measured at different radii) and the y scale its values allow."""
    by_head = _by_head(paths)
    if not by_head:
        return _nothing_measured("Adaptive sharpness", pdf, png)
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.8), layout="constrained")
    drawn = {}
    extents = {"average": [], "worst": []}  # every y drawn: the means and the error bars' ends
    radii_of = {"average": [], "worst": []}
    for head, files in by_head.items():
        runs = [read_adaptive_sharpness(p) for p in files]
        for mode in ("eval", "train"):
            if mode not in runs[0]:
                continue
            for ax, key in zip(axes, ("average", "worst")):
                radii = sorted(runs[0][mode][key], key=float)
                values = np.array([[r[mode][key][rho] for rho in radii] for r in runs], dtype=float)
                mean, std = values.mean(0), values.std(0, ddof=1) if len(runs) > 1 else None
                drawn[(head, mode, key)] = mean
                extents[key] += [mean] + ([mean - std, mean + std] if std is not None else [])
                radii_of[key] += [float(r) for r in radii]
                ax.errorbar(
                    [float(r) for r in radii],
                    mean,
                    yerr=std,
                    color=NORM_COLOURS.get(head),
                    ls="--" if mode == "train" else "-",
                    marker="o",
                    ms=3,
                    capsize=2,
                    label=_label(head, mode),
                )
    first = read_adaptive_sharpness(next(iter(by_head.values()))[0])
    ball = "ℓ∞" if first["eval"]["ball"] == "linf" else "ℓ2"
    for ax, key in zip(axes, ("average", "worst")):
        radii = np.array(radii_of[key])
        set_round_log_axis(ax, "x", radii.min(), radii.max(), pad=0.04)
        # an error bar reaching below zero takes the axis off log: a log axis would cut it off unseen
        value_axis(ax, "y", np.concatenate(extents[key]) if extents[key] else np.zeros(0))
        ax.set_xlabel(f"radius ρ ({ball} ball, relative to |θ|)")
        ax.set_ylabel("loss increase (nats)")
        ax.set_title(f"{key}-case adaptive sharpness")
        ax.grid(alpha=0.3)
    handles, labels = axes[0].get_legend_handles_labels()
    # long handles: the train-mode curves' dashes show between the error-bar markers
    fig.legend(handles, labels, loc="outside lower center", ncol=3, frameon=False, fontsize=7, handlelength=4)
    what = "adaptive sharpness of the trained heads (mean ± std over seeds)"
    fig.suptitle(f"{title}: {what}" if title else what)
    return _finish(fig, drawn, pdf, png)
