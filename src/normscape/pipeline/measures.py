"""The registry of per-run measures (one entry each, like the norms): which file holds a measure, which rule
writes it, where it lives (a run's training directory or its landscape directory) and which runs get it.

The rules (outputs and targets), the claims rule (its ``measure_paths``) and the figure specs (their input
files) read this table, so adding a measure is one entry here plus its rule. Cheap to import: the workflow
reads it while parsing.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Measure:
    """One per-run measure file.

    ``name``: the column prefix in the claims' run table; ``file``: its summary file; ``files``: every file the
    rule writes for it; ``location``: "run" (runs/<run>/) or "landscape" (landscapes/<run>/); ``rule``: the rule
    that writes it; ``config``: the dotted path of its config slice (None: always on with its rule)."""

    name: str
    file: str
    files: tuple[str, ...]
    location: str
    rule: str
    config: str | None = None


MEASURES: dict[str, Measure] = {
    "sharpness": Measure("sharpness", "sharpness.json", ("sharpness.json",), "landscape", "sharpness"),
    # curvature at the experiment's common training-loss level (normscape.curvature.matched_loss)
    "matched": Measure("matched", "matched_sharpness.json", ("matched_sharpness.json",), "landscape", "matched"),
    "spectrum": Measure(
        "spectrum", "spectrum.json", ("spectrum.h5", "spectrum.json"), "landscape", "curvature", "hessian.spectrum"
    ),
    "adaptive": Measure(
        "adaptive",
        "adaptive_sharpness.json",
        ("adaptive_sharpness.json",),
        "landscape",
        "curvature",
        "diagnostics.adaptive_sharpness",
    ),
    "smoothness": Measure(
        "smoothness", "smoothness.json", ("smoothness.h5", "smoothness.json"), "run", "train", "diagnostics.smoothness"
    ),
    # Adam's preconditioned sharpness along training (normscape.curvature.edge_of_stability)
    "preconditioned_sharpness": Measure(
        "preconditioned_sharpness",
        "preconditioned_sharpness.json",
        ("preconditioned_sharpness.h5", "preconditioned_sharpness.json"),
        "run",
        "train",
        "diagnostics.preconditioned_sharpness",
    ),
}
# The landscape's own file (not a measure the claims read, but figures locate it the same way).
LANDSCAPE_FILES = {"landscape.h5"}


def location_of(filename: str) -> str:
    """ "landscape" for a file of a run's landscape directory, "run" for its training directory."""
    if filename in LANDSCAPE_FILES:
        return "landscape"
    for measure in MEASURES.values():
        if filename in measure.files:
            return measure.location
    return "run"


def measure_of(filename: str) -> Measure | None:
    return next((m for m in MEASURES.values() if filename in m.files), None)


def settings_of(config: dict, path: str) -> dict:
    """The config slice at a dotted ``path`` (e.g. "hessian.spectrum")."""
    for key in path.split("."):
        config = config[key]
    return config


def enabled(measure: Measure, config: dict) -> bool:
    return measure.config is None or bool(settings_of(config, measure.config)["enabled"])


def measured_experiments(filename: str, config: dict) -> list[str]:
    """The experiments whose runs have ``filename`` computed (empty when its measure is disabled)."""
    measure = measure_of(filename)
    if measure is not None and not enabled(measure, config):
        return []
    if measure is not None and measure.rule == "train":  # a probe of the runs its slice names
        return list(settings_of(config, measure.config)["experiments"])
    if location_of(filename) == "landscape":
        return list(config["landscape"]["experiments"])
    return list(config["experiments"])


def training_probes() -> list[Measure]:
    """The measures taken by probes inside the train rule (each a ``diagnostics.<name>`` slice)."""
    return [m for m in MEASURES.values() if m.rule == "train"]


def curvature_enabled(config: dict) -> bool:
    """The curvature rule runs when any of its measures is enabled."""
    return any(enabled(m, config) for m in MEASURES.values() if m.rule == "curvature")
