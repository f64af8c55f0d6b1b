"""Head training as the study runs it: a condition's seeds trained as one group vs each seed trained alone, the
share of a step spent on gradient histograms, and what flushing subnormal floats saves per head.

Features: a real feature cache when ``NORMSCAPE_BENCH_FEATURES`` names one (results/features/features.h5 of a
study; rows = the first ``rows`` training rows), synthetic rectified Gaussian features otherwise — every result
says which (``features``). The grouped and separate trainers run interleaved epoch by epoch and each side is
timed by its fastest epoch (timeit's convention: these shared machines have slow phases lasting seconds to
minutes, and noise only ever adds time).
"""

from __future__ import annotations

import os
import time

import numpy as np
import torch

from benchmarks.bench_contention import STAGE_THREADS
from benchmarks.common import result
from normscape.training import trainer as train_module
from normscape.training.trainer import Trainer

FEATURES_ENV = "NORMSCAPE_BENCH_FEATURES"
# the study's heads and learning rates whose epoch time subnormals changed (issue #26): (norm, lr)
SUBNORMAL_CASES = (("none", 1e-2), ("frn", 1e-3), ("none", 1e-3), ("batch", 1e-3))
SMALLEST_NORMAL = float(torch.finfo(torch.float32).tiny)


def make_data(n: int) -> tuple[dict, str]:
    path = os.environ.get(FEATURES_ENV)
    if path:
        from normscape.training.job import load_features

        full = load_features(path)
        x, y = full["train"]
        return {"train": (x[:n].clone(), y[:n].clone()), "val": full["val"], "test": full["test"]}, f"real: {path}"
    rng = np.random.default_rng(0)
    x = torch.from_numpy(np.maximum(rng.normal(size=(n, 1280)).astype(np.float32), 0))
    y = torch.from_numpy(rng.integers(0, 10, n))
    return {"train": (x, y), "val": (x[:8000], y[:8000]), "test": (x[:2000], y[:2000])}, "synthetic"


# the study's heads and learning rates the grouped engine is timed on: (norm, lr)
GROUPED_CASES = (("batch", 1e-3), ("none", 1e-2), ("frn", 1e-3))


def grouped_vs_separate(data: dict, norm: str, lr: float, seeds: int, epochs: int) -> tuple[list[float], list[float]]:
    """Epoch times of ``seeds`` heads of one condition as one group, and of the same seeds as lone trainers
    (summed)."""
    group = Trainer(data, norm, list(range(seeds)), epochs, 64, lr)
    alone = [Trainer(data, norm, seed, epochs, 64, lr) for seed in range(seeds)]
    group_s, alone_s = [], []
    for epoch in range(1, epochs + 1):
        t0 = time.perf_counter()
        group.train_epoch(epoch)
        group_s.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        for trainer in alone:
            trainer.train_epoch(epoch)
        alone_s.append(time.perf_counter() - t0)
    return group_s, alone_s


# the heads whose histogram share is measured: BatchNorm with clipping (experiment 2), and the no-norm head at lr
# 1e-2, whose fc1 gradient is mostly exact zeros (dead units) on the real features
HISTOGRAM_CASES = (("batch", 1e-3, 1.0), ("none", 1e-2, None))


def histogram_share(data: dict, seeds: int, norm: str, lr: float, clip: float | None) -> dict:
    """Fastest time inside the histogram counting / fastest epoch, in a group of ``seeds`` (one epoch each of
    two runs)."""
    shares = []
    count = train_module.count_codes
    for _ in range(2):
        trainer = Trainer(data, norm, list(range(seeds)), 1, 64, lr, clip_grad_norm=clip)
        inside = [0.0]

        def timed(*args, inside=inside):
            t0 = time.perf_counter()
            out = count(*args)
            inside[0] += time.perf_counter() - t0
            return out

        train_module.count_codes = timed  # the trainer's own call, timed where it happens
        try:
            t0 = time.perf_counter()
            trainer.train_epoch(1)
            shares.append((inside[0], time.perf_counter() - t0))
        finally:
            train_module.count_codes = count
    return {"share": min(s for s, _ in shares) / min(e for _, e in shares), "epochs": shares}


def subnormal_counts(trainer: Trainer) -> dict[str, int]:
    """Subnormal elements in the parameters and in Adam's moments: where they come from."""
    tensors = {"parameters": trainer.flat_param}
    moments = trainer.run_moments(0) or {}
    for key in ("exp_avg", "exp_avg_sq"):
        if key in moments:
            tensors[f"adam_{key}"] = moments[key]
    return {k: int(((v != 0) & (v.abs() < SMALLEST_NORMAL)).sum()) for k, v in tensors.items()}


def after_first_epoch(epochs_s: list[float]) -> float:
    """The mean epoch time after the first (all epochs when there is one). Subnormals appear from the second epoch
    on: Adam's first moment of a weight whose gradient stays zero (a dead unit's) decays by beta1 every step and
    falls below float32's smallest normal after ~700 steps; the fastest epoch, this suite's rule elsewhere, would
    be the first and hide them."""
    later = epochs_s[1:] or epochs_s
    return sum(later) / len(later)


def subnormal_epochs(data: dict, norm: str, lr: float, epochs: int) -> dict:
    """Epoch times of one head with subnormals kept and flushed (the same trainer setup, run twice)."""
    out = {}
    for flush in (False, True):
        trainer = Trainer(data, norm, 0, epochs, 64, lr)
        torch.set_flush_denormal(flush)
        times = []
        for epoch in range(1, epochs + 1):
            t0 = time.perf_counter()
            trainer.train_epoch(epoch)
            times.append(time.perf_counter() - t0)
        out["flushed" if flush else "kept"] = {"epochs_s": times, "subnormals_at_end": subnormal_counts(trainer)}
    torch.set_flush_denormal(True)
    return out


def run(quick: bool) -> list[dict]:
    torch.set_num_threads(STAGE_THREADS["training"])  # what the rule's jobs get (with the job environment)
    rows, epochs, seeds, sub_epochs = (2000, 1, 2, 1) if quick else (50000, 3, 5, 3)
    data, features = make_data(rows)
    results = []
    for norm, lr in GROUPED_CASES:
        group_s, alone_s = grouped_vs_separate(data, norm, lr, seeds, epochs)
        results.append(
            result(
                "train_15_epochs" if norm == "batch" else f"train_15_epochs_{norm}_lr{lr:g}",
                min(group_s) * 15 / seeds,
                "s",
                min(alone_s) * 15 / seeds,
                "grouped faster than separate",
                False,
                features=features,
                rows=rows,
                seeds=seeds,
                group_epochs_s=group_s,
                separate_epochs_s=alone_s,
                timing="per run: fastest epoch of the group (or of the separate trainers together) x 15 / seeds",
            )
        )
    for norm, lr, clip in HISTOGRAM_CASES:
        hist = histogram_share(data, seeds, norm, lr, clip)
        results.append(
            result(
                "grad_histogram_overhead" if norm == "batch" else f"grad_histogram_overhead_{norm}_lr{lr:g}",
                hist["share"],
                "fraction",
                None,
                "<= 0.10 of training time",
                False,
                features=features,
                norm=norm,
                lr=lr,
                clip_grad_norm=clip,
                epochs=hist["epochs"],
            )
        )
    for norm, lr in SUBNORMAL_CASES:
        measured = subnormal_epochs(data, norm, lr, sub_epochs)
        results.append(
            result(
                f"subnormal_flush_{norm}_lr{lr:g}",
                after_first_epoch(measured["flushed"]["epochs_s"]),
                "s",
                after_first_epoch(measured["kept"]["epochs_s"]),
                "flushed no slower",
                False,
                features=features,
                rows=rows,
                **measured,
            )
        )
    return results
