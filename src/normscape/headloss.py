"""The training loss of a head as a function of ONE flat parameter vector: the object the diagnostics probe.

:mod:`normscape.spectrum` (Hessian spectrum), :mod:`normscape.adaptive_sharpness` and
:mod:`normscape.smoothness` all need the loss, its gradient and Hessian-vector products at arbitrary
parameters, in a chosen precision and — for BatchNorm — in a chosen *mode*:

* ``eval``: BatchNorm normalises with its running statistics (the function the landscapes show);
* ``train``: BatchNorm normalises every consecutive chunk of ``batch_size`` samples with that chunk's own
  statistics, and the loss is the mean over chunks: the function the optimiser actually descends (each step
  sees one mini-batch's statistics). The running statistics are never updated.

For every other norm the two modes are the same function (their statistics are per sample). Dropout is always
off so the function is deterministic (the study's default dropout is 0). The model is copied, never modified.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch.func import functional_call, grad, grad_and_value, jvp

from normscape.heads import ClassifierHead, is_norm_parameter

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
        self._grad = grad(self.loss)
        self._grad_and_value = grad_and_value(self.loss)

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
        norm = self.model.norm
        if self.batch_stats:
            zc = z.view(self.chunks, self.chunk_size, -1)
            mean = zc.mean(1, keepdim=True)
            var = zc.var(1, unbiased=False, keepdim=True)  # as BatchNorm1d normalises in training
            h = ((zc - mean) * torch.rsqrt(var + norm.eps)).view_as(z) * p["norm.weight"] + p["norm.bias"]
        else:
            norm_params = {n[len("norm.") :]: t for n, t in p.items() if is_norm_parameter(n)}
            h = functional_call(norm, norm_params, (z,)) if norm_params else norm(z)
        return F.linear(torch.relu(h), p["fc2.weight"], p["fc2.bias"])

    def loss(self, flat: torch.Tensor) -> torch.Tensor:
        # equal chunks: the mean over all samples IS the mean of the per-chunk mean losses
        return F.cross_entropy(self.logits(flat), self.y)

    def grad(self, flat: torch.Tensor) -> torch.Tensor:
        return self._grad(flat)

    def value_and_grad(self, flat: torch.Tensor) -> tuple[float, torch.Tensor]:
        g, value = self._grad_and_value(flat)
        return float(value), g

    def hvp(self, v: torch.Tensor, at: torch.Tensor | None = None) -> torch.Tensor:
        """Exact Hessian-vector product (forward-over-reverse) at ``at`` (default: the model's parameters)."""
        return jvp(self._grad, (self.theta if at is None else at,), (v,))[1]

    # ----------------------------------------------------------------------------------------- fast path
    # The Hessian block of the parameters after fc1 (norm, fc2) does not need the (samples x 1280 x hidden)
    # first layer at all: with fc1 fixed, its pre-activations z are constants. tail_hvp equals the full hvp
    # restricted to those parameters (tests/test_spectrum.py) at a few percent of its cost.
    @property
    def fc1_size(self) -> int:
        return sum(size for n, size in zip(self.names, self.sizes) if n.startswith("fc1."))

    def tail_hvp(self, v_tail: torch.Tensor) -> torch.Tensor:
        """H_tail v for the parameters after fc1 (flat order), at the model's parameters."""
        if not hasattr(self, "_tail_grad"):
            n1 = self.fc1_size
            head = self.theta[:n1]
            p = self.unflatten(self.theta)
            z = F.linear(self.x, p["fc1.weight"], p["fc1.bias"]).detach()

            def tail_loss(tail):
                return F.cross_entropy(self._after_fc1(self.unflatten(torch.cat([head, tail])), z), self.y)

            self._tail_grad = grad(tail_loss)
        tail = self.theta[self.fc1_size :]
        return jvp(self._tail_grad, (tail,), (v_tail.to(self.dtype),))[1]
