"""Classifier heads that differ only in their normalisation layer.

``Linear(in, hidden) -> Norm -> ReLU -> Dropout -> Linear(hidden, classes)``, with ``Norm``
any norm registered in :mod:`normscape.models.norms` (which also says how to add one).

Why FRN collapses on a vector: FRN normalises each channel by its mean square *over spatial positions*,
nu2 = mean_{h,w} x^2. The head's hidden activations are (N, C) vectors, i.e. (N, C, 1, 1) feature maps with
a single position, so nu2 = x^2 and x / sqrt(x^2 + eps) ~ sign(x) for |x| >> sqrt(eps): the hidden layer
becomes binary. Its derivative, eps / (x^2 + eps)^{3/2}, is ~0 for |x| >> sqrt(eps) = 1e-3 and ~1/sqrt(eps)
= 1000 for the rare |x| << sqrt(eps): almost every unit passes no gradient to fc1 and the few near zero pass
huge, erratic ones (spiky gradient norms, heavy clipping). A learnable eps lets the optimiser widen that band —
the "needs precise tuning (e.g. learnable epsilon)" remark of the study. ``tests/test_heads.py`` measures the
gradient that reaches fc1's output for both variants.
"""

from __future__ import annotations

import torch
from torch import nn

from normscape.models.frn import FRN_EPS, FRN_LEARNED_EPS_INIT, FilterResponseNorm  # noqa: F401  (re-exported)
from normscape.models.norms import GROUPNORM_GROUPS, NORMS, get_norm, group_count, make_norm  # noqa: F401

NORM_NAMES = tuple(NORMS)  # the registry's names (normscape/models/norms.py): the only place they are listed
_group_count = group_count


class ClassifierHead(nn.Module):
    """``fc1 -> norm -> act (ReLU) -> drop -> fc2``; ``norm_name`` is the only thing that varies."""

    def __init__(
        self, norm: str, in_features: int = 1280, hidden: int = 256, num_classes: int = 10, dropout: float = 0.0
    ):
        super().__init__()
        self.norm_name = norm
        self.fc1 = nn.Linear(in_features, hidden)
        self.norm = make_norm(norm, hidden)
        self.act = nn.ReLU()
        self.drop = nn.Dropout(dropout)
        self.fc2 = nn.Linear(hidden, num_classes)

    def forward(self, x: torch.Tensor, dropout_mask: torch.Tensor | None = None) -> torch.Tensor:
        """``dropout_mask`` (already scaled by 1 / (1 - p)) replaces the dropout layer's own draw: the trainer
        draws each run's mask from that run's generator, so a run's randomness does not depend on which runs
        train beside it (normscape.models.stacked_heads)."""
        hidden = self.act(self.norm(self.fc1(x)))
        return self.fc2(self.drop(hidden) if dropout_mask is None else hidden * dropout_mask)


def build_head(
    norm: str, in_features: int = 1280, hidden: int = 256, num_classes: int = 10, dropout: float = 0.0
) -> ClassifierHead:
    """Factory used everywhere (training, landscapes, tests): heads differ only in ``norm``."""
    get_norm(norm)  # a clear error for an unregistered name
    return ClassifierHead(norm, in_features, hidden, num_classes, dropout)


def is_norm_parameter(name: str) -> bool:
    """True for parameters of the normalisation layer (gamma, beta, tau, eps_l) — used by ``ignore: biasbn``."""
    return name.startswith("norm.")
