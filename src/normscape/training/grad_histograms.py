"""Gradient-magnitude histograms accumulated on the fly, per parameter and epoch, for every run of a stack at once.

Bins. Every octave [2^e, 2^(e+1)) between ``min`` and ``max`` (rounded out to powers of two) is split into
``bins_per_octave`` equal-width bins. Those edges are exactly the float32 values whose low mantissa bits are
zero, so the bin of |g| is the float's bit pattern shifted right by ``23 - log2(bins_per_octave)``: an integer
shift, no logarithm and no search (``torch.bucketize`` on log-spaced edges costs ~30x more). The sign is not
cleared first: an arithmetic shift sends -x to code(x) - n_codes, so one offset add moves both signs into range
and the halves are summed when an epoch is closed — two elementwise passes and ONE ``torch.bincount`` per
parameter tensor for all runs of the stack (:func:`count_codes`; each run has its own range of codes). Counts
equal ``numpy.histogram(|g|, edges)`` exactly (tests/test_gradhist.py). Counting *every* gradient element of
*every* step is a sizeable share of a head's step, which is otherwise two small GEMMs and Adam: the row
``grad_histogram_overhead`` of benchmarks/results.json measures it.

Counts cover the whole float32 exponent range (no clamping per step); values below ``min`` (zeros included)
are reported as underflow, values at or above ``max`` (inf/nan too) as overflow, when an epoch is closed.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch

MANTISSA_BITS = 23
# count_codes' interleaved sub-histograms of a large tensor: how many (one int32 vector register of AVX-512), the
# fewest elements per lane worth it, and the lanes' stride (counters): a multiple of LANE_ALIGN plus LANE_SKEW
LANES = 16
MIN_LANE_LENGTH = 512
LANE_ALIGN = 512
LANE_SKEW = 9


def octave_edges(min_value: float, max_value: float, bins_per_octave: int) -> np.ndarray:
    """Bin edges: octaves 2^e .. 2^E (covering [min, max]) each split into ``bins_per_octave`` equal parts."""
    if bins_per_octave < 1 or bins_per_octave & (bins_per_octave - 1):
        raise ValueError(f"bins_per_octave must be a power of two, got {bins_per_octave}")
    lo = math.floor(math.log2(min_value))
    hi = math.ceil(math.log2(max_value))
    edges = [2.0**e * (1 + j / bins_per_octave) for e in range(lo, hi) for j in range(bins_per_octave)]
    return np.array(edges + [2.0**hi], dtype=np.float64)


@torch.no_grad()
def count_codes(grads: Sequence[torch.Tensor], shift: int, n_codes: int) -> torch.Tensor:
    """Fine-bin counts of stacked gradients: ``grads`` one (S, *shape) float32 tensor per parameter (row s = run
    s, any strides); returns int64 (S, len(grads), n_codes), the count of each code of |g| per run and
    parameter. Each row is counted on its own, so a run's counts do not depend on the rows beside it."""
    rows = grads[0].shape[0]
    device = grads[0].device
    slots = rows * 2 * n_codes
    # code of -x is code(x) - n_codes (arithmetic shift of a negative bit pattern): offset so that both halves of
    # run s land in its own 2 * n_codes slots, then fold the halves.
    run_offsets = torch.arange(rows, dtype=torch.int32, device=device).view(-1, 1, 1) * (2 * n_codes) + n_codes
    # A large tensor is counted in LANES interleaved sub-histograms (element i in lane i % LANES). bincount adds
    # one element at a time, and a run of equal codes (the zero gradients of a dead unit: most of fc1's gradient
    # in some heads) makes each addition wait for the one before. The lanes lie a stride apart that is not a
    # multiple of 4 KiB: counters 4 KiB apart alias in the CPU's store buffer and serialise again.
    stride = -(-slots // LANE_ALIGN) * LANE_ALIGN + LANE_SKEW
    lane_offsets = torch.arange(LANES, dtype=torch.int32, device=device).view(1, 1, -1) * stride
    per_parameter = []
    for g in grads:
        flat = _rows_in_memory_order(g.detach())
        if flat.shape[1] == 0:
            per_parameter.append(torch.zeros(slots, dtype=torch.int64, device=device))
            continue
        lanes = LANES if flat.shape[1] % LANES == 0 and flat.shape[1] >= LANES * MIN_LANE_LENGTH else 1
        codes = flat.view(torch.int32).view(rows, -1, lanes) >> shift
        codes += run_offsets + lane_offsets[..., :lanes]
        counts = torch.bincount(codes.reshape(-1), minlength=lanes * stride).view(lanes, stride)
        per_parameter.append(counts[:, :slots].sum(0))
    total = torch.stack(per_parameter).view(len(grads), rows, 2, n_codes)
    return (total[:, :, 0] + total[:, :, 1]).transpose(0, 1).contiguous()


def _rows_in_memory_order(t: torch.Tensor) -> torch.Tensor:
    """(S, *shape) as (S, n) without a copy when each row is dense in memory in some order (e.g. a Linear weight's
    gradient stored transposed): the order of the elements does not matter to a histogram."""
    order = [0] + sorted(range(1, t.dim()), key=lambda d: -t.stride(d))
    permuted = t.permute(order)
    return permuted.reshape(t.shape[0], -1)


class GradHistogram:
    """One run's per-parameter |grad| histograms: :meth:`add` a step's counts (or :meth:`update` with the flat
    gradient), :meth:`close_epoch` once per epoch."""

    def __init__(self, names: list[str], sizes: list[int], min_value: float, max_value: float, bins_per_octave: int):
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
        self._running = torch.zeros(len(self.names), self.n_codes, dtype=torch.int64)
        self.epochs: list[dict] = []

    def _code(self, value: float) -> int:
        bits = np.array([value], dtype=np.float32).view(np.int32)[0]
        return int(bits) >> self.shift

    def add(self, counts: torch.Tensor) -> None:
        """Add one or more steps' counts, (len(names), n_codes) as :func:`count_codes` returns a row."""
        self._running += counts.to(self._running.device)

    def update(self, flat_grad: torch.Tensor) -> None:
        """Add every element of one flat gradient (parameters concatenated in ``names`` order)."""
        parts = flat_grad.detach().to(torch.float32).split(self.sizes)
        self.add(count_codes([part.unsqueeze(0) for part in parts], self.shift, self.n_codes)[0])

    def close_epoch(self) -> dict:
        """Freeze this epoch's histograms: {name: {counts, underflow, overflow, mean_abs, max_abs}}; reset."""
        epoch = {}
        running = self._running.cpu()
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
