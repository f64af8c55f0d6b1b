"""One run's landscape and sharpness, from files to files (what the landscape and sharpness rules call).

Every surface is evaluated exactly with :class:`normscape.landscape.plane_eval.PlaneEvaluator`, one torch path for every
norm (the first layer is affine in the plane's coordinates, so a grid point costs a fraction of a forward pass; it
equals the per-point loop :func:`normscape.landscape.plane_eval.loop_evaluate` to float rounding). Sharpness numbers
(lambda_max and lambda_min, the exact Hessian trace and Hutchinson's estimate, loss increase at fixed radius) come from
:mod:`normscape.curvature.sharpness` and :mod:`normscape.curvature.hessian_diagonal` in
:func:`compute_sharpness`, a separate step (and rule) that reads the landscape's directions.

A run that diverged (its ``model_final.pt`` says so, or its parameters are not finite) gets a landscape record
without surfaces — ``status = "diverged"`` and the reason in landscape.h5's attributes — and sharpness numbers
that are null with that reason: a Hessian at an exploded point is not a measurement of anything.

Provenance: landscape.h5 records ``identity`` = digest of the landscape settings, the run's identity (from
model_final.pt, which covers the run's config slice and its features) and ``LANDSCAPE_VERSION``; sharpness.json
records the landscape's identity it was computed from, the hessian settings and the run identity. Before anything
is computed the run's recorded features identity is compared with the feature cache's: a model trained on other
features than the ones the landscape would be evaluated on is an error, never a silently mixed result.
"""

from __future__ import annotations

import logging

import numpy as np
import torch

from normscape.landscape.plane_eval import parameters_of
from normscape.landscape.planes import (
    evaluate_line,
    evaluate_plane,
    grid_axis,
    pca_grid,
    random_directions,
    trajectory_pca,
    unflatten,
)
from normscape.landscape.run_inputs import divergence_of, load_head, load_head_file, rows_as_tensors, subset_rows

log = logging.getLogger(__name__)

LANDSCAPE_VERSION = 3  # 2: provenance, diverged runs get a record; 3: one torch plane path (rounds unlike the kernel)
SHARPNESS_FIELDS = (
    "top_eigenvalue",
    "min_eigenvalue",
    "saddle",
    "hessian_trace",
    "hessian_trace_hutchinson",
    "hessian_trace_hutchinson_sem",
    "loss_at_minimum",
)


def landscape_provenance(model_state: dict, features: str, settings: dict) -> dict:
    """The landscape's identity; checks that the run was trained on the features it will be evaluated on."""
    from normscape.features import store
    from normscape.pipeline.errors import DataError

    run = model_state.get("provenance") or {}
    features_identity = store.identity(features)
    if run.get("features_identity") != features_identity:
        raise DataError(
            f"the trained model was computed from features {run.get('features_identity')!r}, but {features} is "
            f"{features_identity!r}: its training is out of date. Rerun it: snakemake --cores 2 all"
        )
    parts = {
        "settings": store.digest(settings),
        "run_identity": run.get("identity"),
        "features_identity": features_identity,
        "landscape_version": LANDSCAPE_VERSION,
    }
    return {"identity": store.digest(parts), **parts}


def write_diverged_record(out_h5: str, settings: dict, head: str, reason: str, provenance: dict) -> None:
    """landscape.h5 without surfaces: its status and the reason (the sharpness rule reads them)."""
    import h5py

    from normscape.pipeline.atomic import atomic_path

    log.warning("no landscape for this run: %s", reason)
    with atomic_path(out_h5, suffix=".h5") as tmp, h5py.File(tmp, "w") as f:
        for key, value in settings.items():
            if not isinstance(value, dict):
                f.attrs[key] = value
        f.attrs["status"] = "diverged"
        f.attrs["reason"] = reason
        f.attrs["head"] = head
        f.attrs["identity"] = provenance["identity"]
        f.attrs["run_identity"] = provenance["run_identity"] or ""


def compute_landscape(
    model_final: str,
    model_init: str,
    trajectory: str,
    features: str,
    out_h5: str,
    settings: dict,
    progress: bool = True,
) -> None:
    """Every landscape of one run (plane, line, interpolation, PCA plane) -> ``out_h5`` (with the directions and
    the sample subset, which :func:`compute_sharpness` reuses). ``settings``: the landscape slice, less its
    ``experiments``."""
    import h5py

    from normscape.pipeline.atomic import atomic_path

    model, model_state = load_head_file(model_final)
    provenance = landscape_provenance(model_state, features, settings)
    reason = divergence_of(model, model_state)
    if reason is not None:
        return write_diverged_record(out_h5, settings, model.norm_name, reason, provenance)
    init = load_head(model_init)
    idx = subset_rows(features, settings["split"], settings["samples"], settings["direction_seed"])
    x, y = rows_as_tensors(features, settings["split"], idx)
    d1, d2 = random_directions(model, settings["direction_seed"], settings["ignore"])
    axis = grid_axis(settings["span"], settings["resolution"])
    log.info("plane %dx%d on %d %s samples", len(axis), len(axis), len(x), settings["split"])
    plane_loss, plane_acc = evaluate_plane(model, x, y, d1, d2, axis, axis, progress)
    line_loss, line_acc = evaluate_line(model, x, y, d1, axis)
    # init -> final: theta(t) = theta_final + (1 - t) (theta_init - theta_final), t in [-0.25, 1.25]
    t = np.linspace(-0.25, 1.25, max(settings["resolution"], 31))
    to_init = {k: parameters_of(init)[k] - v for k, v in parameters_of(model).items()}
    interp_loss, interp_acc = evaluate_line(model, x, y, to_init, 1.0 - t)
    traj = torch.load(trajectory, map_location="cpu", weights_only=False)
    pdirs, coords, ratio = trajectory_pca(traj["flat"])
    pa, pb = pca_grid(coords, settings["resolution"])
    pca_loss, pca_acc = evaluate_plane(model, x, y, unflatten(pdirs[0], model), unflatten(pdirs[1], model), pa, pb)

    with atomic_path(out_h5, suffix=".h5") as tmp, h5py.File(tmp, "w") as f:
        for key, value in settings.items():
            if not isinstance(value, dict):
                f.attrs[key] = value
        f.attrs["head"] = model.norm_name
        f.attrs["status"] = "ok"
        f.attrs["identity"] = provenance["identity"]
        f.attrs["run_identity"] = provenance["run_identity"] or ""
        f.attrs["eval_mode"] = "BatchNorm uses running statistics; dropout off"
        f.create_dataset("subset_indices", data=idx)
        g = f.create_group("plane")
        for k, v in (("alphas", axis), ("betas", axis), ("loss", plane_loss), ("acc", plane_acc)):
            g.create_dataset(k, data=v)
        g = f.create_group("line")
        for k, v in (("alphas", axis), ("loss", line_loss), ("acc", line_acc)):
            g.create_dataset(k, data=v)
        g = f.create_group("interpolation")
        for k, v in (("t", t), ("loss", interp_loss), ("acc", interp_acc)):
            g.create_dataset(k, data=v)
        g = f.create_group("pca")
        for k, v in (
            ("alphas", pa),
            ("betas", pb),
            ("loss", pca_loss),
            ("acc", pca_acc),
            ("trajectory", coords.numpy()),
            ("explained_variance_ratio", ratio),
        ):
            g.create_dataset(k, data=v)
        g = f.create_group("directions")
        for name in d1:
            g.create_dataset(f"d1/{name}", data=d1[name].numpy())
            g.create_dataset(f"d2/{name}", data=d2[name].numpy())


def compute_sharpness(model_final: str, features: str, landscape_h5: str, out_json: str, hessian: dict) -> dict:
    """Sharpness of one run -> ``out_json``: lambda_max (``top_eigenvalue``: the largest algebraic eigenvalue) and
    lambda_min by Lanczos with their residual bounds and the saddle flag, the exact Hessian trace and Hutchinson's
    estimate with its standard error (``hessian`` settings, on training samples), and the loss increase at fixed
    radii along the landscape's own directions (read from ``landscape_h5``, so these numbers describe the plane
    drawn). Its own rule: editing hessian.* reruns this, not the planes."""
    import h5py

    from normscape.curvature.hessian_diagonal import SampleCouplingError, exact_trace
    from normscape.curvature.sharpness import HessianOperator, extreme_eigenvalues, hutchinson_trace
    from normscape.features import store
    from normscape.pipeline.atomic import write_json
    from normscape.pipeline.errors import DataError

    model, model_state = load_head_file(model_final)
    with h5py.File(landscape_h5, "r") as f:
        status = str(f.attrs.get("status", "ok"))
        provenance = {
            "landscape_identity": str(f.attrs.get("identity", "")),
            "run_identity": str(f.attrs.get("run_identity", "")) or None,
            "hessian": store.digest(hessian),
        }
        run_identity = (model_state.get("provenance") or {}).get("identity")
        if provenance["run_identity"] != run_identity:
            raise DataError(
                f"{landscape_h5} was computed from another training of this run ({provenance['run_identity']!r}, "
                f"the model is {run_identity!r}). Rerun it: snakemake --cores 2 all"
            )
        if status != "ok":
            reason = str(f.attrs.get("reason", "the run diverged"))
            sharpness = {
                **dict.fromkeys(SHARPNESS_FIELDS),
                "loss_increase_at_radius": {},
                "diverged": True,
                "reason": reason,
                "split": str(f.attrs.get("split", "")),
                "head": model.norm_name,
                "hessian": dict(hessian),
                "provenance": provenance,
            }
            write_json(out_json, sharpness)
            return sharpness
        split, seed, span = str(f.attrs["split"]), int(f.attrs["direction_seed"]), float(f.attrs["span"])
        idx = f["subset_indices"][()]
        # np.asarray: a 0-d parameter's direction is read back as a NumPy scalar, not an array
        d1 = {k: torch.from_numpy(np.asarray(v[()])) for k, v in f["directions/d1"].items()}
        d2 = {k: torch.from_numpy(np.asarray(v[()])) for k, v in f["directions/d2"].items()}
        plane = f["plane/loss"][()]
    x, y = rows_as_tensors(features, split, idx)
    hidx = subset_rows(features, "train", hessian["samples"], seed)
    op = HessianOperator(model, *rows_as_tensors(features, "train", hidx))
    eigen = extreme_eigenvalues(op, hessian["lanczos_steps"], hessian["tol"], seed=seed)
    try:
        trace, trace_note = exact_trace(op.loss), None
    except SampleCouplingError as exc:  # a plugin norm that mixes samples: no exact trace, the estimate stays
        trace, trace_note = {"total": None}, str(exc)
    estimate, estimate_sem = hutchinson_trace(op, hessian["hutchinson_probes"], seed=seed)
    centre = float(plane[plane.shape[0] // 2, plane.shape[1] // 2])
    increase = {}
    for r in (r for r in (0.25, 0.5, 1.0) if r <= span):
        rl, _ = evaluate_line(model, x, y, d1, np.array([-r, r]))
        rl2, _ = evaluate_line(model, x, y, d2, np.array([-r, r]))
        increase[f"{r:g}"] = float(np.mean(np.concatenate([rl, rl2])) - centre)
    sharpness = {
        "top_eigenvalue": eigen["lambda_max"],
        "min_eigenvalue": eigen["lambda_min"],
        "saddle": eigen["saddle"],
        "eigenvalues": eigen,
        "hessian_trace": trace["total"],
        "hessian_trace_blocks": {k: v for k, v in trace.items() if k != "total"},
        "hessian_trace_note": trace_note,
        "hessian_trace_hutchinson": estimate,
        "hessian_trace_hutchinson_sem": estimate_sem,
        "loss_at_minimum": centre,
        "loss_increase_at_radius": increase,
        "samples": int(len(hidx)),
        "landscape_samples": int(len(idx)),
        "split": split,
        "head": model.norm_name,
        "hessian": dict(hessian),
        "diverged": False,
        "reason": None,
        "provenance": provenance,
    }
    write_json(out_json, sharpness)
    return sharpness
