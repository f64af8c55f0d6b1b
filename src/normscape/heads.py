"""Classifier heads that differ only in their normalisation layer.

``Linear(in, hidden) -> Norm -> ReLU -> Dropout -> Linear(hidden, classes)``, with ``Norm`` one of

=================  =====================================================================================
``none``           identity (the study's baseline)
``batch``          ``nn.BatchNorm1d`` (batch statistics in training, running statistics in eval)
``layer``          ``nn.LayerNorm`` over the hidden units
``group``          ``nn.GroupNorm`` (32 groups, or fewer when ``hidden`` is not divisible)
``frn``            Filter Response Normalization + TLU (Singh & Krishnan 2020), fixed eps = 1e-6
``frn_learned_eps`` the same with the paper's learnable epsilon: eps = 1e-6 + |eps_l|, eps_l(0) = 1e-4
=================  =====================================================================================

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

NORM_NAMES = ("none", "batch", "layer", "group", "frn", "frn_learned_eps")

FRN_EPS = 1e-6
FRN_LEARNED_EPS_INIT = 1e-4
GROUPNORM_GROUPS = 32


class FilterResponseNorm(nn.Module):
    """Filter Response Normalization with a Thresholded Linear Unit (Singh & Krishnan, CVPR 2020).

    For x of shape (N, C, *spatial):  nu2 = mean_{spatial} x^2,  x_hat = x / sqrt(nu2 + eps),
    y = gamma * x_hat + beta,  z = max(y, tau).  (N, C) inputs are treated as (N, C, 1, 1).

    ``learnable_eps``: eps = eps_fixed + |eps_l| with eps_l a parameter initialised to ``eps_init``
    (the paper's recommendation for 1x1 activations).
    """

    def __init__(
        self,
        num_features: int,
        eps: float = FRN_EPS,
        learnable_eps: bool = False,
        eps_init: float = FRN_LEARNED_EPS_INIT,
    ):
        super().__init__()
        self.num_features = num_features
        self.eps = eps
        self.learnable_eps = learnable_eps
        self.weight = nn.Parameter(torch.ones(num_features))  # gamma
        self.bias = nn.Parameter(torch.zeros(num_features))  # beta
        self.tau = nn.Parameter(torch.zeros(num_features))  # TLU threshold
        if learnable_eps:
            self.eps_l = nn.Parameter(torch.full((1,), float(eps_init)))
        else:
            self.register_parameter("eps_l", None)

    def effective_eps(self) -> torch.Tensor | float:
        return self.eps + self.eps_l.abs() if self.learnable_eps else self.eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() < 2:
            raise ValueError(f"FilterResponseNorm expects (N, C, ...) input, got shape {tuple(x.shape)}")
        shape = (1, self.num_features) + (1,) * (x.dim() - 2)
        spatial = tuple(range(2, x.dim()))
        # (N, C) has no spatial axes: the mean over an empty set of positions is x^2 itself.
        nu2 = x.pow(2).mean(dim=spatial, keepdim=True) if spatial else x.pow(2)
        x_hat = x * torch.rsqrt(nu2 + self.effective_eps())
        y = self.weight.view(shape) * x_hat + self.bias.view(shape)
        return torch.maximum(y, self.tau.view(shape))

    def extra_repr(self) -> str:
        return f"{self.num_features}, eps={self.eps}, learnable_eps={self.learnable_eps}"


def _group_count(channels: int, preferred: int = GROUPNORM_GROUPS) -> int:
    """The largest divisor of ``channels`` that is <= ``preferred``."""
    return max(g for g in range(1, min(preferred, channels) + 1) if channels % g == 0)


def make_norm(name: str, num_features: int) -> nn.Module:
    """The normalisation layer called ``name`` for (N, num_features) activations."""
    if name == "none":
        return nn.Identity()
    if name == "batch":
        return nn.BatchNorm1d(num_features)
    if name == "layer":
        return nn.LayerNorm(num_features)
    if name == "group":
        return nn.GroupNorm(_group_count(num_features), num_features)
    if name == "frn":
        return FilterResponseNorm(num_features)
    if name == "frn_learned_eps":
        return FilterResponseNorm(num_features, learnable_eps=True)
    raise ValueError(f"unknown norm {name!r}; choose one of {NORM_NAMES}")


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

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.after_fc1(self.fc1(x))

    def after_fc1(self, z: torch.Tensor) -> torch.Tensor:
        """Everything after the first layer, from its pre-activations ``z`` (the trainer computes ``fc1`` itself)."""
        return self.fc2(self.drop(self.act(self.norm(z))))


def build_head(
    norm: str, in_features: int = 1280, hidden: int = 256, num_classes: int = 10, dropout: float = 0.0
) -> ClassifierHead:
    """Factory used everywhere (training, landscapes, tests): heads differ only in ``norm``."""
    if norm not in NORM_NAMES:
        raise ValueError(f"unknown head {norm!r}; choose one of {NORM_NAMES}")
    return ClassifierHead(norm, in_features, hidden, num_classes, dropout)


def is_norm_parameter(name: str) -> bool:
    """True for parameters of the normalisation layer (gamma, beta, tau, eps_l) — used by ``ignore: biasbn``."""
    return name.startswith("norm.")
