"""What counting the gradient histograms on every 4th step (``grad_hist.every: 4``) saves and what it loses.

The study counts every step. Sampling steps shortens an epoch, and the histogram's shape stays close, but the mean
and the maximum of |g| per epoch are carried by rare large steps where a layer's gradient spikes, and a sample of
steps misses them. Each case trains the same seeds twice, counting every step and every 4th (the training is the
same: counting reads the gradients and changes nothing), and compares their per-epoch histograms run by run.
"""

from __future__ import annotations

import time

import numpy as np

from benchmarks.bench_train import make_data
from benchmarks.common import result
from normscape.training.trainer import Trainer

EVERY = 4
# the study's heads where the gradients differ most in kind: BatchNorm, FRN (spiking fc1 gradients), the no-norm
# head at lr 1e-2 (fc1's gradient mostly exact zeros)
CASES = (("batch", 1e-3), ("frn", 1e-3), ("none", 1e-2))


def train_counting(data: dict, norm: str, lr: float, seeds: int, epochs: int, every: int) -> tuple[list, list[float]]:
    """Each run's histograms and the group's epoch times, counting every ``every``-th step."""
    grad_hist = {"min": 1e-9, "max": 10.0, "bins_per_octave": 4, "every": every}
    trainer = Trainer(data, norm, list(range(seeds)), epochs, 64, lr, grad_hist=grad_hist)
    times = []
    for epoch in range(1, epochs + 1):
        t0 = time.perf_counter()
        trainer.train_epoch(epoch)
        times.append(time.perf_counter() - t0)
    return [run.hist for run in trainer.runs], times


def with_out_of_range(epoch: dict) -> np.ndarray:
    return np.append(epoch["counts"], [epoch["underflow"], epoch["overflow"]]).astype(np.float64)


def compare(every_step: list, sampled: list) -> dict:
    """Per layer, over runs and epochs: relative error of mean |g| and max |g| (median, max), and the total
    variation distance between the two normalised histograms (median, max)."""
    errors: dict[str, dict[str, list[float]]] = {}
    for full_hist, sample_hist in zip(every_step, sampled):
        for full, sample in zip(full_hist.epochs, sample_hist.epochs):
            for name in full:
                layer = errors.setdefault(name, {"mean_abs": [], "max_abs": [], "total_variation": []})
                a, b = with_out_of_range(full[name]), with_out_of_range(sample[name])
                if a.sum() and b.sum():
                    layer["total_variation"].append(0.5 * float(np.abs(a / a.sum() - b / b.sum()).sum()))
                for key in ("mean_abs", "max_abs"):
                    want, got = full[name][key], sample[name][key]
                    if np.isfinite(want) and want != 0:  # NaN: nothing counted in range (a gradient always zero)
                        # a sample that counted nothing in range missed the whole layer: error 1
                        layer[key].append(abs(got / want - 1) if np.isfinite(got) else 1.0)
    return {
        name: {key: {"median": float(np.median(v)), "max": float(max(v))} for key, v in layer.items() if v}
        for name, layer in errors.items()
    }


def run(quick: bool) -> list[dict]:
    rows, epochs, seeds = (2000, 2, 2) if quick else (50000, 3, 5)
    data, features = make_data(rows)
    results = []
    for norm, lr in CASES:
        every_step, every_step_s = train_counting(data, norm, lr, seeds, epochs, 1)
        sampled, sampled_s = train_counting(data, norm, lr, seeds, epochs, EVERY)
        layers = compare(every_step, sampled)
        worst = max(errors["mean_abs"]["max"] for errors in layers.values() if "mean_abs" in errors)
        results.append(
            result(
                f"grad_histogram_every{EVERY}_{norm}_lr{lr:g}",
                worst,
                "relative error",
                None,
                "informational: the study counts every step",
                False,
                features=features,
                rows=rows,
                seeds=seeds,
                measures="largest relative error of a layer's per-epoch mean |g| (any run, any epoch)",
                layers=layers,
                epoch_s={"every_step": every_step_s, f"every_{EVERY}": sampled_s},
                timing="epochs of the two groups one after the other (the second epoch on is the steady state)",
            )
        )
    return results
