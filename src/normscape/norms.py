"""The norm registry: every normalisation layer a head can use, and everything the pipeline knows about it.

One :class:`NormSpec` per name (timm-style factory): how to build the module for ``(N, hidden)`` activations,
its display label and colour in figures and tables, and which exact fast rule the trainer's native step
(:class:`normscape.headstep.HeadStep`) uses for it. Landscapes need nothing here: every norm, registered or built
in, is evaluated by the same torch path (:class:`normscape.planeeval.PlaneEvaluator`), its module a black box.
The config schema's allowed head names, the figure labels and the palette are all read from :data:`NORMS`;
nothing else lists norm names.

Adding a norm = one :func:`register` call below (plus its test). Without a ``train_rule`` it trains through
torch's autograd (slower; the training log says so).

Train rules (see headstep.py): ``identity``, ``batch`` (BatchNorm in training mode, with its running
statistics), ``moments`` (LayerNorm = 1 group, GroupNorm), ``frn`` (FRN + TLU, fixed or learned eps).
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

TRAIN_RULES = ("identity", "batch", "moments", "frn")  # order = the native kernel's rule codes
GROUPNORM_GROUPS = 32


@dataclasses.dataclass(frozen=True)
class NormSpec:
    name: str
    build: Callable[[int], Any]  # num_features -> torch module for (N, num_features) inputs
    label: str  # legend / title text
    colour: str  # matplotlib colour of its curves
    train_rule: str | None = None  # one of TRAIN_RULES, or None: training steps via torch autograd
    variant_of: str | None = None  # the norm this one modifies (the claims table compares the two)


NORMS: dict[str, NormSpec] = {}


def register(spec: NormSpec) -> NormSpec:
    if spec.name in NORMS:
        raise ValueError(f"norm {spec.name!r} is registered twice")
    if spec.train_rule is not None and spec.train_rule not in TRAIN_RULES:
        raise ValueError(f"norm {spec.name!r}: unknown train rule {spec.train_rule!r}; use one of {TRAIN_RULES}")
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
register(NormSpec("none", lambda c: nn.Identity(), "Baseline (no norm)", "#4d4d4d", train_rule="identity"))
register(NormSpec("batch", lambda c: nn.BatchNorm1d(c), "BatchNorm", "#1f77b4", train_rule="batch"))
register(NormSpec("layer", lambda c: nn.LayerNorm(c), "LayerNorm", "#d62728", train_rule="moments"))
register(NormSpec("group", lambda c: nn.GroupNorm(group_count(c), c), "GroupNorm", "#9467bd", train_rule="moments"))
register(NormSpec("frn", lambda c: frn.FilterResponseNorm(c), "FRN", "#2ca02c", train_rule="frn"))
register(
    NormSpec(
        "frn_learned_eps",
        lambda c: frn.FilterResponseNorm(c, learnable_eps=True),
        "FRN (learned eps)",
        "#ff7f0e",
        train_rule="frn",
        variant_of="frn",
    )
)
# RMSNorm (Zhang & Sennrich 2019; torch.nn.RMSNorm): x / sqrt(mean(x^2) + eps) * gamma. No train rule: it shows
# the generic training path (autograd).
register(NormSpec("rms", lambda c: nn.RMSNorm(c), "RMSNorm", "#8c564b"))
