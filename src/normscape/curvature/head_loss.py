"""The training loss of a head as a function of ONE flat parameter vector: the object the diagnostics probe.

:mod:`normscape.curvature.spectrum` (Hessian spectrum), :mod:`normscape.curvature.adaptive_sharpness` and
:mod:`normscape.curvature.smoothness` all need the loss, its gradient and Hessian-vector products at arbitrary
parameters, in a chosen precision and — for BatchNorm — in a chosen *mode*:

* ``eval``: BatchNorm normalises with its running statistics (the function the landscapes show);
* ``train``: BatchNorm normalises every consecutive chunk of ``batch_size`` samples with that chunk's own
  statistics, and the loss is the mean over chunks: the function the optimiser actually descends (each step
  sees one mini-batch's statistics). The running statistics are never updated.

For every other norm the two modes are the same function (their statistics are per sample). Dropout is always
off so the function is deterministic (the study's default dropout is 0). The model is copied, never modified.

Derivatives come from torch.autograd (gradients: one backward; Hessian-vector products: reverse-over-reverse through
the small part after fc1). torch.func computes the same numbers, but its first transform imports torch._dynamo
(~1.4 s of CPU in every job that probes a head) and adds per-call overhead that dominates the smoothness probe's
64-sample batches; it stays the reference that :meth:`HeadLoss.hvp` is tested against (:meth:`hvp_autodiff`).
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch.func import functional_call  # torch.nn.utils.stateless: no function transform, no torch._dynamo

from normscape.models.heads import ClassifierHead, is_norm_parameter

MODES = ("eval", "train")


def parameter_blocks(names: list[str]) -> dict[str, list[str]]:
    """The diagonal blocks of the per-layer numbers: fc1, norm (absent for the baseline), fc2."""
    blocks = {
        "fc1": [n for n in names if n.startswith("fc1.")],
        "norm": [n for n in names if is_norm_parameter(n)],
        "fc2": [n for n in names if n.startswith("fc2.")],
    }
    return {k: v for k, v in blocks.items() if v}


class HeadLoss:
    """Mean cross-entropy of ``model`` on (x, y) as a function of a flat parameter vector.

    ``theta`` holds the model's own parameters (flattened in ``named_parameters`` order, in ``dtype``);
    :meth:`loss`, :meth:`grad` and :meth:`hvp` evaluate at any flat vector of that length.
    """

    def __init__(
        self,
        model: ClassifierHead,
        x: torch.Tensor,
        y: torch.Tensor,
        mode: str = "eval",
        batch_size: int | None = None,
        dtype: torch.dtype = torch.float64,
    ):
        if mode not in MODES:
            raise ValueError(f"unknown mode {mode!r}; choose one of {MODES}")
        self.model = copy.deepcopy(model).to(dtype).eval()
        self.mode, self.dtype = mode, dtype
        named = list(self.model.named_parameters())
        self.names = [n for n, _ in named]
        self.shapes = [p.shape for _, p in named]
        self.sizes = [p.numel() for _, p in named]
        self.theta = torch.cat([p.detach().flatten() for _, p in named])
        self.dim = int(self.theta.numel())
        self.batch_stats = mode == "train" and isinstance(self.model.norm, torch.nn.BatchNorm1d)
        x, y = x.to(dtype), y.long()
        if self.batch_stats:
            bs = int(batch_size or len(x))
            if bs < 2:
                raise ValueError(f"batch_size {bs}: BatchNorm's batch statistics need at least 2 samples per batch")
            chunks = len(x) // bs  # equal chunks; the remainder (< batch_size samples) is left out
            if chunks == 0:
                raise ValueError(f"{len(x)} samples are fewer than one batch of {bs}")
            x, y = x[: chunks * bs], y[: chunks * bs]
            self.chunks, self.chunk_size = chunks, bs
        self.x, self.y = x, y
        if self.names[:2] != ["fc1.weight", "fc1.bias"]:
            raise ValueError(f"the head's parameters must start with fc1.weight, fc1.bias (got {self.names[:2]})")
        self._z_theta = None

    # ----------------------------------------------------------------------------------------- layout
    def unflatten(self, flat: torch.Tensor) -> dict[str, torch.Tensor]:
        return {n: t.view(s) for n, t, s in zip(self.names, torch.split(flat, self.sizes), self.shapes)}

    def block_slices(self) -> dict[str, list[slice]]:
        """Flat index ranges of each block (fc1, norm, fc2)."""
        offsets, start = {}, 0
        for n, size in zip(self.names, self.sizes):
            offsets[n] = slice(start, start + size)
            start += size
        return {b: [offsets[n] for n in names] for b, names in parameter_blocks(self.names).items()}

    def block_mask(self, block: str) -> torch.Tensor:
        mask = torch.zeros(self.dim, dtype=self.dtype)
        for s in self.block_slices()[block]:
            mask[s] = 1.0
        return mask

    # ----------------------------------------------------------------------------------------- function
    def logits(self, flat: torch.Tensor, x: torch.Tensor | None = None) -> torch.Tensor:
        p = self.unflatten(flat)
        x = self.x if x is None else x
        return self._after_fc1(p, F.linear(x, p["fc1.weight"], p["fc1.bias"]))

    def _after_fc1(self, p: dict[str, torch.Tensor], z: torch.Tensor) -> torch.Tensor:
        return F.linear(self.hidden(p, z), p["fc2.weight"], p["fc2.bias"])

    def hidden(self, p: dict[str, torch.Tensor], z: torch.Tensor) -> torch.Tensor:
        """The activations fc2 reads (ReLU of the norm; dropout off) from fc1's pre-activations ``z``."""
        norm = self.model.norm
        if self.batch_stats:
            zc = z.view(self.chunks, self.chunk_size, -1)
            mean = zc.mean(1, keepdim=True)
            var = zc.var(1, unbiased=False, keepdim=True)  # as BatchNorm1d normalises in training
            h = ((zc - mean) * torch.rsqrt(var + norm.eps)).view_as(z) * p["norm.weight"] + p["norm.bias"]
        else:
            norm_params = {n[len("norm.") :]: t for n, t in p.items() if is_norm_parameter(n)}
            h = functional_call(norm, norm_params, (z,)) if norm_params else norm(z)
        return torch.relu(h)

    def loss(self, flat: torch.Tensor) -> torch.Tensor:
        # equal chunks: the mean over all samples IS the mean of the per-chunk mean losses
        return F.cross_entropy(self.logits(flat), self.y)

    def _value_and_grad(self, flat: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        with torch.enable_grad():  # callers may run under no_grad (as torch.func.grad ignores it)
            leaf = flat.detach().requires_grad_()
            value = self.loss(leaf)
            (g,) = torch.autograd.grad(value, leaf)
        return value.detach(), g

    def grad(self, flat: torch.Tensor) -> torch.Tensor:
        return self._value_and_grad(flat)[1]

    def value_and_grad(self, flat: torch.Tensor) -> tuple[float, torch.Tensor]:
        value, g = self._value_and_grad(flat)
        return float(value), g

    def hvp_autodiff(self, v: torch.Tensor, at: torch.Tensor | None = None) -> torch.Tensor:
        """Exact Hessian-vector product by torch.func's forward-over-reverse autodiff through the whole head: the
        independent reference :meth:`hvp` must equal (tests/test_spectrum.py)."""
        from torch.func import grad, jvp

        return jvp(grad(self.loss), (self.theta if at is None else at,), (v,))[1]

    # ----------------------------------------------------------------------------------------- fast path
    # fc1's pre-activations z = x W1^T + b1 are linear in (W1, b1) and nothing else reads x, so the Hessian
    # factors as H = J^T H_z J, with H_z the Hessian of the loss as a function of (z, tail parameters) and
    # J v = (x V1^T + v_b1, v_tail), J^T (g_z, g_tail) = (g_z^T x, sum_rows g_z, g_tail) (no second-order term:
    # z is linear). A product then costs two (samples x in_features x hidden) GEMMs plus the small tail, instead
    # of autodiff's forward, backward and their tangents through fc1; z at the model's parameters is computed once.
    @property
    def fc1_size(self) -> int:
        return sum(size for n, size in zip(self.names, self.sizes) if n.startswith("fc1."))

    def _tail_params(self, tail: torch.Tensor) -> dict[str, torch.Tensor]:
        names, shapes, sizes = self.names[2:], self.shapes[2:], self.sizes[2:]
        return {n: t.view(s) for n, t, s in zip(names, torch.split(tail, sizes), shapes)}

    def loss_of_z(self, z: torch.Tensor, tail: torch.Tensor) -> torch.Tensor:
        """The loss from fc1's pre-activations ``z`` and the flat parameters after fc1."""
        return F.cross_entropy(self._after_fc1(self._tail_params(tail), z), self.y)

    def _z(self, flat: torch.Tensor | None) -> torch.Tensor:
        if flat is None:
            if self._z_theta is None:
                self._z_theta = self._z(self.theta)
            return self._z_theta
        w, b = flat[: self.sizes[0]].view(self.shapes[0]), flat[self.sizes[0] : self.fc1_size]
        return F.linear(self.x, w, b).detach()

    def _hvp_of_z(
        self, z: torch.Tensor, tail: torch.Tensor, dz: torch.Tensor | None, v_tail: torch.Tensor
    ) -> tuple[torch.Tensor | None, torch.Tensor]:
        """H_z (dz, v_tail) of the loss as a function of (z, tail) by reverse-over-reverse autograd: the gradient
        with its graph, then the gradient of <gradient, direction>. ``dz`` None: z held fixed (the tail block)."""
        with torch.enable_grad():
            z_leaf = z.detach().requires_grad_(dz is not None)
            tail_leaf = tail.detach().requires_grad_()
            inputs = (z_leaf, tail_leaf) if dz is not None else (tail_leaf,)
            value = self.loss_of_z(z_leaf, tail_leaf)
            grads = torch.autograd.grad(value, inputs, create_graph=True)
            directions = (dz, v_tail) if dz is not None else (v_tail,)
            inner = sum((g * d).sum() for g, d in zip(grads, directions))
            # a part of the gradient that is constant in an input (e.g. the baseline's fc2 bias) has no graph
            # back to it: zero, as torch.func would return
            out = torch.autograd.grad(inner, inputs, allow_unused=True, materialize_grads=True)
        return (out[0], out[1]) if dz is not None else (None, out[0])

    def hvp(self, v: torch.Tensor, at: torch.Tensor | None = None) -> torch.Tensor:
        """Exact Hessian-vector product at ``at`` (default: the model's parameters), through fc1's
        pre-activations (the factorisation above); equals :meth:`hvp_autodiff` to float rounding."""
        n1, n_w = self.fc1_size, self.sizes[0]
        v = v.to(self.dtype)
        z = self._z(at)
        tail = (self.theta if at is None else at)[n1:]
        dz = F.linear(self.x, v[:n_w].view(self.shapes[0]), v[n_w:n1])
        g_z, g_tail = self._hvp_of_z(z, tail, dz, v[n1:])
        return torch.cat([(g_z.t() @ self.x).flatten(), g_z.sum(0), g_tail])

    def tail_hvp(self, v_tail: torch.Tensor) -> torch.Tensor:
        """H_tail v for the parameters after fc1 (flat order), at the model's parameters: with fc1 fixed, z is a
        constant and the (samples x in_features x hidden) first layer is not touched at all."""
        return self._hvp_of_z(self._z(None), self.theta[self.fc1_size :], None, v_tail.to(self.dtype))[1]
