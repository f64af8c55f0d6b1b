"""Curvature at matched training loss: each run's λmax, λmin and Hessian trace where its training loss first
reaches a level every head that learned reaches, beside the same numbers at its final point.

Why: raw curvature is compared across heads that fit the data to different degrees (a head at training loss 0.04
sits deeper in its basin than one at 0.5), so "flatter minima" at the final point partly compares stages of
training. The common level is the highest final training loss among the runs of the experiment that learned
(best validation accuracy >= ``min_val_acc``): every learning run reaches it, the run that sets it at its last
epoch. A run's matched point is its parameters after the first epoch whose training loss (the epoch's running
mean, as metrics.csv records it) is at or below the level, read from its trajectory.

Mode: both points are measured the same way, with the head's normalisation as training used it. For BatchNorm
that is batch statistics (over the Hessian sample, in batches of the run's batch size): the trajectory keeps the
parameters of every epoch, not the running statistics of eval mode. Every other built-in norm computes the same
in both modes. The trace is exact where samples do not interact (normscape.curvature.hessian_diagonal); with batch
statistics they do, and Hutchinson's estimate with its standard error stands in (``trace_method`` says which).
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Sequence
from pathlib import Path

import torch

from normscape.pipeline.paths import run_key


def final_train_losses(metrics_paths: Sequence[str], summary_paths: Sequence[str], min_val_acc: float) -> dict:
    """{run id: last epoch's training loss} of the runs that learned (finite, best val acc >= ``min_val_acc``)."""
    summaries = {_run_id(p): json.loads(Path(p).read_text()) for p in summary_paths}
    losses = {}
    for path in metrics_paths:
        run = _run_id(path)
        summary = summaries.get(run)
        if summary is None or summary.get("diverged") or (summary["best"]["val_acc"] or 0.0) < min_val_acc:
            continue
        rows = train_losses(path)
        if rows and math.isfinite(rows[-1]):
            losses[run] = rows[-1]
    return losses


def train_losses(metrics_path: str) -> list[float]:
    with open(metrics_path, newline="") as fh:
        return [float(row["train_loss"]) for row in csv.DictReader(fh)]


def matched_epoch(losses: Sequence[float], level: float) -> int | None:
    """The first epoch (1-based) whose training loss is at or below ``level``, or None."""
    return next((epoch for epoch, loss in enumerate(losses, start=1) if loss <= level), None)


def _run_id(path: str) -> str:
    key = run_key(path)
    return f"{key['experiment']}/{key['head']}/{key['variant']}/seed{key['seed']}"


def curvature_at(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, hessian: dict, batch_size: int) -> dict:
    """λmax, λmin (Lanczos, to ``hessian['tol']``) and the trace of ``model`` on (x, y), with the norm in training
    mode (batch statistics for BatchNorm, in batches of ``batch_size``)."""
    from normscape.curvature.hessian_diagonal import SampleCouplingError, exact_trace
    from normscape.curvature.sharpness import HessianOperator, extreme_eigenvalues, hutchinson_trace

    op = HessianOperator(model, x, y, mode="train", batch_size=batch_size)
    eigen = extreme_eigenvalues(op, hessian["lanczos_steps"], hessian["tol"], seed=0)
    try:
        trace, sem, method = exact_trace(op.loss)["total"], 0.0, "exact"
    except SampleCouplingError:
        trace, sem = hutchinson_trace(op, hessian["hutchinson_probes"], seed=0)
        method = "hutchinson"
    return {
        "top_eigenvalue": eigen["lambda_max"],
        "min_eigenvalue": eigen["lambda_min"],
        "saddle": eigen["saddle"],
        "hessian_trace": trace,
        "hessian_trace_sem": sem,
        "trace_method": method,
    }


def compute_matched(
    model_final: str,
    trajectory: str,
    features: str,
    metrics_paths: Sequence[str],
    summary_paths: Sequence[str],
    out_json: str,
    settings: dict,
) -> dict:
    """One run's curvature at the experiment's common training-loss level and at its final point -> ``out_json``.

    ``settings``: hessian (samples, lanczos_steps, tol, hutchinson_probes), ``min_val_acc`` (claims),
    ``seed`` (the Hessian sample's, as the sharpness rule draws it) and the run's ``batch_size``."""
    from normscape.landscape.run_inputs import load_head_file, rows_as_tensors, subset_rows
    from normscape.pipeline.atomic import write_json

    model, state = load_head_file(model_final)
    own = _run_id(model_final)
    own_losses = train_losses(next(p for p in metrics_paths if _run_id(p) == own))
    finals = final_train_losses(metrics_paths, summary_paths, settings["min_val_acc"])
    out = {"level": None, "level_run": None, "epoch": None, "train_loss_at_epoch": None, "reason": None}
    out["provenance"] = {"run_identity": (state.get("provenance") or {}).get("identity")}
    for prefix in ("", "final_"):
        out.update({f"{prefix}{k}": None for k in ("top_eigenvalue", "min_eigenvalue", "hessian_trace")})
    if own not in finals:
        out["reason"] = "the run did not learn (or diverged): no matched point"
        write_json(out_json, out)
        return out
    level_run = max(finals, key=finals.get)
    level = finals[level_run]
    epoch = matched_epoch(own_losses, level)
    out.update({"level": level, "level_run": level_run, "epoch": epoch, "train_loss_at_epoch": own_losses[epoch - 1]})
    flat = torch.load(trajectory, map_location="cpu", weights_only=False)["flat"]
    hidx = subset_rows(features, "train", settings["samples"], settings["seed"])
    x, y = rows_as_tensors(features, "train", hidx)
    batch_size = int(settings["batch_size"])
    final = curvature_at(model, x, y, settings, batch_size)
    torch.nn.utils.vector_to_parameters(flat[epoch].to(next(model.parameters()).dtype), model.parameters())
    matched = curvature_at(model, x, y, settings, batch_size)
    out.update(matched)
    out.update({f"final_{k}": v for k, v in final.items()})
    out["samples"] = int(len(hidx))
    write_json(out_json, out)
    return out
