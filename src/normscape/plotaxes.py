"""Axis scales of the figures: limits that fit the heads that learn, round ticks, and words for what is left out.

A run that died (loss flat at ln C, accuracy at chance) or diverged sits far from the working heads; letting it
set the axis squashes the differences the figure exists to show. :func:`fit_limits` keeps such a curve off the
axis and :func:`mark_off_axis` says in the panel where it is. Ticks are round numbers (1-2-5 or finer on a log
axis, MaxNLocator on a linear one), so a reader never has to interpolate between 0.721 and 1.08.
"""

from __future__ import annotations

import dataclasses
import re

import numpy as np

from normscape.norms import LazyModule

ticker = LazyModule("matplotlib.ticker")

# log-axis tick mantissas, coarsest first: the first that labels a few ticks in the range is used
LOG_SUBS = ((1.0,), (1.0, 2.0, 5.0), (1.0, 2.0, 3.0, 5.0, 7.0), tuple(float(i) for i in range(1, 10)))


@dataclasses.dataclass
class Limits:
    """The axis range that fits the kept curves, and the curves left off it (label -> their finite values)."""

    lo: float
    hi: float
    off_axis: dict[str, np.ndarray]


def _finite(values) -> np.ndarray:
    v = np.asarray(values, dtype=float).ravel()
    return v[np.isfinite(v)]


def fit_limits(curves: dict[str, np.ndarray], margin: float = 0.06) -> Limits | None:
    """A range for the curves that learn: a curve whose values all lie outside the others' range, farther from
    it than that range is wide (a dead run's flat ln 10 among losses of 0.7-1.3, a dead head's chance accuracy
    among 75 %), is left off and returned in ``off_axis``. At least one curve is always kept; None if no curve
    has a finite value (every run diverged)."""
    finite = {k: _finite(v) for k, v in curves.items()}
    finite = {k: v for k, v in finite.items() if v.size}
    if not finite:
        return None
    kept, off = dict(finite), {}
    while len(kept) > 1:
        # only the curve with the lowest minimum or the highest maximum can lie apart from all the others
        candidates = {min(kept, key=lambda k: kept[k].min()), max(kept, key=lambda k: kept[k].max())}
        removed = False
        for key in candidates:
            rest = np.concatenate([v for k, v in kept.items() if k != key])
            lo, hi = rest.min(), rest.max()
            width = max(hi - lo, 1e-12 * max(abs(lo), abs(hi), 1.0))
            v = kept[key]
            gap = max(lo - v.max(), v.min() - hi)
            if gap > width:
                off[key] = kept.pop(key)
                removed = True
                break
        if not removed:
            break
    values = np.concatenate(list(kept.values()))
    lo, hi = float(values.min()), float(values.max())
    pad = margin * (hi - lo) if hi > lo else max(abs(hi) * 0.05, 1e-3)
    return Limits(lo - pad, hi + pad, off)


def describe_values(values: np.ndarray) -> str:
    """'2.30 throughout' for a flat curve, else '0.10-0.12'."""
    lo, hi = float(np.min(values)), float(np.max(values))
    if hi - lo <= 0.01 * max(abs(hi), abs(lo), 1e-12):
        return f"{lo:.3g} throughout"
    return f"{lo:.3g}–{hi:.3g}"


def mark_off_axis(ax, limits: Limits, what: str = "did not learn") -> None:
    """Say in the panel which curves are off the axis, where (above / below) and at what values."""
    lines = []
    for label, values in limits.off_axis.items():
        arrow = "↑ above" if np.min(values) > limits.hi else "↓ below"
        lines.append(f"{arrow} the axis: {label} at {describe_values(values)} ({what})")
    if lines:
        ax.text(
            0.02,
            0.02,
            "\n".join(lines),
            transform=ax.transAxes,
            ha="left",
            va="bottom",
            fontsize=6.5,
            color="tab:red",
            bbox={"facecolor": "white", "alpha": 0.85, "lw": 0},
            zorder=10,
        )


def apply_limits(ax, limits: Limits | None, axis: str = "y", what: str = "did not learn") -> None:
    """Set ``axis`` of ``ax`` to ``limits`` (nothing if None) and name the curves left off."""
    if limits is None:
        return
    (ax.set_ylim if axis == "y" else ax.set_xlim)(limits.lo, limits.hi)
    mark_off_axis(ax, limits, what)


def legend_label(name: str, n: int | None = None) -> str:
    """'Baseline (no norm)' with n=5 -> 'Baseline, no norm (n=5)': one pair of parentheses, never two."""
    if n is None:
        return name
    flat = re.sub(r"\s*\(([^()]*)\)$", r", \1", name)
    return f"{flat} (n={n})"


def round_log_ticks(lo: float, hi: float, minimum: int = 3) -> tuple[np.ndarray, float, float]:
    """Round tick values for a log axis over [lo, hi] (both > 0): the coarsest mantissa sequence (decades, 1-2-5,
    ...) with at least ``minimum`` ticks inside the range, and limits widened to its values next outside, so
    the lowest and highest data lie between labelled ticks: (ticks, lo, hi)."""
    lo, hi = float(lo), float(hi)
    if not (np.isfinite(lo) and np.isfinite(hi)) or lo <= 0 or hi <= 0:
        raise ValueError(f"a log axis needs positive finite limits, got {lo}, {hi}")
    hi = max(hi, lo * 1.0001)
    for subs in LOG_SUBS:
        decades = np.arange(np.floor(np.log10(lo)) - 1, np.ceil(np.log10(hi)) + 2)
        candidates = np.sort(np.array([s * 10.0**d for d in decades for s in subs]))
        inside = candidates[(candidates >= lo) & (candidates <= hi)]
        if len(inside) >= minimum or subs == LOG_SUBS[-1]:
            below, above = candidates[candidates <= lo], candidates[candidates >= hi]
            new_lo, new_hi = float(below[-1]), float(above[0])
            ticks = candidates[(candidates >= new_lo * 0.9999) & (candidates <= new_hi * 1.0001)]
            return ticks, new_lo, new_hi
    raise AssertionError("unreachable")


def set_round_log_axis(ax, axis: str, lo: float, hi: float) -> None:
    """Log scale on ``axis`` with round labelled ticks around [lo, hi] (see :func:`round_log_ticks`)."""
    ticks, new_lo, new_hi = round_log_ticks(lo, hi)
    target = ax.yaxis if axis == "y" else ax.xaxis
    (ax.set_yscale if axis == "y" else ax.set_xscale)("log")
    (ax.set_ylim if axis == "y" else ax.set_xlim)(new_lo, new_hi)
    target.set_major_locator(ticker.FixedLocator(ticks))
    target.set_major_formatter(ticker.FuncFormatter(lambda v, _: f"{v:g}"))
    target.set_minor_locator(ticker.NullLocator())


def colorbar_ticks(lo: float, hi: float, log: bool) -> np.ndarray:
    """Round ticks inside [lo, hi] for a colour bar: 1-2-5 (or finer) on a log scale, MaxNLocator's on a linear
    one."""
    if log:
        for subs in LOG_SUBS:
            decades = np.arange(np.floor(np.log10(lo)) - 1, np.ceil(np.log10(hi)) + 2)
            candidates = np.sort(np.array([s * 10.0**d for d in decades for s in subs]))
            ticks = candidates[(candidates >= lo * 0.9999) & (candidates <= hi * 1.0001)]
            if len(ticks) >= 3:
                return ticks[:: int(np.ceil(len(ticks) / 8))]
        # a range narrower than 1..2..3..5..7 steps (a flat landscape): round linear ticks
    ticks = ticker.MaxNLocator(nbins=5).tick_values(lo, hi)
    return ticks[(ticks >= lo - 1e-9 * abs(hi)) & (ticks <= hi + 1e-9 * abs(hi))]
