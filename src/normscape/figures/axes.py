"""Axis scales of the figures: limits that fit the heads that learn, round ticks, and words for what is left out.

A run that died (loss flat at ln C, accuracy at chance) or diverged sits far from the working heads; letting it
set the axis squashes the differences the figure exists to show. :func:`fit_limits` keeps such a curve off the
axis and :func:`mark_off_axis` says in the panel where it is. Ticks are round numbers (1-2-5 or finer on a log
axis, MaxNLocator on a linear one), so a reader never has to interpolate between 0.721 and 1.08.
"""

from __future__ import annotations

import dataclasses
import re
import textwrap

import numpy as np

from normscape.models.norms import LazyModule

ticker = LazyModule("matplotlib.ticker")

# log-axis tick mantissas, coarsest first: the first that labels a few ticks in the range is used
LOG_SUBS = ((1.0,), (1.0, 2.0, 5.0), (1.0, 2.0, 3.0, 5.0, 7.0), tuple(float(i) for i in range(1, 10)))


@dataclasses.dataclass
class Limits:
    """The axis range that fits the kept curves, and the curves left off it (label -> their finite values)."""

    lo: float
    hi: float
    off_axis: dict[str, np.ndarray]
    why: dict[str, str] = dataclasses.field(default_factory=dict)  # label -> why it is off the axis


def _finite(values) -> np.ndarray:
    v = np.asarray(values, dtype=float).ravel()
    return v[np.isfinite(v)]


def fit_limits(
    curves: dict[str, np.ndarray], margin: float = 0.06, dead: set[str] | frozenset = frozenset()
) -> Limits | None:
    """A range for the curves that learn. Left off (and returned in ``off_axis`` where they leave the range):
    the curves named in ``dead`` (runs that did not learn, see :func:`at_chance`), and any curve whose values
    all lie outside the others' range, farther from it than that range is wide (a run whose loss ran away).
    At least one curve is always kept; None if no curve has a finite value (every run diverged)."""
    finite = {k: _finite(v) for k, v in curves.items()}
    finite = {k: v for k, v in finite.items() if v.size}
    if not finite:
        return None
    kept = {k: v for k, v in finite.items() if k not in dead} or dict(finite)
    while len(kept) > 1:
        # only the curve with the lowest minimum or the highest maximum can lie apart from all the others
        candidates = {min(kept, key=lambda k: kept[k].min()), max(kept, key=lambda k: kept[k].max())}
        removed = False
        for key in candidates:
            rest = np.concatenate([v for k, v in kept.items() if k != key])
            lo, hi = rest.min(), rest.max()
            width = max(hi - lo, 1e-12 * max(abs(lo), abs(hi), 1.0))
            v = kept[key]
            if max(lo - v.max(), v.min() - hi) > width:
                kept.pop(key)
                removed = True
                break
        if not removed:
            break
    values = np.concatenate(list(kept.values()))
    lo, hi = float(values.min()), float(values.max())
    pad = margin * (hi - lo) if hi > lo else max(abs(hi) * 0.05, 1e-3)
    lo, hi = lo - pad, hi + pad
    off = {k: v for k, v in finite.items() if k not in kept and ((v < lo) | (v > hi)).any()}
    why = {k: "did not learn: chance level" if k in dead else "far from the other curves" for k in off}
    return Limits(lo, hi, off, why)


def at_chance(accuracy: np.ndarray, loss: np.ndarray, tolerance: float = 0.1) -> bool:
    """True for a run that did not learn: at every epoch its loss is that of a uniform guess over the classes,
    ln(1 / accuracy) within ``tolerance`` nats, at an accuracy below one half (a dead FRN: 0.10 and 2.30 = ln 10).
    A learning head's loss is far below ln(1 / accuracy); a perfect fit (accuracy 1, loss 0) is excluded by the
    accuracy bound."""
    acc, loss = np.asarray(accuracy, dtype=float), np.asarray(loss, dtype=float)
    ok = np.isfinite(acc) & np.isfinite(loss) & (acc > 0)
    if not ok.any():
        return False
    acc, loss = acc[ok], loss[ok]
    return bool(np.all(acc < 0.5) and np.all(np.abs(loss - np.log(1 / acc)) < tolerance))


def describe_values(values: np.ndarray) -> str:
    """'2.30 throughout' for a flat curve, else '0.10-0.12'."""
    lo, hi = float(np.min(values)), float(np.max(values))
    if hi - lo <= 0.01 * max(abs(hi), abs(lo), 1e-12):
        return f"{lo:.3g} throughout"
    return f"{lo:.3g}–{hi:.3g}"


def mark_off_axis(ax, limits: Limits) -> None:
    """Set the y range and say in the panel which curves are off it, where (above / below), at what values and
    why. The note sits at the edge its curve left by, in a band added to the range so it covers no data."""
    notes: dict[str, list[str]] = {"top": [], "bottom": []}
    for label, values in limits.off_axis.items():
        below = np.max(values) < limits.lo
        where = "↓ below the axis" if below else "↑ above the axis" if np.min(values) > limits.hi else "partly off"
        why = limits.why.get(label, "off scale")
        notes["bottom" if below else "top"].append(f"{where}: {label} at {describe_values(values)} ({why})")
    span = limits.hi - limits.lo
    lo = limits.lo - 0.09 * span * len(notes["bottom"])
    hi = limits.hi + 0.09 * span * len(notes["top"])
    ax.set_ylim(lo, hi)
    for edge, lines in notes.items():
        if lines:
            ax.text(
                0.02,
                0.985 if edge == "top" else 0.015,
                "\n".join(lines),
                transform=ax.transAxes,
                ha="left",
                va="top" if edge == "top" else "bottom",
                fontsize=6.5,
                color="tab:red",
                bbox={"facecolor": "white", "alpha": 0.85, "lw": 0, "pad": 1},
                zorder=10,
            )


def panel_note(ax, text: str, y: float = 0.5, va: str = "center", width: int | None = None, size: float = 8) -> None:
    """A red sentence centred in a panel (a run that died, diverged or has nothing to draw), on a white box so
    it stays readable over data; ``width`` wraps it to that many characters."""
    ax.text(
        0.5,
        y,
        textwrap.fill(text, width) if width else text,
        transform=ax.transAxes,
        ha="center",
        va=va,
        fontsize=size,
        color="tab:red",
        bbox={"facecolor": "white", "alpha": 0.85, "lw": 0},
    )


def apply_limits(ax, limits: Limits | None) -> None:
    """Fit the y axis of ``ax`` to ``limits`` (nothing if None) and name the curves left off."""
    if limits is not None:
        mark_off_axis(ax, limits)


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


def set_round_log_axis(ax, axis: str, lo: float, hi: float, pad: float = 0.0) -> None:
    """Log scale on ``axis`` with round labelled ticks around [lo, hi] (see :func:`round_log_ticks`); ``pad``
    widens the limits by that fraction of a decade (markers at the ends stay whole)."""
    ticks, new_lo, new_hi = round_log_ticks(lo, hi)
    new_lo, new_hi = new_lo / 10.0**pad, new_hi * 10.0**pad
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
