"""The exact diagonal of a head's Hessian — and with it the exact trace — for ANY registered norm.

The head is ``fc1 -> norm -> ReLU -> fc2`` (dropout off) and, in eval mode, its loss is the mean of per-sample
terms: L = (1/N) sum_n l(z_n, tail) with z_n = W1 x_n + b1 fc1's pre-activations. The diagonal splits by layer:

* **fc1** (the large block, in_features x hidden): z is linear in (W1, b1), so
  d^2 L / dW1[i,j]^2 = sum_n x_nj^2 D_ni and d^2 L / db1[i]^2 = sum_n D_ni, with D_ni = d^2 L / dz_ni^2 — the
  diagonal of each sample's curvature in z. Because samples do not interact, one Hessian-vector product of the
  tail with dz = (unit i on every sample) returns D_:i for all samples at once: ``hidden`` products in all, from
  one gradient graph. Whatever the norm computes (it is an arbitrary nn.Module, a user plugin too), autograd
  differentiates it; nothing about its formula is assumed.
* **norm** parameters (a few per hidden unit): one exact product with each unit vector (same graph).
* **fc2**: logits are W2 a + b2 of the hidden activations a, so d^2 L / dW2[c,k]^2 = (1/N) sum_n
  p_nc (1 - p_nc) a_nk^2 and d^2 L / db2[c]^2 = (1/N) sum_n p_nc (1 - p_nc) (p = softmax of the logits).

"Samples do not interact" is checked, not assumed: one product with a direction on the even samples only must
leave the odd samples' curvature at zero. A norm that mixes samples (BatchNorm's batch statistics, train mode)
raises :class:`SampleCouplingError`; the sharpness rule then records the trace as not computed with that reason.
tests/test_hessian.py checks the diagonal elementwise against the dense Hessian (float64) for every built-in norm
and a plugin's.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from normscape.curvature.head_loss import HeadLoss
from normscape.models.heads import is_norm_parameter


class SampleCouplingError(ValueError):
    """The loss is not a mean of per-sample terms, so the exact per-sample diagonal does not apply."""


def _check_per_sample(grad_z: torch.Tensor, z: torch.Tensor) -> None:
    if len(z) < 2:
        return
    direction = torch.zeros_like(z)
    direction[0::2] = torch.randn(direction[0::2].shape, generator=torch.Generator().manual_seed(0), dtype=z.dtype)
    (out,) = torch.autograd.grad((grad_z * direction).sum(), z, retain_graph=True, materialize_grads=True)
    leak, scale = float(out[1::2].abs().max()), float(out[0::2].abs().max())
    if leak > 1e3 * torch.finfo(z.dtype).eps * max(scale, 1e-300):
        raise SampleCouplingError(
            "the norm mixes samples (the curvature of one sample depends on another's input), so the exact "
            "per-sample Hessian diagonal does not apply; use the Hutchinson estimate"
        )


def hessian_diagonal(loss: HeadLoss) -> torch.Tensor:
    """diag(H) at the head's parameters, flat in ``named_parameters`` order, float64."""
    if loss.batch_stats:
        raise SampleCouplingError("train mode with batch statistics: every sample's loss depends on its batch")
    n1 = loss.fc1_size
    z0, tail0 = loss._z(None), loss.theta[n1:]
    tail_names, tail_sizes = loss.names[2:], loss.sizes[2:]
    diag = torch.zeros(loss.dim, dtype=torch.float64)
    with torch.enable_grad():
        z = z0.detach().requires_grad_()
        tail = tail0.detach().requires_grad_()
        value = loss.loss_of_z(z, tail)
        grad_z, grad_tail = torch.autograd.grad(value, (z, tail), create_graph=True)
        _check_per_sample(grad_z, z)
        # D_ni = d^2 L / dz_ni^2, one product per hidden unit (all samples at once)
        curvature_z = torch.empty_like(z0)
        for i in range(z0.shape[1]):
            (col,) = torch.autograd.grad(grad_z[:, i].sum(), z, retain_graph=True, materialize_grads=True)
            curvature_z[:, i] = col[:, i]
        # norm parameters: exact products with unit vectors
        start = 0
        for name, size in zip(tail_names, tail_sizes):
            if is_norm_parameter(name):
                for k in range(start, start + size):
                    (col,) = torch.autograd.grad(
                        grad_tail[k], tail, retain_graph=True, allow_unused=True, materialize_grads=True
                    )
                    diag[n1 + k] = float(col[k])
            start += size
    x = loss.x
    w1_size = loss.sizes[0]
    diag[:w1_size] = (curvature_z.t() @ (x * x)).flatten().to(torch.float64)
    diag[w1_size:n1] = curvature_z.sum(0).to(torch.float64)
    with torch.no_grad():
        params = loss._tail_params(tail0)
        hidden = loss.hidden(params, z0)
        p = torch.softmax(F.linear(hidden, params["fc2.weight"], params["fc2.bias"]), dim=1)
        weight = p * (1 - p) / len(x)
        offsets = dict(zip(tail_names, torch.cumsum(torch.tensor([0, *tail_sizes]), 0).tolist()))
        fc2_w, fc2_b = n1 + offsets["fc2.weight"], n1 + offsets["fc2.bias"]
        diag[fc2_w : fc2_w + weight.shape[1] * hidden.shape[1]] = (weight.t() @ hidden**2).flatten().double()
        diag[fc2_b : fc2_b + weight.shape[1]] = weight.sum(0).double()
    return diag


def exact_trace(loss: HeadLoss) -> dict[str, float]:
    """tr(H) and its share per block (fc1, norm, fc2) from :func:`hessian_diagonal`."""
    diag = hessian_diagonal(loss)
    out = {"total": float(diag.sum())}
    for block, slices in loss.block_slices().items():
        out[block] = float(sum(float(diag[s].sum()) for s in slices))
    return out
