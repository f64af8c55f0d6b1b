"""The drawing kit every figure shares: pyplot (Agg, our rcParams, imported on first use), the palette, saving,
log axes, the legend's place, which run of each norm a one-seed figure shows, and titles from the config.

Titles name the experiment and its learning rate from the config (``settings["conditions"]``), never a default
written here. Every figure is written as PDF (vector) and PNG (300 dpi), atomically.
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import numpy as np

from normscape.figures.axes import (
    panel_note,
)
from normscape.models.norms import LazyModule
from normscape.reporting.run_files import (
    norm_sort_key,
    run_key,
)

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


def place_legend(fig: plt.Figure, ax) -> None:
    """The legend below the panels, outside every data area."""
    handles, labels = ax.get_legend_handles_labels()
    if handles:
        ncol = len(labels) if len(labels) <= 5 else -(-len(labels) // 2)
        fig.legend(handles, labels, loc="outside lower center", ncol=ncol, frameon=False)


def first_seed(paths: list[str], group: str = "head") -> dict[str, str]:
    """The lowest-seed file for each value of ``group`` (heads in the usual order)."""
    chosen: dict[str, str] = {}
    for path in sorted(paths, key=lambda p: run_key(p)["seed"]):
        chosen.setdefault(run_key(path)[group], path)
    return dict(sorted(chosen.items(), key=lambda kv: norm_sort_key(kv[0])))


def joined(*parts: str) -> str:
    return ", ".join(p for p in parts if p)


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
