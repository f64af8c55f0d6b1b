"""The figure registry: every figure the workflow draws (:data:`FIGURES`), the run files it reads and how.

Each :class:`FigureSpec` names its inputs (kind -> experiment, run file, norms), its report category and its
drawing; the figure rules (workflow/rules/figures.smk) are generated from it, and :func:`draw` / :func:`render`
draw one by name. The drawings live by kind: curves in :mod:`normscape.figures.curves`, gradient heatmaps in
:mod:`normscape.figures.gradients`, landscapes in :mod:`normscape.figures.landscape`, diagnostics in
:mod:`normscape.figures.diagnostics`, the edge of stability in :mod:`normscape.figures.stability` (imported when
one of their figures is drawn); what they share in :mod:`normscape.figures.style`.
"""

from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Callable
from pathlib import Path

from normscape.figures.curves import batch_size_figure, clipping_figure, curves_figure
from normscape.figures.style import (
    clipping_label,
    condition_text,
    epochs_text,
    experiment_title,
    joined,
    plt,
    save,
)
from normscape.reporting.run_files import (
    variant_value,
)


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
    # config slice named by ``settings``) -> figure
    draw: Callable[[dict[str, list[str]], dict], plt.Figure]
    # the dotted path of the config slice the drawing reads (merged into the figure rule's settings), if any
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
CLIPPING_NORMS = ["batch", "frn", "none"]
CONVERGENCE_LANDSCAPES = {"landscapes": [("convergence", "landscape.h5", None)]}


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
                ("convergence", "metrics.csv", CLIPPING_NORMS),
                ("clipping", "metrics.csv", CLIPPING_NORMS),
            ]
        },
        lambda i, s: clipping_figure(
            i["metrics"],
            CLIPPING_NORMS,
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
        settings="hessian.spectrum",
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
