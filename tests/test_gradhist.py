"""Gradient histograms: the bit-shift binning equals numpy.histogram on the same values, for both backends."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from normscape import gradhist
from normscape.gradhist import GradHistogram, octave_edges

BACKENDS = ["native", "torch"]


def test_edges_are_octaves_split_evenly():
    edges = octave_edges(1e-3, 1.0, 4)
    assert edges[0] == 2.0**-10 and edges[-1] == 1.0
    np.testing.assert_allclose(edges[:5], 2.0**-10 * np.array([1, 1.25, 1.5, 1.75, 2]))
    assert len(edges) == 10 * 4 + 1


def test_native_kernel_is_built():
    # `pip install -e .` compiles src/normscape/_gradhist.c; without it training falls back to the slower torch path
    assert gradhist._native is not None, "normscape._gradhist is not built: pip install -e . with a C compiler"


@pytest.mark.parametrize("backend", BACKENDS)
def test_counts_equal_numpy_histogram(backend):
    rng = np.random.default_rng(0)
    sizes = [1000, 37, 5, 0, 3]  # an empty parameter segment too
    hist = GradHistogram(["a", "b", "c", "d", "e"], sizes, 1e-6, 10.0, 4, backend=backend)
    steps = []
    for _ in range(3):
        flat = torch.from_numpy(
            (rng.standard_normal(sum(sizes)) * 10.0 ** rng.uniform(-8, 1.5, sum(sizes))).astype(np.float32)
        )
        flat[::97] = 0.0  # zeros -> underflow
        flat[5], flat[11], flat[-1] = float("nan"), -float("inf"), -0.0  # non-finite -> overflow
        steps.append(flat.numpy().copy())
        hist.update(flat)
    epoch = hist.close_epoch()
    all_steps = np.stack(steps)
    start = 0
    for name, n in zip(["a", "b", "c", "d", "e"], sizes):
        values = np.abs(all_steps[:, start : start + n].astype(np.float64)).ravel()
        start += n
        finite = values[np.isfinite(values)]
        expected, _ = np.histogram(finite, hist.edges)
        inside = (values >= hist.edges[0]) & (values < hist.edges[-1])
        # np.histogram's last bin is closed on the right; no value sits exactly on the top edge here.
        np.testing.assert_array_equal(epoch[name]["counts"], expected)
        assert epoch[name]["underflow"] == int((values < hist.edges[0]).sum())
        assert epoch[name]["overflow"] == int((~(values < hist.edges[-1])).sum())  # NaN and inf included
        assert epoch[name]["counts"].sum() == inside.sum()
        assert epoch[name]["counts"].sum() + epoch[name]["underflow"] + epoch[name]["overflow"] == values.size
        # summaries are estimates within one bin: max_abs is the upper edge of the bin holding the largest value
        if inside.any():
            top = values[inside].max()
            assert epoch[name]["max_abs"] == hist.edges[np.searchsorted(hist.edges, top, side="right")]


@pytest.mark.parametrize("backend", BACKENDS)
def test_epochs_are_independent(backend):
    hist = GradHistogram(["w"], [4], 1e-3, 1.0, 1, backend=backend)
    hist.update(torch.tensor([0.1, 0.1, 0.5, 2.0]))
    first = hist.close_epoch()["w"]
    hist.update(torch.tensor([0.01, 0.0, float("nan"), 0.3]))
    second = hist.close_epoch()["w"]
    assert first["counts"].sum() == 3 and first["overflow"] == 1
    assert second["counts"].sum() == 2 and second["underflow"] == 1 and second["overflow"] == 1
    assert hist.stacked("w")["counts"].shape == (2, len(hist.edges) - 1)


def test_native_kernel_rejects_inconsistent_buffers():
    counts = np.zeros(2 * 1024, dtype=np.int64)
    values = np.ones(10, dtype=np.float32)
    native = gradhist._native
    with pytest.raises(ValueError, match="n_codes"):
        native.count_codes(values, np.array([4, 10], dtype=np.int64), 21, 512, counts)
    with pytest.raises(ValueError, match="run past"):
        native.count_codes(values, np.array([4, 11], dtype=np.int64), 21, 1024, counts)
    with pytest.raises(ValueError, match="ascend"):
        native.count_codes(values, np.array([6, 4], dtype=np.int64), 21, 1024, counts)
    with pytest.raises(ValueError, match="n_segments"):
        native.count_codes(values, np.array([10], dtype=np.int64), 21, 1024, counts)
    assert not counts.any()  # nothing counted on error
    native.count_codes(values, np.array([4, 10], dtype=np.int64), 21, 1024, counts)
    one = np.array([1.0], dtype=np.float32).view(np.int32)[0] >> 21
    assert counts[one] == 4 and counts[1024 + one] == 6 and counts.sum() == 10


def test_unknown_backend_is_refused():
    with pytest.raises(ValueError, match="backend"):
        GradHistogram(["w"], [4], 1e-3, 1.0, 1, backend="gpu")
