"""The study's loss-landscape plane (config.yaml's `landscape` and `head`: 51 x 51 points, 8,000 samples, hidden
256) for every head of `landscape.experiments`: the plane evaluator vs the per-point loop (set weights, forward).

The loop is timed point by point on a sample of grid points, half right before and half right after the fast
evaluation, and its fastest point is extrapolated to the full grid (its per-point cost is constant); the fast
evaluator is timed by its fastest whole plane: each side by its fastest unit, timeit's convention (noise only
adds time), so the ratio does not move with the machine's slow phases (the mean point's extrapolation is kept in
``details``). Both agree to float rounding (tests/test_landscape.py), and the max relative difference on the
sampled points is reported. Every head is measured; the target is the BatchNorm head's.
"""

from __future__ import annotations

import time

import numpy as np
import torch
import yaml

from benchmarks.bench_contention import REPO, STAGE_THREADS
from benchmarks.common import result
from normscape.landscape.plane_eval import PlaneEvaluator, loop_evaluate
from normscape.landscape.planes import random_directions
from normscape.models.heads import build_head


def study_landscape() -> tuple[list[str], int, int, int, float]:
    """(heads, hidden, samples, resolution, span) of the study's landscapes, from config.yaml."""
    cfg = yaml.safe_load((REPO / "config.yaml").read_text())
    land = cfg["landscape"]
    heads = [h for e in land["experiments"] for h in cfg["experiments"][e]["heads"]]
    return list(dict.fromkeys(heads)), cfg["head"]["hidden"], land["samples"], land["resolution"], land["span"]


def loop_column(model, x, y, d1, d2, axis, rows, column) -> tuple[np.ndarray, list[float]]:
    """The per-point loop's losses at ``rows`` of one grid ``column`` (shape (rows, 1)) and each point's time (s)."""
    losses, seconds = [], []
    for row in rows:
        t0 = time.perf_counter()
        loss, _ = loop_evaluate(model, x, y, d1, d2, axis[[row]], axis[[column]])
        seconds.append(time.perf_counter() - t0)
        losses.append(loss[0, 0])
    return np.array(losses)[:, None], seconds


def run(quick: bool) -> list[dict]:
    torch.set_num_threads(STAGE_THREADS["landscape"])  # what the rule's jobs get (with the job environment)
    heads, hidden, n, res, span = study_landscape()
    loop_points, fast_repeats = 12, 3
    if quick:
        n, res, loop_points, fast_repeats = 1000, 9, 4, 1
    torch.manual_seed(0)
    x, y = torch.relu(torch.randn(n, 1280)), torch.randint(0, 10, (n,))
    axis = np.linspace(-span, span, res)
    rows, per_head = [], {}
    for norm in heads:
        model = build_head(norm, hidden=hidden).eval()
        d1, d2 = random_directions(model, 0)
        pick = np.linspace(0, res - 1, loop_points // 2).astype(int)
        plane = (model, x, y, d1, d2, axis, pick)
        loop_before, before_s = loop_column(*plane, pick[0])
        fast_s = []
        for _ in range(fast_repeats):  # seconds each: best of several (noise only adds time)
            t0 = time.perf_counter()
            fast_loss, _ = PlaneEvaluator(model, d1, d2).evaluate(x, y, axis, axis)
            fast_s.append(time.perf_counter() - t0)
        t_fast = min(fast_s)
        loop_after, after_s = loop_column(*plane, pick[-1])
        # each side by its fastest unit (ours: a whole plane, the loop: one point), as the other benchmarks time
        loop_point_s = before_s + after_s
        t_loop = min(loop_point_s) * res * res
        loop_loss = np.concatenate([loop_before, loop_after], 1)
        rel = float(np.max(np.abs(loop_loss - fast_loss[np.ix_(pick, [pick[0], pick[-1]])]) / np.abs(loop_loss)))
        per_head[norm] = {
            "fast_s": t_fast,
            "fast_runs_s": fast_s,
            "loop_s_extrapolated": t_loop,
            "loop_point_s": loop_point_s,
            "loop_s_extrapolated_from_mean": float(np.mean(loop_point_s)) * res * res,
            "ratio": t_loop / t_fast,
            "max_rel_diff": rel,
        }
    b = per_head["batch"]
    rows.append(
        result(
            "landscape_51x51",
            b["fast_s"],
            "s",
            b["loop_s_extrapolated"],
            "<= 15 s and >= 10x naive (BatchNorm head)",
            False,
            samples=n,
            grid=f"{res}x{res}",
            hidden=hidden,
            per_head=per_head,
        )
    )
    return rows
