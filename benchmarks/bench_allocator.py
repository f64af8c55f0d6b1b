"""Allocator churn in feature extraction: page faults and system time with the C library's default allocator
settings vs the malloc tunables of :data:`normscape.pipeline.runtime.JOB_ENV` (what every workflow job starts with).

Each side runs in its own fresh process (glibc reads ``GLIBC_TUNABLES`` when a process starts), alternating
default / tuned several times, each extracting the same images at 224 px with 2 threads (the rule's threads).
Page faults per image and the share of system time are counted with ``getrusage``; both depend little on how
busy the machine is, unlike the images/s that are reported beside them. Real weights with ``NORMSCAPE_BENCH_WEIGHTS``.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

from benchmarks.common import bench_weights, build_bench_backbone, result, weights_label

REPO = Path(__file__).resolve().parents[1]
WARMUP_IMAGES = 160
# Measurement resolution (benchmarks.compare): differences below these come from whether the kernel has 2 MB
# pages free for a process's heap (its first-touch faults vary 4x between rounds), not from the allocator:
# 50 faults/image is 2.5 % of the default's ~2,000; two points of system time are well inside the 5 % target.
FAULTS_RESOLUTION, SYSTEM_FRACTION_RESOLUTION = 50.0, 0.02


def probe(
    allocator: str, images: int, input_size: int, threads: int, weights: str | None, extra_env: dict | None = None
) -> dict:
    """Extract ``images`` synthetic images in a fresh process started with the job environment's malloc tunables
    (``allocator="tuned"``) or without them (``"default"``: glibc's own settings; other tunables stay); its rusage
    deltas over the timed part."""
    from normscape.pipeline.runtime import TUNABLES_ENV, job_environment

    env = {**os.environ, "OMP_NUM_THREADS": str(threads), **(extra_env or {})}
    if allocator == "default":
        env.pop(TUNABLES_ENV, None)
    else:
        env[TUNABLES_ENV] = job_environment(env)[TUNABLES_ENV]
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO / "src"), str(REPO), env.get("PYTHONPATH")) if p)
    args = [sys.executable, "-m", "benchmarks.bench_allocator", str(images), str(input_size), str(threads)]
    out = subprocess.run(args + ([weights] if weights else []), env=env, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def _child(images: int, input_size: int, threads: int, weights: str | None) -> dict:
    import resource
    import time

    from normscape.pipeline.runtime import missing_malloc_tunables

    tuned = not missing_malloc_tunables()  # what this process was started with
    import numpy as np
    import torch

    from normscape.data.synthetic import synthetic_images
    from normscape.features.extract import FeatureExtractor

    torch.set_num_threads(threads)
    model = build_bench_backbone(weights)
    batch = synthetic_images(images, np.random.default_rng(0))[0]
    extractor = FeatureExtractor(model, input_size, "cpu", "fp32", 16)
    # Warm-up: oneDNN's kernel selection and the first touch of the grown heap, which takes the first ~10 batches
    # (a job extracts ~1,500 batches; its steady state is what is measured, the warm-up's faults are kept apart)
    w0 = resource.getrusage(resource.RUSAGE_SELF)
    extractor(batch[:WARMUP_IMAGES])
    r0, t0 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
    # Batch by batch, as the extractor itself goes, to count each batch's faults: a batch that grows the heap
    # faults its new pages in once; only faults that recur in every batch are churn (their median says which).
    faults_per_batch, faults_before = [], r0.ru_minflt
    for start in range(0, images, extractor.batch_size):
        extractor(batch[start : start + extractor.batch_size])
        faults_now = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        faults_per_batch.append(faults_now - faults_before)
        faults_before = faults_now
    wall, r1 = time.perf_counter() - t0, resource.getrusage(resource.RUSAGE_SELF)
    user, system = r1.ru_utime - r0.ru_utime, r1.ru_stime - r0.ru_stime
    return {
        "tuned": tuned,
        "images_per_s": images / wall,
        "minor_faults_per_image": (r1.ru_minflt - r0.ru_minflt) / images,
        "minor_faults_per_batch": faults_per_batch,
        "median_batch_minor_faults_per_image": statistics.median(faults_per_batch) / extractor.batch_size,
        "system_fraction": system / max(user + system, 1e-9),
        "user_s": user,
        "system_s": system,
        "max_rss_mb": r1.ru_maxrss / 1024,
        "warmup_minor_faults": r0.ru_minflt - w0.ru_minflt,
    }


def run(quick: bool) -> list[dict]:
    images, size, rounds = (32, 160, 1) if quick else (480, 224, 5)
    weights = bench_weights()
    runs = {"default": [], "tuned": []}
    for _ in range(rounds):
        for allocator in runs:
            runs[allocator].append(probe(allocator, images, size, 2, weights))

    def med(side: str, key: str) -> float:
        return statistics.median(r[key] for r in runs[side])

    common = {"images": images, "input_px": size, "threads": 2, "rounds": rounds, "runs": runs}
    common["weights"] = weights_label(weights)
    return [
        result(
            "extraction_page_faults",
            med("tuned", "minor_faults_per_image"),
            "faults/image",
            med("default", "minor_faults_per_image"),
            "informational: fewer than the default allocator",
            False,
            resolution=FAULTS_RESOLUTION,
            **common,
        ),
        result(
            "extraction_system_time",
            med("tuned", "system_fraction"),
            "fraction of CPU",
            med("default", "system_fraction"),
            "<= 0.05 of CPU time",
            False,
            resolution=SYSTEM_FRACTION_RESOLUTION,
            images_per_s_tuned=med("tuned", "images_per_s"),
            images_per_s_default=med("default", "images_per_s"),
        ),
    ]


if __name__ == "__main__":
    n, px, th = (int(a) for a in sys.argv[1:4])
    print(json.dumps(_child(n, px, th, sys.argv[4] if len(sys.argv) > 4 else None)))
