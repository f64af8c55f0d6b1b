"""The two stages that can use a CUDA GPU, on one: feature extraction and training a head.

Runs only where torch sees a CUDA device (elsewhere it returns no rows, and a full run on a CPU-only machine keeps
the GPU rows of results.json with their ``measured_at``). Each row names its device.

* ``gpu_feature_extraction_224_<precision>``: the pipeline's extractor (``backbone.device: auto`` resolves to
  cuda) at 224 px, fp32 and bf16 autocast, at batch sizes 128 and 256 (the best reported, every rate in
  ``details``), host-to-device copies and the read-back included; ``naive_value`` is the same extractor on this
  machine's CPU (all cores). Fidelity: cosine similarity and largest difference of the features against the CPU's
  fp32 features of the same images (synthetic images; real weights with ``NORMSCAPE_BENCH_WEIGHTS``).
* ``gpu_train_15_epochs``: one 15-epoch run of the study's BatchNorm head (1280 -> 256 -> 10, batch 64, Adam
  1e-3) on 50,000 synthetic class-structured feature rows, ``Trainer(device="cuda")``; ``naive_value`` the
  same run on one CPU thread (the train rule's) on this machine, extrapolated from its first 3 epochs (each side's
  time includes building the Trainer: moving the data, the initial validation). Both
  runs' validation accuracy after 3 epochs are reported: float rounding differs between devices, the result
  must not.
"""

from __future__ import annotations

import statistics
import time

import numpy as np

from benchmarks.common import bench_weights, build_bench_backbone, result, weights_label

SIZE = 224


def _sync():
    import torch

    torch.cuda.synchronize()


def extraction_rows(quick: bool, device_name: str) -> list[dict]:
    import torch

    from normscape.data.synthetic import synthetic_images
    from normscape.features.extract import FeatureExtractor

    weights = bench_weights()
    model = build_bench_backbone(weights)
    n = 256 if quick else 4096
    images = synthetic_images(n, np.random.default_rng(0))[0]
    n_ref = 64 if quick else 256
    cpu = FeatureExtractor(model, SIZE, "cpu", "fp32", 16)
    cpu(images[:16])
    t0 = time.perf_counter()
    reference = cpu(images[:n_ref])
    cpu_rate = n_ref / (time.perf_counter() - t0)
    rows = []
    for precision in ("fp32", "bf16"):
        rates, fidelity = {}, {}
        for batch_size in (128, 256):
            extractor = FeatureExtractor(model, SIZE, "auto", precision, batch_size)
            assert extractor.device.type == "cuda", "backbone.device: auto must resolve to the GPU here"
            extractor(images[:batch_size])  # warm-up: cuDNN algorithm choice, allocator
            times = []
            for _ in range(3):
                _sync()
                t0 = time.perf_counter()
                extractor(images)
                _sync()
                times.append(time.perf_counter() - t0)
            rates[batch_size] = [n / t for t in times]
            feats = torch.from_numpy(extractor(images[:n_ref]))
            ref = torch.from_numpy(reference)
            cos = torch.nn.functional.cosine_similarity(feats, ref, dim=1)
            fidelity[batch_size] = {
                "cosine_min": float(cos.min()),
                "cosine_mean": float(cos.mean()),
                "max_abs_diff": float((feats - ref).abs().max()),
                "max_abs_feature": float(ref.abs().max()),
            }
        best = max(rates, key=lambda b: statistics.median(rates[b]))
        rows.append(
            result(
                f"gpu_feature_extraction_{SIZE}_{precision}",
                statistics.median(rates[best]),
                "images/s",
                cpu_rate,
                "informational: the GPU's rate (naive = this machine's CPU, all cores)",
                True,
                device=device_name,
                device_type="cuda",
                batch_size=best,
                rates_by_batch_size={str(b): r for b, r in rates.items()},
                fidelity_vs_cpu_fp32=fidelity[best],
                fidelity_by_batch_size={str(b): f for b, f in fidelity.items()},
                images=n,
                cpu_threads=torch.get_num_threads(),
                weights=weights_label(weights),
            )
        )
    return rows


def training_row(quick: bool, device_name: str) -> dict:
    import torch

    from normscape.training.trainer import Trainer

    rng = np.random.default_rng(0)
    n_train, n_val = (4000, 1000) if quick else (50000, 8000)
    centers = rng.normal(0, 0.1, size=(10, 1280)).astype(np.float32)

    def split(n):
        y = rng.integers(0, 10, n)
        x = np.maximum(centers[y] + rng.normal(size=(n, 1280)).astype(np.float32), 0)
        return torch.from_numpy(x), torch.from_numpy(y)

    data = {"train": split(n_train), "val": split(n_val), "test": split(2000)}
    epochs = 3 if quick else 15
    kw = dict(norm="batch", seeds=0, batch_size=64, lr=1e-3, keep_trajectory=False)
    # warm-up of the CUDA context and kernels on a short run, then the timed run
    Trainer(data, epochs=1, device="cuda", **{**kw, "norm": "none"}).fit()
    _sync()
    t0 = time.perf_counter()
    gpu = Trainer(data, epochs=epochs, device="cuda", **kw)
    gpu.fit()
    _sync()
    gpu_s = time.perf_counter() - t0
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the train rule's thread
    try:
        cpu_epochs = min(3, epochs)
        t0 = time.perf_counter()
        cpu = Trainer(data, epochs=cpu_epochs, device="cpu", **kw)
        cpu.fit()
        cpu_s = (time.perf_counter() - t0) * epochs / cpu_epochs
    finally:
        torch.set_num_threads(threads)
    return result(
        f"gpu_train_{epochs}_epochs",
        gpu_s,
        "s",
        cpu_s,
        "informational: one run on the GPU (naive = one CPU thread on this machine, from its first 3 epochs)",
        False,
        device=device_name,
        device_type="cuda",
        train_rows=n_train,
        epochs=epochs,
        steps_per_epoch=len(gpu.step_norms[0]),
        gpu_epoch_s=[m["epoch_time_s"] for m in gpu.runs[0].metrics],
        cpu_epoch_s=[m["epoch_time_s"] for m in cpu.runs[0].metrics],
        val_acc_after_3_epochs={
            "cuda": gpu.runs[0].metrics[min(3, epochs) - 1]["val_acc"],
            "cpu": cpu.runs[0].metrics[-1]["val_acc"],
        },
        final_val_acc_cuda=gpu.runs[0].metrics[-1]["val_acc"],
    )


def run(quick: bool) -> list[dict]:
    import torch

    if not torch.cuda.is_available():
        return []
    from benchmarks.__main__ import machine_info

    name = torch.cuda.get_device_name(0)
    rows = [*extraction_rows(quick, name), training_row(quick, name)]
    machine = {**machine_info(), "torch": torch.__version__}  # results.json's own machine is the CPU one
    for row in rows:
        row["details"]["machine"] = machine
    return rows
