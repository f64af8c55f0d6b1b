"""The geometry of a loss landscape: filter-normalised directions, planes, lines, the trajectory's PCA plane.

Around trained parameters theta* the loss is evaluated on theta* + a*d1 + b*d2 (a 2D plane), theta* + a*d1
(a line), the init -> final interpolation, and the PCA plane of the optimisation trajectory. Directions are
seeded Gaussians with *filter normalisation* (Li et al. 2018): every row of every weight matrix is rescaled
to the norm of the same row of theta*; with ``ignore="biasbn"`` biases and normalisation parameters get a
zero direction.

The surfaces are evaluated by :class:`normscape.landscape.plane_eval.PlaneEvaluator`; one run's landscape files are
written by :mod:`normscape.landscape.jobs`.
"""

from __future__ import annotations

import numpy as np
import torch

from normscape.landscape.plane_eval import Direction, PlaneEvaluator, parameters_of
from normscape.models.heads import ClassifierHead


# --------------------------------------------------------------------------------------------- directions
def filter_normalized_direction(model: ClassifierHead, generator: torch.Generator, ignore: str = "biasbn") -> Direction:
    """A Gaussian direction, each weight row rescaled to the norm of theta*'s row (Li et al. 2018).

    1-D parameters (biases, gamma/beta/tau, eps) get zero with ``ignore="biasbn"``; otherwise they are rescaled
    as one filter each (the whole vector to the norm of theta*'s vector).
    """
    direction = {}
    for name, theta in parameters_of(model).items():
        d = torch.randn(theta.shape, generator=generator, dtype=theta.dtype)
        if theta.dim() <= 1:
            if ignore == "biasbn":
                d.zero_()
            else:
                d.mul_(theta.norm() / (d.norm() + 1e-10))
        else:
            rows_theta = theta.reshape(theta.shape[0], -1).norm(dim=1)
            rows_d = d.reshape(d.shape[0], -1).norm(dim=1)
            d.mul_((rows_theta / (rows_d + 1e-10)).view(-1, *([1] * (d.dim() - 1))))
        direction[name] = d
    return direction


def random_directions(model: ClassifierHead, seed: int, ignore: str = "biasbn") -> tuple[Direction, Direction]:
    """Two filter-normalised directions from ``seed``: the same random draws for every head of the same shapes."""
    g = torch.Generator().manual_seed(seed)
    return filter_normalized_direction(model, g, ignore), filter_normalized_direction(model, g, ignore)


def zero_direction(model: ClassifierHead) -> Direction:
    return {name: torch.zeros_like(p) for name, p in model.named_parameters()}


def unflatten(flat: torch.Tensor, model: ClassifierHead) -> Direction:
    out, offset = {}, 0
    for name, p in model.named_parameters():
        out[name] = flat[offset : offset + p.numel()].view_as(p).clone()
        offset += p.numel()
    return out


def flatten(direction: Direction, model: ClassifierHead) -> torch.Tensor:
    return torch.cat([direction[name].flatten() for name, _ in model.named_parameters()])


def evaluate_plane(
    model: ClassifierHead,
    x: torch.Tensor,
    y: torch.Tensor,
    d1: Direction,
    d2: Direction,
    alphas: np.ndarray,
    betas: np.ndarray,
    progress: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    return PlaneEvaluator(model, d1, d2).evaluate(x, y, alphas, betas, progress)


def evaluate_line(
    model: ClassifierHead, x: torch.Tensor, y: torch.Tensor, d: Direction, alphas: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    loss, acc = PlaneEvaluator(model, d, zero_direction(model)).evaluate(x, y, alphas, np.zeros(1))
    return loss[:, 0], acc[:, 0]


# --------------------------------------------------------------------------------------------- trajectory
def trajectory_pca(trajectory: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, np.ndarray]:
    """PCA of (theta_e - theta_final) over epochs (Li et al. 2018, Sec. 7).

    Returns (two orthonormal direction vectors (2, P), the trajectory projected on them (E+1, 2),
    explained variance ratio of the two components).
    """
    final = trajectory[-1]
    m = (trajectory[:-1] - final).double()
    centred = m - m.mean(0, keepdim=True)
    _, s, vh = torch.linalg.svd(centred, full_matrices=False)
    dirs = vh[:2]
    if dirs.shape[0] < 2:  # a single epoch: complete with an arbitrary orthogonal direction
        extra = torch.randn(m.shape[1], dtype=torch.float64, generator=torch.Generator().manual_seed(0))
        extra -= (extra @ dirs[0]) * dirs[0]
        dirs = torch.stack([dirs[0], extra / extra.norm()])
    coords = (trajectory.double() - final) @ dirs.t()
    var = s**2
    ratio = (var[:2] / var.sum()).numpy() if var.sum() > 0 else np.zeros(2)
    return dirs.float(), coords.float(), np.pad(ratio, (0, 2 - len(ratio)))


def pca_grid(coords: torch.Tensor, resolution: int, margin: float = 0.25) -> tuple[np.ndarray, np.ndarray]:
    """Grid axes covering the projected trajectory (and the final point at 0) with a relative margin."""
    axes = []
    for k in range(2):
        lo, hi = float(coords[:, k].min()), float(coords[:, k].max())
        lo, hi = min(lo, 0.0), max(hi, 0.0)
        pad = margin * max(hi - lo, 1e-3)
        axes.append(np.linspace(lo - pad, hi + pad, resolution))
    return axes[0], axes[1]


def grid_axis(span: float, resolution: int) -> np.ndarray:
    return np.linspace(-span, span, resolution)
