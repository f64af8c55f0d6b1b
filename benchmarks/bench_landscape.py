"""51 x 51 loss landscape on 8,000 samples: blocked exact evaluator vs the per-point loop (set weights, forward).

The loop is timed on a sample of grid points and extrapolated to the full grid (its per-point cost is
constant), half of its points right before and half right after the fast evaluation, so that a slow phase of
the machine hits both; both agree to float rounding (tests/test_landscape.py), and the max relative
difference on the sampled points is reported. Every head is measured; the target is the BatchNorm head's.
"""

from __future__ import annotations

import time

import numpy as np
import torch

from benchmarks.bench_contention import STAGE_THREADS
from benchmarks.common import result
from normscape.heads import build_head
from normscape.landscape import random_directions
from normscape.norms import NORMS
from normscape.planeeval import PlaneEvaluator, loop_evaluate


def run(quick: bool) -> list[dict]:
    torch.set_num_threads(STAGE_THREADS["landscape"])  # what the rule's jobs get (with the job environment)
    n, res, loop_points, fast_repeats = (1000, 9, 4, 1) if quick else (8000, 51, 12, 3)
    torch.manual_seed(0)
    x, y = torch.relu(torch.randn(n, 1280)), torch.randint(0, 10, (n,))
    axis = np.linspace(-1, 1, res)
    rows, per_head = [], {}
    for norm in [name for name, spec in NORMS.items() if spec.plane_rule]:  # the fast rules
        model = build_head(norm).eval()
        d1, d2 = random_directions(model, 0)
        pick = np.linspace(0, res - 1, loop_points // 2).astype(int)
        t0 = time.perf_counter()
        loop_before, _ = loop_evaluate(model, x, y, d1, d2, axis[pick], axis[pick[:1]])
        t_loop = time.perf_counter() - t0
        fast_s = []
        for _ in range(fast_repeats):  # a few seconds each: best of several (noise only adds time)
            t0 = time.perf_counter()
            fast_loss, _ = PlaneEvaluator(model, d1, d2).evaluate(x, y, axis, axis)
            fast_s.append(time.perf_counter() - t0)
        t_fast = min(fast_s)
        t0 = time.perf_counter()
        loop_after, _ = loop_evaluate(model, x, y, d1, d2, axis[pick], axis[pick[-1:]])
        t_loop = (t_loop + time.perf_counter() - t0) / (len(pick) * 2) * res * res
        loop_loss = np.concatenate([loop_before, loop_after], 1)
        rel = float(np.max(np.abs(loop_loss - fast_loss[np.ix_(pick, [pick[0], pick[-1]])]) / np.abs(loop_loss)))
        per_head[norm] = {
            "fast_s": t_fast,
            "fast_runs_s": fast_s,
            "loop_s_extrapolated": t_loop,
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
            "<= 15 s and >= 20x naive (BatchNorm head)",
            False,
            samples=n,
            grid=f"{res}x{res}",
            per_head=per_head,
        )
    )
    return rows
