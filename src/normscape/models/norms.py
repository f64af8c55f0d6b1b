"""The norm registry: every normalisation layer a head can use, and everything the pipeline knows about it.

One :class:`NormSpec` per name (timm-style factory): how to build the module for ``(N, hidden)`` activations,
its display label and colour in figures and tables. Nothing about how it is computed: every norm, registered or
built in, trains (normscape.training.trainer, normscape.models.stacked_heads: the module under ``torch.vmap`` over a
condition's seeds) and gets its landscapes (normscape.landscape.plane_eval) through the same torch code, its module a
black box. The config schema's allowed head names, the figure labels and the palette are all read from :data:`NORMS`;
nothing else lists norm names.

Adding a norm = one :func:`register` call, here or in a plugin file (normscape.pipeline.plugins), plus its test.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import importlib
import importlib.metadata
import importlib.util
import inspect
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any


class LazyModule:
    """A module imported on first attribute access: Snakemake reads this registry (names, labels, colours) every
    time it parses the workflow, and importing torch there would cost seconds per `snakemake` call."""

    def __init__(self, name: str):
        self._name = name

    def __getattr__(self, attr: str) -> Any:
        return getattr(importlib.import_module(self._name), attr)


nn = LazyModule("torch.nn")
frn = LazyModule("normscape.models.frn")

GROUPNORM_GROUPS = 32


@dataclasses.dataclass(frozen=True)
class NormSpec:
    name: str
    build: Callable[[int], Any]  # num_features -> torch module for (N, num_features) inputs
    label: str  # legend / title text
    colour: str  # matplotlib colour of its curves
    modifies: str | None = None  # the norm this one modifies (the claims table compares the two)


NORMS: dict[str, NormSpec] = {}


def register(spec: NormSpec) -> NormSpec:
    if spec.name in NORMS:
        raise ValueError(f"norm {spec.name!r} is registered twice: choose a new name (taken: {', '.join(NORMS)})")
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
            f"unknown norm {name!r}; choose one of {norm_names()} (registered in normscape/models/norms.py)"
        ) from None


def make_norm(name: str, num_features: int):
    """The normalisation layer called ``name`` for (N, num_features) activations."""
    return get_norm(name).build(num_features)


# ------------------------------------------------------------------------------------------- code identity
# The code a head is built from is an input of every run that trains one, like its config: a run is never reused
# for a norm whose code changed since (docs/provenance.md). Read from source text, without importing torch (the
# workflow computes it for every train job while it parses).
HEAD_MODULE = "normscape.models.heads"  # the architecture around the norm: Linear -> norm -> ReLU -> Dropout -> Linear


@functools.cache
def code_digest(name: str) -> str:
    """sha256 (16 hex digits) of the code that defines norm ``name``'s head: the head module's source, the norm's
    builder and everything it uses — our own and plugin functions and classes by their source (following the
    names they use), modules of this package by their file, third-party modules (torch) by their version."""
    parts: list[str] = [_module_text(HEAD_MODULE)]
    _collect(get_norm(name).build, parts, set())
    return hashlib.sha256("\n\0".join(parts).encode()).hexdigest()[:16]


def _is_ours(module: str) -> bool:
    return module.split(".")[0] == "normscape" or module.startswith("normscape_plugin_") or module == "__main__"


def _module_text(module: str) -> str:
    """Our modules by their source file; a third-party one by its distribution's version."""
    if _is_ours(module):
        loaded = sys.modules.get(module)
        origin = getattr(loaded, "__file__", None) or getattr(importlib.util.find_spec(module), "origin", None)
        return f"{module}:\n" + (Path(origin).read_text() if origin and origin.endswith(".py") else "")
    top = module.split(".")[0]
    try:
        return f"{top}=={importlib.metadata.version(top)}"
    except importlib.metadata.PackageNotFoundError:
        return f"{top}==(version unknown)"


def _code_names(code) -> set[str]:
    names = set(code.co_names)
    for const in code.co_consts:
        if inspect.iscode(const):
            names |= _code_names(const)
    return names


def _collect(obj: Any, parts: list[str], seen: set[int]) -> None:
    """Append the text that defines ``obj`` (a builder, class, function or module) and what it refers to."""
    if id(obj) in seen:
        return
    seen.add(id(obj))
    if isinstance(obj, LazyModule):
        parts.append(_module_text(obj._name))
        return
    if inspect.ismodule(obj):
        parts.append(_module_text(obj.__name__))
        return
    if not (inspect.isfunction(obj) or inspect.isclass(obj)):
        return
    module = getattr(obj, "__module__", "") or ""
    if not _is_ours(module):
        parts.append(_module_text(module))
        return
    if getattr(obj, "__name__", "") == "<lambda>":  # its source line holds the whole register(...) call
        parts.append(_code_text(obj.__code__))
    else:
        try:
            parts.append(inspect.getsource(obj))
        except (OSError, TypeError):  # no source (defined interactively): its compiled code stands for it
            parts.extend(_code_text(f.__code__) for f in _functions_of(obj))
    if inspect.isclass(obj):
        for base in obj.__bases__:
            _collect(base, parts, seen)
    for function in _functions_of(obj):
        for ref in sorted(_code_names(function.__code__)):
            value = function.__globals__.get(ref)  # the namespace of the module that defines it
            if isinstance(value, (bool, int, float, str)):
                parts.append(f"{ref}={value!r}")
            elif value is not None:
                _collect(value, parts, seen)


def _code_text(code) -> str:
    """A compiled function as text: its bytecode, constants (nested functions recursively) and names."""
    consts = [_code_text(c) if inspect.iscode(c) else repr(c) for c in code.co_consts]
    return f"{code.co_code.hex()}|{consts}|{code.co_names}"


def _functions_of(obj: Any) -> list:
    if inspect.isfunction(obj):
        return [obj]
    return [v for v in vars(obj).values() if inspect.isfunction(v)]


class RegistryView(Mapping):
    """name -> one field of every registered norm, read at lookup: norms a plugin registers after this module was
    imported have their labels and colours like the built-in ones."""

    def __init__(self, field: str):
        self.field = field

    def __getitem__(self, name: str):
        return getattr(NORMS[name], self.field)

    def __iter__(self):
        return iter(NORMS)

    def __len__(self) -> int:
        return len(NORMS)


NORM_LABELS = RegistryView("label")
NORM_COLOURS = RegistryView("colour")


def label(name: str) -> str:
    return NORMS[name].label if name in NORMS else name


def colour(name: str) -> str | None:
    return NORMS[name].colour if name in NORMS else None


# ------------------------------------------------------------------------------------------------ the entries
register(NormSpec("none", lambda c: nn.Identity(), "Baseline (no norm)", "#4d4d4d"))
register(NormSpec("batch", lambda c: nn.BatchNorm1d(c), "BatchNorm", "#1f77b4"))
register(NormSpec("layer", lambda c: nn.LayerNorm(c), "LayerNorm", "#d62728"))
register(NormSpec("group", lambda c: nn.GroupNorm(group_count(c), c), "GroupNorm", "#9467bd"))
register(NormSpec("frn", lambda c: frn.FilterResponseNorm(c), "FRN", "#2ca02c"))
register(
    NormSpec(
        "frn_learned_eps",
        lambda c: frn.FilterResponseNorm(c, learnable_eps=True),
        "FRN (learned eps)",
        "#ff7f0e",
        modifies="frn",
    )
)
# RMSNorm (Zhang & Sennrich 2019; torch.nn.RMSNorm): x / sqrt(mean(x^2) + eps) * gamma.
register(NormSpec("rms", lambda c: nn.RMSNorm(c), "RMSNorm", "#8c564b"))
