"""Helpers shared by the benchmark modules: repeated timing with medians and the result-row format."""

from __future__ import annotations

import gc
import os
import statistics
import time
from collections.abc import Callable
from typing import Any

WEIGHTS_ENV = "NORMSCAPE_BENCH_WEIGHTS"  # a torchvision mobilenet_v2 state_dict: extraction with real weights


def bench_weights() -> str | None:
    """The state_dict path the extraction benchmarks use (``NORMSCAPE_BENCH_WEIGHTS``), or None: random init."""
    return os.environ.get(WEIGHTS_ENV)


def build_bench_backbone(weights: str | None):
    """MobileNet-V2 with that state_dict (its path is also its id), else random init."""
    from normscape.features.backbones import build_backbone

    return build_backbone(weights, weights) if weights else build_backbone("random")


def weights_label(weights: str | None) -> str:
    return f"real ({WEIGHTS_ENV})" if weights else "random init"


def time_median(fn: Callable[[], Any], repeats: int = 3, warmup: int = 1) -> tuple[float, list[float]]:
    """Median wall time (s) of ``fn()`` over ``repeats`` runs after ``warmup`` untimed runs."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        gc.collect()
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), times


def result(
    name: str, value: float, unit: str, naive_value: float | None, target: str, higher_is_better: bool, **details: Any
) -> dict:
    """One row of results.json. ``ratio_vs_naive`` > 1 always means "ours is better than naive"."""
    if naive_value is None or naive_value == 0 or value == 0:
        ratio = None
    else:
        ratio = value / naive_value if higher_is_better else naive_value / value
    row = {
        "name": name,
        "value": value,
        "unit": unit,
        "naive_value": naive_value,
        "ratio_vs_naive": ratio,
        "target": target,
    }
    if details:
        row["details"] = details
    return row
