"""Head training: our engine vs the way most code does it, in the same process on the same data.

Naive: DataLoader(TensorDataset) with shuffling, default Adam, ``clip_grad_norm_``, and a per-step
``torch.histc`` of every parameter's gradient (what ``wandb.watch`` does). Ours: normscape.train.Trainer
(index slicing, flat gradient buffer, fused Adam, bit-shift histograms of every element). Both train the
BatchNorm head (hidden 256) at batch 64 with clipping at 1.0 on 50,000 x 1280 synthetic features.
"""

from __future__ import annotations

import time

import numpy as np
import torch
import torch.nn.functional as F

from benchmarks.common import result
from normscape.heads import build_head
from normscape.train import Trainer


def make_data(n: int) -> dict:
    rng = np.random.default_rng(0)
    x = torch.from_numpy(np.maximum(rng.normal(size=(n, 1280)).astype(np.float32), 0))
    y = torch.from_numpy(rng.integers(0, 10, n))
    return {"train": (x, y), "val": (x[:8000], y[:8000]), "test": (x[:2000], y[:2000])}


def naive_epochs(data: dict, epochs: int, histograms: bool = True) -> float:
    from torch.utils.data import DataLoader, TensorDataset

    torch.manual_seed(0)
    model = build_head("batch")
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    loader = DataLoader(TensorDataset(*data["train"]), batch_size=64, shuffle=True)
    t0 = time.perf_counter()
    for _ in range(epochs):
        model.train()
        for xb, yb in loader:
            opt.zero_grad()
            F.cross_entropy(model(xb), yb).backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            if histograms:
                for p in model.parameters():
                    torch.histc(p.grad.abs().clamp_min(1e-12).log10(), bins=64, min=-12, max=1)
            opt.step()
        model.eval()
        with torch.no_grad():
            model(data["val"][0]).argmax(1)
    return time.perf_counter() - t0


def ours(data: dict, epochs: int, histograms: bool = True) -> float:
    trainer = Trainer(data, "batch", 0, epochs, 64, 1e-3, clip_grad_norm=1.0)
    if not histograms:
        trainer.hist.update = lambda flat: None
    t0 = time.perf_counter()
    trainer.fit()
    return time.perf_counter() - t0


def run(quick: bool) -> list[dict]:
    torch.set_num_threads(2)
    n, epochs, naive_epochs_measured = (4000, 1, 1) if quick else (50000, 15, 2)
    data = make_data(n)
    t_ours = ours(data, epochs)
    t_ours_nohist = ours(data, min(epochs, 3))
    t_ours_nohist_only = ours(data, min(epochs, 3), histograms=False)
    # The naive loop is measured for a few epochs and scaled to the same epoch count (per-epoch cost is flat).
    t_naive = naive_epochs(data, naive_epochs_measured) * epochs / naive_epochs_measured
    overhead = max(t_ours_nohist - t_ours_nohist_only, 0.0) / t_ours_nohist
    return [
        result("train_15_epochs", t_ours, "s", t_naive, "<= 20 s and >= 2x naive", False, epochs=epochs, rows=n,
               naive_epochs_measured=naive_epochs_measured, batch_size=64, hidden=256, clipping=1.0),
        result("grad_histogram_overhead", overhead, "fraction", None, "<= 0.15 of training time", False,
               note="(time with histograms - time without) / time with, 3 epochs each, same process"),
    ]
