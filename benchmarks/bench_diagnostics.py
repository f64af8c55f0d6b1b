"""Cost of the optimisation diagnostics on the study's head size (1280 -> 256 -> 10).

* smoothness probe: training epochs with and without the probe (every K steps), interleaved; overhead measured
  directly (time inside the probe / epoch time) and as the difference of the fastest epochs on each side;
* Hessian spectrum (SLQ + top-k + per-layer blocks) and adaptive sharpness of a trained head on 2,000 training
  samples, eval mode and BatchNorm's train mode, with the study's settings (config.yaml's hessian.spectrum and
  diagnostics.adaptive_sharpness).
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch

from benchmarks.common import result
from normscape.curvature.adaptive_sharpness import adaptive_sharpness
from normscape.curvature.head_loss import HeadLoss
from normscape.curvature.jobs import DTYPES
from normscape.curvature.smoothness import SmoothnessProbe
from normscape.curvature.spectrum import hessian_spectrum
from normscape.pipeline.config import load_config, spectrum_settings
from normscape.training.trainer import Trainer

REPO = Path(__file__).resolve().parents[1]


def study_settings(quick: bool) -> tuple[dict, dict]:
    """The spectrum and adaptive-sharpness settings of the default study (config.yaml, schema defaults filled);
    quick: two SLQ runs, one block probe, two noise samples (a smoke test of the same code, not its cost)."""
    cfg = load_config(REPO / "config.yaml")
    spec, sharp = spectrum_settings(cfg), cfg["diagnostics"]["adaptive_sharpness"]
    spectrum = {k: spec[k] for k in ("top_k", "slq_steps", "slq_runs", "block_steps", "block_probes")}
    adaptive = {k: sharp[k] for k in ("radii", "average_radii", "ball", "ascent_steps")}
    adaptive["samples"] = sharp["noise_samples"]
    if quick:
        spectrum.update(slq_runs=2, block_probes=1)
        adaptive["samples"] = 2
    return {**spectrum, "dtype": DTYPES[spec["dtype"]]}, {**adaptive, "dtype": DTYPES[sharp["dtype"]]}


def make_data(n: int) -> dict:
    rng = np.random.default_rng(0)
    # weakly separated classes: the head fits its training set only partly (like the real features), so the
    # Hessian is not the near-zero one of a perfectly classified set
    centers = rng.normal(0, 0.05, size=(10, 1280)).astype(np.float32)
    y = rng.integers(0, 10, n)
    x = np.maximum(centers[y] + rng.normal(size=(n, 1280)).astype(np.float32), 0)
    x, y = torch.from_numpy(x), torch.from_numpy(y)
    return {"train": (x, y), "val": (x[:2000], y[:2000]), "test": (x[:2000], y[:2000])}


def smoothness_overhead(data: dict, every: int, pairs: int, norm: str = "batch") -> dict:
    kw = dict(norm=norm, seeds=0, epochs=1, batch_size=64, lr=1e-3)
    probe = SmoothnessProbe(every=every)
    with_probe = Trainer(data, probe=probe, **kw)
    plain = Trainer(data, **kw)
    t_with, t_without, direct = [], [], []
    cpu_with, cpu_without = [], []
    for epoch in range(1, pairs + 1):
        before = probe.seconds
        t0, c0 = time.perf_counter(), time.process_time()
        with_probe.train_epoch(epoch)
        t_with.append(time.perf_counter() - t0)
        cpu_with.append(time.process_time() - c0)
        direct.append((probe.seconds - before) / t_with[-1])
        t0, c0 = time.perf_counter(), time.process_time()
        plain.train_epoch(epoch)
        t_without.append(time.perf_counter() - t0)
        cpu_without.append(time.process_time() - c0)
    return {
        "direct": float(np.median(direct)),
        "difference": (min(t_with) - min(t_without)) / min(t_without),
        "epoch_with_s": t_with,
        "epoch_without_s": t_without,
        "cpu_difference": (sum(cpu_with) - sum(cpu_without)) / sum(cpu_without),
        "epoch_with_cpu_s": cpu_with,
        "epoch_without_cpu_s": cpu_without,
        "probes_per_epoch": len(probe.records) / pairs,
        "seconds_per_probe": probe.seconds / max(len(probe.records), 1),
    }


def trained_head(data: dict, norm: str):
    trainer = Trainer(data, norm=norm, seeds=0, epochs=3, batch_size=64, lr=1e-3)
    trainer.fit()
    return trainer.stack.model_of(0).eval()


def hvp_row(model, x: torch.Tensor, y: torch.Tensor, norm: str, pairs: int) -> dict:
    """One Hessian-vector product of the study's precision (float32) on ``len(x)`` samples: the factored product
    through fc1's pre-activations (HeadLoss.hvp) against forward-over-reverse autodiff through the whole head,
    interleaved; both results compared."""
    loss = HeadLoss(model, x, y, dtype=torch.float32)
    v = torch.randn(loss.dim, generator=torch.Generator().manual_seed(0))
    fast, plain = loss.hvp(v), loss.hvp_autodiff(v)  # warm-up (and the pre-activations cached)
    t_fast, t_plain = [], []
    for _ in range(pairs):
        t0 = time.perf_counter()
        loss.hvp(v)
        t_fast.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        loss.hvp_autodiff(v)
        t_plain.append(time.perf_counter() - t0)
    return result(
        f"hessian_vector_product_{norm}",
        float(np.median(t_fast)),
        "s",
        float(np.median(t_plain)),
        "faster than autodiff through the whole head, equal to float32 rounding",
        False,
        samples=len(x),
        best_s=min(t_fast),
        naive_best_s=min(t_plain),
        times_s=t_fast,
        naive_times_s=t_plain,
        relative_difference=float((fast - plain).norm() / plain.norm()),
        note="median of interleaved pairs; naive = torch.func jvp of grad through fc1 (1280 x 256) as well",
    )


def run(quick: bool) -> list[dict]:
    torch.set_num_threads(1)
    n, pairs, samples = (4000, 1, 500) if quick else (10000, 3, 2000)
    data = make_data(n)
    spectrum, adaptive = study_settings(quick)
    rows = []
    for every in (100, 20):
        o = smoothness_overhead(data, every, pairs)
        rows.append(
            result(
                f"smoothness_overhead_every_{every}",
                o["direct"],
                "fraction",
                None,
                "<= 1.0 of training time (must not double a run)",
                False,
                **o,
                rows=n,
                note="time inside the probe / epoch time (median over epochs); difference: fastest epoch with vs "
                "without, interleaved; BatchNorm head 1280-256-10, batch 64",
            )
        )
    x, y = data["train"][0][:samples], data["train"][1][:samples]
    for norm in ("none", "batch"):
        model = trained_head(data, norm)
        hvp = {}
        for dtype in (torch.float64, torch.float32):
            loss = HeadLoss(model, x, y, dtype=dtype)
            v = torch.randn(loss.dim, dtype=dtype)
            loss.hvp(v)
            t0 = time.perf_counter()
            for _ in range(3):
                loss.hvp(v)
            hvp[str(dtype)] = (time.perf_counter() - t0) / 3
        rows.append(hvp_row(model, x, y, norm, pairs=3 if quick else 10))
        modes = ("eval", "train") if norm == "batch" else ("eval",)
        for mode in modes:
            # CPU time beside wall time: on a shared machine the process's CPU time is close to the wall time
            # it would take alone (single-threaded here). Repeated, alternating, median reported: one slow phase
            # of the machine must not decide the row.
            spec_runs, sharp_runs = [], []
            for _ in range(1 if quick else 3):
                t0, c0 = time.perf_counter(), time.process_time()
                spec = hessian_spectrum(model, x, y, mode=mode, batch_size=64, **spectrum)
                spec_runs.append((time.perf_counter() - t0, time.process_time() - c0))
                t0, c0 = time.perf_counter(), time.process_time()
                sharp = adaptive_sharpness(model, x, y, mode=mode, batch_size=64, **adaptive)
                sharp_runs.append((time.perf_counter() - t0, time.process_time() - c0))
            t_spec, c_spec = (float(np.median(col)) for col in zip(*spec_runs))
            t_sharp, c_sharp = (float(np.median(col)) for col in zip(*sharp_runs))
            rows.append(
                result(
                    f"spectrum_{norm}_{mode}",
                    t_spec,
                    "s",
                    None,
                    "part of <= 15 % of the study",
                    False,
                    samples=samples,
                    cpu_s=c_spec,
                    runs_s=[t for t, _ in spec_runs],
                    settings={**spectrum, "dtype": str(spectrum["dtype"])},
                    hvp_s=hvp,
                    top_eigenvalues=spec["summary"]["top_eigenvalues"],
                    residual_bounds=spec["summary"]["top_eigenvalue_residual_bounds"],
                    slq_trace=spec["summary"]["slq_trace"],
                    blocks=spec["summary"]["blocks"],
                )
            )
            rows.append(
                result(
                    f"adaptive_sharpness_{norm}_{mode}",
                    t_sharp,
                    "s",
                    None,
                    "part of <= 15 % of the study",
                    False,
                    samples=samples,
                    cpu_s=c_sharp,
                    runs_s=[t for t, _ in sharp_runs],
                    settings={**adaptive, "dtype": str(adaptive["dtype"])},
                    average=sharp["average"],
                    worst=sharp["worst"],
                )
            )
    return rows
