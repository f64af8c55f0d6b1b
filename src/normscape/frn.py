"""Filter Response Normalization + TLU (Singh & Krishnan, CVPR 2020) for the heads' (N, C) activations."""

from __future__ import annotations

import torch
from torch import nn

FRN_EPS = 1e-6
FRN_LEARNED_EPS_INIT = 1e-4


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
