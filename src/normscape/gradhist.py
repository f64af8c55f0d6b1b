"""Gradient-magnitude histograms accumulated on the fly, per parameter and epoch, at ~integer-op cost.

Bins. Every octave [2^e, 2^(e+1)) between ``min`` and ``max`` (rounded out to powers of two) is split into
``bins_per_octave`` equal-width bins. Those edges are exactly the float32 values whose low mantissa bits are
zero, so the bin of |g| is just ``bits(|g|) >> (23 - log2(bins_per_octave))`` — an integer shift of the float's
bit pattern. The trainer keeps all gradients in one flat buffer, so a step's histogram is one pass over it:
the native kernel ``normscape._gradhist`` (C, built at install; one read and one counter increment per element,
~0.13 ms for the 331k gradients of the default head) or, where it could not be built, three elementwise torch
ops and ONE ``bincount`` for all parameters (each parameter's codes offset into its own range; ~2x slower).
Both are ~30x cheaper than ``torch.bucketize`` on log-spaced edges and exactly equal to
``numpy.histogram(|g|, edges)`` (tested), so the histogram of *every* gradient element of *every* step costs
little (benchmarks/bench_train.py measures it).

Counts cover the whole float32 exponent range (no clamping per step); values below ``min`` (zeros included)
are reported as underflow, values at or above ``max`` (inf/nan too) as overflow, when an epoch is closed.
"""

from __future__ import annotations

import logging
import math

import numpy as np
import torch

try:
    from normscape import _gradhist as _native
except ImportError:  # not built (no C compiler at install, or running from a source tree): torch fallback
    _native = None

log = logging.getLogger(__name__)

MANTISSA_BITS = 23
BACKENDS = ("auto", "native", "torch")


def default_backend() -> str:
    """``native`` where the C kernel is built, else ``torch``."""
    return "native" if _native is not None else "torch"


def octave_edges(min_value: float, max_value: float, bins_per_octave: int) -> np.ndarray:
    """Bin edges: octaves 2^e .. 2^E (covering [min, max]) each split into ``bins_per_octave`` equal parts."""
    if bins_per_octave < 1 or bins_per_octave & (bins_per_octave - 1):
        raise ValueError(f"bins_per_octave must be a power of two, got {bins_per_octave}")
    lo = math.floor(math.log2(min_value))
    hi = math.ceil(math.log2(max_value))
    edges = [2.0**e * (1 + j / bins_per_octave) for e in range(lo, hi) for j in range(bins_per_octave)]
    return np.array(edges + [2.0**hi], dtype=np.float64)


class GradHistogram:
    """Per-parameter |grad| histograms; call :meth:`update` after each backward, :meth:`close_epoch` per epoch."""

    def __init__(
        self,
        names: list[str],
        sizes: list[int],
        min_value: float,
        max_value: float,
        bins_per_octave: int,
        backend: str = "auto",
    ):
        if backend not in BACKENDS:
            raise ValueError(f"unknown histogram backend {backend!r}; choose one of {BACKENDS}")
        if backend == "auto":
            backend = default_backend()
            if backend == "torch":
                log.info("native histogram kernel not built: counting with torch.bincount (same counts, slower)")
        elif backend == "native" and _native is None:
            raise RuntimeError(
                "the native histogram kernel normscape._gradhist is not built: reinstall with a C "
                "compiler (pip install -e .) or use backend='torch'"
            )
        self.backend = backend
        self.names = list(names)
        self.sizes = [int(n) for n in sizes]
        self.edges = octave_edges(min_value, max_value, bins_per_octave)
        self.shift = MANTISSA_BITS - int(math.log2(bins_per_octave))
        # Fine-bin code of the lowest and the highest edge: code(2^e) = (e + 127) << (23 - shift)
        self.lo_code = self._code(self.edges[0])
        self.hi_code = self._code(self.edges[-1])
        self.n_codes = 1 << (31 - self.shift)  # every non-negative float32 bit pattern >> shift
        self.num_bins = self.hi_code - self.lo_code
        assert self.num_bins == len(self.edges) - 1
        self._running = torch.zeros(len(self.names) * self.n_codes, dtype=torch.int64)
        self._running_np = self._running.numpy()  # the same memory: the native kernel adds into it
        self._segment_ends = np.cumsum(self.sizes, dtype=np.int64)
        if self.backend == "torch":
            # Element i of the flat gradient belongs to parameter k: its codes are offset by k * n_codes, so ONE
            # bincount over the whole flat gradient fills every parameter's histogram.
            self._offsets = torch.repeat_interleave(
                torch.arange(len(self.names), dtype=torch.int32) * self.n_codes, torch.tensor(self.sizes)
            )
        self.epochs: list[dict] = []

    def _code(self, value: float) -> int:
        bits = np.array([value], dtype=np.float32).view(np.int32)[0]
        return int(bits) >> self.shift

    @torch.no_grad()
    def update(self, flat_grad: torch.Tensor) -> None:
        """Add every element of the flat gradient (parameters concatenated in ``names`` order)."""
        if self.backend == "native":
            values = flat_grad.detach()
            if values.dtype != torch.float32 or values.device.type != "cpu" or not values.is_contiguous():
                values = values.to("cpu", torch.float32).contiguous()
            _native.count_codes(values.numpy(), self._segment_ends, self.shift, self.n_codes, self._running_np)
            return
        if self._offsets.device != flat_grad.device:  # a head trained on a GPU: count there (no sync per step)
            self._offsets = self._offsets.to(flat_grad.device)
            self._running = self._running.to(flat_grad.device)
        # abs() clears the sign bit, so the shifted bit pattern of |g| is its fine bin code (NaN/inf: overflow).
        codes = (flat_grad.detach().abs().view(torch.int32) >> self.shift).add_(self._offsets)
        self._running += torch.bincount(codes, minlength=self._running.numel())

    def close_epoch(self) -> dict:
        """Freeze this epoch's histograms: {name: {counts, underflow, overflow, mean_abs, max_abs}}; reset."""
        epoch = {}
        running = self._running.view(len(self.names), self.n_codes).cpu()
        centers = np.sqrt(self.edges[:-1] * self.edges[1:])  # geometric bin centres
        for i, name in enumerate(self.names):
            counts = running[i, self.lo_code : self.hi_code].numpy().copy()
            nonzero = np.flatnonzero(counts)
            epoch[name] = {
                "counts": counts,
                "underflow": int(running[i, : self.lo_code].sum()),
                "overflow": int(running[i, self.hi_code :].sum()),
                # Summary statistics estimated from the histogram (exact to within one bin, ~±9% at 4 bins
                # per octave): computing them exactly per step would cost more than the histogram itself.
                "mean_abs": float((counts * centers).sum() / counts.sum()) if counts.sum() else float("nan"),
                "max_abs": float(self.edges[nonzero[-1] + 1]) if nonzero.size else float("nan"),
            }
        self._running.zero_()
        self.epochs.append(epoch)
        return epoch

    # ------------------------------------------------------------------ (de)serialisation for resume / HDF5
    def state_dict(self) -> dict:
        return {"epochs": self.epochs, "edges": self.edges}

    def load_state_dict(self, state: dict) -> None:
        if not np.array_equal(state["edges"], self.edges):
            raise ValueError("histogram bin edges differ from the checkpoint's")
        self.epochs = list(state["epochs"])

    def stacked(self, name: str) -> dict[str, np.ndarray]:
        """Arrays over epochs for one parameter: counts (E, bins), underflow, overflow, mean_abs, max_abs (E,)."""
        rows = [e[name] for e in self.epochs]
        return {
            "counts": np.stack([r["counts"] for r in rows]) if rows else np.zeros((0, self.num_bins), np.int64),
            "underflow": np.array([r["underflow"] for r in rows], dtype=np.int64),
            "overflow": np.array([r["overflow"] for r in rows], dtype=np.int64),
            "mean_abs": np.array([r["mean_abs"] for r in rows], dtype=np.float64),
            "max_abs": np.array([r["max_abs"] for r in rows], dtype=np.float64),
        }
