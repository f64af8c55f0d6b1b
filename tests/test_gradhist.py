"""Gradient histograms: the bit-shift binning equals numpy.histogram on the same values."""

from __future__ import annotations

import numpy as np
import torch

from normscape.gradhist import GradHistogram, octave_edges


def test_edges_are_octaves_split_evenly():
    edges = octave_edges(1e-3, 1.0, 4)
    assert edges[0] == 2.0 ** -10 and edges[-1] == 1.0
    np.testing.assert_allclose(edges[:5], 2.0 ** -10 * np.array([1, 1.25, 1.5, 1.75, 2]))
    assert len(edges) == 10 * 4 + 1


def test_counts_equal_numpy_histogram():
    rng = np.random.default_rng(0)
    sizes = [1000, 37, 5]
    hist = GradHistogram(["a", "b", "c"], sizes, 1e-6, 10.0, 4)
    steps = []
    for _ in range(3):
        flat = torch.from_numpy((rng.standard_normal(sum(sizes)) * 10.0 ** rng.uniform(-8, 1.5, sum(sizes)))
                                .astype(np.float32))
        flat[::97] = 0.0  # zeros -> underflow
        steps.append(flat.numpy().copy())
        hist.update(flat)
    epoch = hist.close_epoch()
    all_steps = np.stack(steps)
    start = 0
    for name, n in zip(["a", "b", "c"], sizes):
        values = np.abs(all_steps[:, start:start + n].astype(np.float64)).ravel()
        start += n
        expected, _ = np.histogram(values, hist.edges)
        inside = (values >= hist.edges[0]) & (values < hist.edges[-1])
        # np.histogram's last bin is closed on the right; no value sits exactly on the top edge here.
        np.testing.assert_array_equal(epoch[name]["counts"], expected)
        assert epoch[name]["underflow"] == int((values < hist.edges[0]).sum())
        assert epoch[name]["overflow"] == int((values >= hist.edges[-1]).sum())
        assert epoch[name]["counts"].sum() == inside.sum()
        # summaries are estimates within one bin (quarter octave)
        top = values[inside].max()
        assert top <= epoch[name]["max_abs"] <= top * 2 ** 0.25 * 1.0001 or epoch[name]["overflow"]


def test_epochs_are_independent():
    hist = GradHistogram(["w"], [4], 1e-3, 1.0, 1)
    hist.update(torch.tensor([0.1, 0.1, 0.5, 2.0]))
    first = hist.close_epoch()["w"]
    hist.update(torch.tensor([0.01, 0.0, float("nan"), 0.3]))
    second = hist.close_epoch()["w"]
    assert first["counts"].sum() == 3 and first["overflow"] == 1
    assert second["counts"].sum() == 2 and second["underflow"] == 1 and second["overflow"] == 1
    assert hist.stacked("w")["counts"].shape == (2, len(hist.edges) - 1)
