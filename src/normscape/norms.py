"""The norm registry: every normalisation layer a head can use, and everything the pipeline knows about it.

One :class:`NormSpec` per name (timm-style factory): how to build the module for ``(N, hidden)`` activations,
its display label and colour in figures and tables, and which exact fast rule
:class:`normscape.planeeval.PlaneEvaluator` uses for it. Training needs nothing more: every norm trains through
the same torch code (normscape.train, normscape.stacked), the module itself under ``torch.vmap``. The config
schema's allowed head names, the figure labels and the palette are all read from :data:`NORMS`; nothing else
lists norm names.

Adding a norm = one :func:`register` call below (plus its test). Without a ``plane_rule`` its landscapes are
computed exactly by the per-point loop evaluator (slower; the landscape log says so).

Plane rules (see planeeval.py): ``identity`` (no norm), ``running_affine`` (eval BatchNorm: an affine map per
unit), ``moments`` (mean/variance over groups of hidden units: LayerNorm = 1 group, GroupNorm), ``frn``
(elementwise FilterResponseNorm + TLU).
"""

from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Callable
from typing import Any


class LazyModule:
    """A module imported on first attribute access: Snakemake reads this registry (names, labels, colours) every
    time it parses the workflow, and importing torch there would cost seconds per `snakemake` call."""

    def __init__(self, name: str):
        self._name = name

    def __getattr__(self, attr: str) -> Any:
        return getattr(importlib.import_module(self._name), attr)


nn = LazyModule("torch.nn")
frn = LazyModule("normscape.frn")

PLANE_RULES = ("identity", "running_affine", "moments", "frn")
GROUPNORM_GROUPS = 32


@dataclasses.dataclass(frozen=True)
class NormSpec:
    name: str
    build: Callable[[int], Any]  # num_features -> torch module for (N, num_features) inputs
    label: str  # legend / title text
    colour: str  # matplotlib colour of its curves
    plane_rule: str | None = None  # one of PLANE_RULES, or None: landscapes via the per-point loop
    variant_of: str | None = None  # the norm this one modifies (the claims table compares the two)


NORMS: dict[str, NormSpec] = {}


def register(spec: NormSpec) -> NormSpec:
    if spec.name in NORMS:
        raise ValueError(f"norm {spec.name!r} is registered twice")
    if spec.plane_rule is not None and spec.plane_rule not in PLANE_RULES:
        raise ValueError(f"norm {spec.name!r}: unknown plane rule {spec.plane_rule!r}; use one of {PLANE_RULES}")
    NORMS[spec.name] = spec
    return spec


def group_count(channels: int, preferred: int = GROUPNORM_GROUPS) -> int:
    """The largest divisor of ``channels`` that is <= ``preferred``."""
    return max(g for g in range(1, min(preferred, channels) + 1) if channels % g == 0)


def norm_names() -> list[str]:
    return list(NORMS)


def get_norm(name: str) -> NormSpec:
    try:
        return NORMS[name]
    except KeyError:
        raise ValueError(
            f"unknown head (norm) {name!r}; choose one of {norm_names()} (registered in normscape/norms.py)"
        ) from None


def make_norm(name: str, num_features: int):
    """The normalisation layer called ``name`` for (N, num_features) activations."""
    return get_norm(name).build(num_features)


def label(name: str) -> str:
    return NORMS[name].label if name in NORMS else name


def colour(name: str) -> str | None:
    return NORMS[name].colour if name in NORMS else None


# ------------------------------------------------------------------------------------------------ the entries
register(NormSpec("none", lambda c: nn.Identity(), "Baseline (no norm)", "#4d4d4d", "identity"))
register(NormSpec("batch", lambda c: nn.BatchNorm1d(c), "BatchNorm", "#1f77b4", "running_affine"))
register(NormSpec("layer", lambda c: nn.LayerNorm(c), "LayerNorm", "#d62728", "moments"))
register(NormSpec("group", lambda c: nn.GroupNorm(group_count(c), c), "GroupNorm", "#9467bd", "moments"))
register(NormSpec("frn", lambda c: frn.FilterResponseNorm(c), "FRN", "#2ca02c", "frn"))
register(
    NormSpec(
        "frn_learned_eps",
        lambda c: frn.FilterResponseNorm(c, learnable_eps=True),
        "FRN (learned eps)",
        "#ff7f0e",
        "frn",
        variant_of="frn",
    )
)
# RMSNorm (Zhang & Sennrich 2019; torch.nn.RMSNorm): x / sqrt(mean(x^2) + eps) * gamma. No fast plane rule: its
# landscapes take the generic per-point path.
register(NormSpec("rms", lambda c: nn.RMSNorm(c), "RMSNorm", "#8c564b"))
