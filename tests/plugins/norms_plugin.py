"""A plugin with norms of every parameter shape a torch module may have (config: ``plugins: [this file]``).

``scale``: ScaleNorm (Nguyen & Salazar 2019), g * x / ||x|| with ONE learned gain: a 0-d parameter.
``shifted``: a norm with a registered buffer beside its 1-d parameter.
``unit``: a norm without any parameter or buffer.
Tests copy this file and edit it (the provenance test changes ScaleNorm's gain to one per unit).
"""

import math

import torch
from torch import nn

from normscape.models.norms import NormSpec, register


class ScaleNorm(nn.Module):
    def __init__(self, features: int):
        super().__init__()
        self.gain = nn.Parameter(torch.tensor(math.sqrt(features)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.gain * x / x.norm(dim=-1, keepdim=True).clamp_min(1e-5)


class ShiftedNorm(nn.Module):
    def __init__(self, features: int):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(features))
        self.register_buffer("offset", torch.linspace(-0.1, 0.1, features))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x - x.mean(-1, keepdim=True) + self.offset
        return self.weight * x / (x.pow(2).mean(-1, keepdim=True) + 1e-5).sqrt()


class UnitNorm(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x / (x.pow(2).mean(-1, keepdim=True) + 1e-5).sqrt()


register(NormSpec("scale", ScaleNorm, "ScaleNorm", "#17becf"))
register(NormSpec("shifted", ShiftedNorm, "Shifted RMS norm (buffer)", "#bcbd22"))
register(NormSpec("unit", lambda features: UnitNorm(), "Unit RMS (no parameters)", "#e377c2"))
