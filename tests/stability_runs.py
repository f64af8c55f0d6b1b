"""Hand-made run directories of the edge-of-stability experiments, in the real file formats: summary.json and
metrics.csv as a training run writes them, preconditioned_sharpness.{h5,json} by the real writer from a probe
holding chosen records (tests/test_claims_stability.py, tests/test_plots_stability.py)."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import torch

from normscape.curvature.edge_of_stability import (
    PreconditionedSharpnessProbe,
    stability_threshold,
    write_preconditioned_sharpness,
)

BETA1 = 0.9


def probe_with(ratios, lr: float, every: int, raw_fraction: float = 0.01) -> PreconditionedSharpnessProbe:
    """A probe whose records put lambda_1(P^-1 H) at ``ratios`` x the threshold (NaN: a diverged probe), every
    ``every`` steps from step 0, and lambda_1(H) at ``raw_fraction`` of it."""
    probe = PreconditionedSharpnessProbe(torch.zeros(4, 3), torch.zeros(4, dtype=torch.long), 4, every)
    threshold = stability_threshold(lr, BETA1)
    records = [
        {
            "step": i * every,
            "lr": lr,
            "beta1": BETA1,
            "threshold": threshold,
            "preconditioned_sharpness": r * threshold,
            "preconditioned_sharpness_residual_bound": 1e-3,
            "preconditioned_lanczos_steps": 8,
            "preconditioned_converged": True,
            "sharpness": r * threshold * raw_fraction,
            "sharpness_residual_bound": 1e-3,
            "sharpness_lanczos_steps": 8,
            "sharpness_converged": True,
        }
        for i, r in enumerate(ratios)
    ]
    probe.load_state_dict({"records": records, "seconds": 0.0})
    return probe


def write_run(root, experiment, head, variant, seed, acc, lr, ratios=None, every=10, best_val=None):
    """One run directory; ``acc`` NaN = a diverged run (no final accuracy, as the trainer writes it)."""
    run = root / "runs" / experiment / head / variant / f"seed{seed}"
    run.mkdir(parents=True)
    diverged = not math.isfinite(acc)
    val = best_val if best_val is not None else (0.5 if diverged else acc)
    summary = {
        "experiment": experiment,
        "head": head,
        "variant": variant,
        "seed": seed,
        "training": {"lr": lr, "batch_size": 32},
        "final": {"test_acc": None if diverged else acc, "val_acc": None if diverged else acc},
        "best": {"test_acc": val, "val_acc": val},
        "diverged": diverged,
    }
    (run / "summary.json").write_text(json.dumps(summary))
    pd.DataFrame({"epoch": [1, 2], "val_acc": [val * 0.9, val], "val_loss": [1.0, 0.9]}).to_csv(
        run / "metrics.csv", index=False
    )
    probe = probe_with(ratios, lr, every) if ratios is not None else None
    write_preconditioned_sharpness(
        run / "preconditioned_sharpness.h5", run / "preconditioned_sharpness.json", probe, {"head": head}
    )
    return run


def files(root, name: str) -> list[str]:
    return sorted(map(str, root.glob(f"runs/**/{name}")))


def lr_variant(lr: float) -> str:
    return f"lr-{lr:g}"


def ramp(level: float, n: int = 8, start: float = 0.05) -> list[float]:
    """Ratios rising from ``start`` to ``level`` over the first half of ``n`` probes, then at ``level``."""
    half = n // 2
    return list(np.linspace(start, level, half)) + [level] * (n - half)
