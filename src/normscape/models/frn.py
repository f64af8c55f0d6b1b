"""Filter Response Normalization + TLU (Singh & Krishnan, CVPR 2020) for the heads' (N, C) activations."""

from __future__ import annotations

import torch
from torch import nn

FRN_EPS = 1e-6
FRN_LEARNED_EPS_INIT = 1e-4


class ThresholdedLinearUnit(torch.autograd.Function):
    """``torch.maximum(y, tau)`` with torch's own derivative — the gradient goes to the larger input, split in half
    at a tie, and a NaN input passes it to both — written as products with 0 / 0.5 / 1 weights.

    The same numbers as autograd through ``torch.maximum`` in both modes, to second order (tests/test_heads.py),
    but the backward is one multiply per input instead of where + masked_fill over the whole (N, C) activation,
    and its own derivative is again a multiply: the diagnostics' Hessian-vector products (reverse over reverse)
    of an FRN head make a few multiplies where torch.maximum made ~25 where/masked_fill/compare passes. A non-finite
    incoming gradient (the one difference) meets a 0 weight as NaN, where masked_fill writes 0 (the loss is NaN then
    anyway). ``tau`` broadcasts from (1, C, ...) and gets its gradient summed back to that shape.
    """

    # torch.vmap over stacked heads (the trainer) and over grid points (landscape.plane_eval): the vmap rule is derived
    # from forward/setup_context/backward, which use only torch ops
    generate_vmap_rule = True

    @staticmethod
    def forward(y: torch.Tensor, tau: torch.Tensor) -> torch.Tensor:
        return torch.maximum(y, tau)

    @staticmethod
    def setup_context(ctx, inputs, output) -> None:  # separate from forward: torch.func transforms need it so
        # Only references: torch calls this under no_grad too (evaluation, landscapes), where computing the
        # weights here would be ~6 passes over the activation for a backward that never comes.
        y, tau = inputs
        ctx.save_for_backward(y, tau)
        ctx.save_for_forward(y, tau)
        ctx.tau_shape = tau.shape

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        y, tau = (t.detach() for t in ctx.saved_tensors)  # comparisons: constants for a second derivative
        tie = (y == tau).to(y.dtype)
        weight_y = 1.0 - (y < tau).to(y.dtype) - 0.5 * tie  # 1 where y > tau or either is NaN (as torch.maximum)
        weight_tau = 1.0 - (y > tau).to(y.dtype) - 0.5 * tie
        grad_tau = grad * weight_tau
        reduce = tuple(d for d, size in enumerate(ctx.tau_shape) if size == 1 and grad_tau.shape[d] != 1)
        return grad * weight_y, grad_tau.sum(reduce, keepdim=True) if reduce else grad_tau

    @staticmethod
    def jvp(ctx, tangent_y: torch.Tensor, tangent_tau: torch.Tensor) -> torch.Tensor:
        # forward mode (torch.func.jvp, the diagnostics' reference): torch.maximum's own formula, which gives a NaN
        # input's output the other tangent
        y, tau = ctx.saved_tensors
        return torch.where(y == tau, (tangent_y + tangent_tau) / 2, torch.where(y > tau, tangent_y, tangent_tau))


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
        return ThresholdedLinearUnit.apply(y, self.tau.view(shape))

    def extra_repr(self) -> str:
        return f"{self.num_features}, eps={self.eps}, learnable_eps={self.learnable_eps}"
