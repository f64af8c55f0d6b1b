"""Gradient histograms: the bit-shift binning equals numpy.histogram on the same values; stacked rows count alone."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from normscape.training.grad_histograms import GradHistogram, count_codes, octave_edges


def test_edges_are_octaves_split_evenly():
    edges = octave_edges(1e-3, 1.0, 4)
    assert edges[0] == 2.0**-10 and edges[-1] == 1.0
    np.testing.assert_allclose(edges[:5], 2.0**-10 * np.array([1, 1.25, 1.5, 1.75, 2]))
    assert len(edges) == 10 * 4 + 1


def test_counts_equal_numpy_histogram():
    rng = np.random.default_rng(0)
    sizes = [1000, 37, 5, 0, 3]  # an empty parameter segment too
    hist = GradHistogram(["a", "b", "c", "d", "e"], sizes, 1e-6, 10.0, 4)
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


def test_epochs_are_independent():
    hist = GradHistogram(["w"], [4], 1e-3, 1.0, 1)
    hist.update(torch.tensor([0.1, 0.1, 0.5, 2.0]))
    first = hist.close_epoch()["w"]
    hist.update(torch.tensor([0.01, 0.0, float("nan"), 0.3]))
    second = hist.close_epoch()["w"]
    assert first["counts"].sum() == 3 and first["overflow"] == 1
    assert second["counts"].sum() == 2 and second["underflow"] == 1 and second["overflow"] == 1
    assert hist.stacked("w")["counts"].shape == (2, len(hist.edges) - 1)


@pytest.mark.parametrize("shape", [(7, 5), (1280, 16)], ids=["small", "counted-in-lanes"])
def test_stacked_rows_count_as_each_row_alone_whatever_the_layout(shape):
    # a Linear weight's gradient is stored transposed in the stack: the counts must not care. A large one is counted
    # in interleaved sub-histograms; long runs of zeros (a dead unit's gradient) and negatives must still land in
    # the same bins as numpy's
    torch.manual_seed(0)
    weight = torch.randn(3, *shape) * 10.0 ** torch.empty(3, *shape).uniform_(-8, 1)
    weight[0, :, : shape[1] // 2] = 0.0
    weight[2, : shape[0] // 3] = -0.0
    weight = weight.transpose(1, 2).contiguous().transpose(1, 2)  # (3, in, out) stored as (3, out, in)
    bias = torch.randn(3, 4)
    bias[1, 2] = float("nan")
    hist = GradHistogram(["w", "b"], [weight[0].numel(), 4], 1e-6, 10.0, 4)
    stacked = count_codes([weight, bias], hist.shift, hist.n_codes)
    assert stacked.shape == (3, 2, hist.n_codes)
    for row in range(3):
        alone = count_codes([weight[row : row + 1].contiguous(), bias[row : row + 1]], hist.shift, hist.n_codes)
        assert torch.equal(stacked[row], alone[0])
        values = torch.cat([weight[row].reshape(-1), bias[row]]).abs().double().numpy()
        finite = values[np.isfinite(values)]
        expected, _ = np.histogram(finite, hist.edges)
        counts = stacked[row].sum(0)[hist.lo_code : hist.hi_code].numpy()
        np.testing.assert_array_equal(counts, expected)
        assert int(stacked[row].sum()) == weight[0].numel() + 4  # every element once, NaN included (overflow)
        below = int((weight[row].abs() < hist.edges[0]).sum())  # zeros of either sign included
        assert int(stacked[row, 0, : hist.lo_code].sum()) == below


class _CountingProbe:
    """Counts, on the steps it is called for, the gradient its run hands Adam (what the trainer's histogram counts)."""

    def __init__(self, hist: GradHistogram, every: int, steps_per_epoch: int):
        self.hist, self.every, self.steps_per_epoch, self.steps = hist, every, steps_per_epoch, []

    def wants(self, step: int) -> bool:
        return step % self.steps_per_epoch % self.every == 0

    def __call__(self, view, step, xb, yb):
        self.steps.append(step)
        self.hist.update(view.flat_grad)


def test_every_kth_step_is_counted_exactly_and_training_is_unchanged():
    from normscape.training.trainer import Trainer

    torch.manual_seed(0)
    x = torch.randn(200, 12)
    y = (x[:, 0] > 0).long() + (x[:, 1] > 0).long()
    data = {"train": (x, y), "val": (x[:50], y[:50]), "test": (x[:50], y[:50])}
    settings = {"min": 1e-9, "max": 10.0, "bins_per_octave": 4}
    kwargs = dict(norm="batch", seeds=[0, 1], epochs=2, batch_size=32, lr=1e-2, hidden=8)
    every_step = Trainer(data, grad_hist=settings, **kwargs)
    every_step.fit()
    reference = [GradHistogram(every_step.names, every_step.stack.sizes, 1e-9, 10.0, 4) for _ in range(2)]
    probes = [_CountingProbe(hist, 3, 7) for hist in reference]
    every_third = Trainer(data, grad_hist={**settings, "every": 3}, probe=probes, **kwargs)
    every_third.fit()
    assert probes[0].steps == [0, 3, 6, 7, 10, 13]  # 7 steps per epoch: each epoch's from its first
    for run_all, run_third, hist in zip(every_step.runs, every_third.runs, reference):
        assert run_all.metrics == [
            {**m, "epoch_time_s": a["epoch_time_s"]} for m, a in zip(run_third.metrics, run_all.metrics)
        ]
        hist.close_epoch()  # the probe's counts of both epochs in one
        for name in every_step.names:
            counted = run_third.hist.stacked(name)
            np.testing.assert_array_equal(counted["counts"].sum(0), hist.epochs[0][name]["counts"])
            per_epoch = counted["counts"].sum(1) + counted["underflow"] + counted["overflow"]
            size = every_third.stack.sizes[every_step.names.index(name)]
            assert per_epoch.tolist() == [3 * size, 3 * size]  # three steps counted in each epoch
            assert run_all.hist.stacked(name)["counts"].sum() > counted["counts"].sum()
