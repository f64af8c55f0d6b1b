"""Loss landscapes of a trained head: directions, planes, lines, the trajectory's PCA plane, and sharpness.

Around trained parameters theta* the loss is evaluated on theta* + a*d1 + b*d2 (a 2D plane), theta* + a*d1
(a line), the init -> final interpolation, and the PCA plane of the optimisation trajectory. Directions are
seeded Gaussians with *filter normalisation* (Li et al. 2018): every row of every weight matrix is rescaled
to the norm of the same row of theta*; with ``ignore="biasbn"`` biases and normalisation parameters get a
zero direction.

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

from normscape.landscape.plane_eval import Direction, PlaneEvaluator, parameters_of
from normscape.models.heads import ClassifierHead, build_head

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


# --------------------------------------------------------------------------------------------- directions
def filter_normalized_direction(model: ClassifierHead, generator: torch.Generator, ignore: str = "biasbn") -> Direction:
    """A Gaussian direction, each weight row rescaled to the norm of theta*'s row (Li et al. 2018).

    1-D parameters (biases, gamma/beta/tau, eps) get zero with ``ignore="biasbn"``; otherwise they are rescaled
    as one filter each (the whole vector to the norm of theta*'s vector).
    """
    direction = {}
    for name, theta in parameters_of(model).items():
        d = torch.randn(theta.shape, generator=generator, dtype=theta.dtype)
        if theta.dim() <= 1:
            if ignore == "biasbn":
                d.zero_()
            else:
                d.mul_(theta.norm() / (d.norm() + 1e-10))
        else:
            rows_theta = theta.reshape(theta.shape[0], -1).norm(dim=1)
            rows_d = d.reshape(d.shape[0], -1).norm(dim=1)
            d.mul_((rows_theta / (rows_d + 1e-10)).view(-1, *([1] * (d.dim() - 1))))
        direction[name] = d
    return direction


def random_directions(model: ClassifierHead, seed: int, ignore: str = "biasbn") -> tuple[Direction, Direction]:
    """Two filter-normalised directions from ``seed``: the same random draws for every head of the same shapes."""
    g = torch.Generator().manual_seed(seed)
    return filter_normalized_direction(model, g, ignore), filter_normalized_direction(model, g, ignore)


def zero_direction(model: ClassifierHead) -> Direction:
    return {name: torch.zeros_like(p) for name, p in model.named_parameters()}


def unflatten(flat: torch.Tensor, model: ClassifierHead) -> Direction:
    out, offset = {}, 0
    for name, p in model.named_parameters():
        out[name] = flat[offset : offset + p.numel()].view_as(p).clone()
        offset += p.numel()
    return out


def flatten(direction: Direction, model: ClassifierHead) -> torch.Tensor:
    return torch.cat([direction[name].flatten() for name, _ in model.named_parameters()])


def evaluate_plane(
    model: ClassifierHead,
    x: torch.Tensor,
    y: torch.Tensor,
    d1: Direction,
    d2: Direction,
    alphas: np.ndarray,
    betas: np.ndarray,
    progress: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    return PlaneEvaluator(model, d1, d2).evaluate(x, y, alphas, betas, progress)


def evaluate_line(
    model: ClassifierHead, x: torch.Tensor, y: torch.Tensor, d: Direction, alphas: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    loss, acc = PlaneEvaluator(model, d, zero_direction(model)).evaluate(x, y, alphas, np.zeros(1))
    return loss[:, 0], acc[:, 0]


# --------------------------------------------------------------------------------------------- trajectory
def trajectory_pca(trajectory: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, np.ndarray]:
    """PCA of (theta_e - theta_final) over epochs (Li et al. 2018, Sec. 7).

    Returns (two orthonormal direction vectors (2, P), the trajectory projected on them (E+1, 2),
    explained variance ratio of the two components).
    """
    final = trajectory[-1]
    m = (trajectory[:-1] - final).double()
    centred = m - m.mean(0, keepdim=True)
    _, s, vh = torch.linalg.svd(centred, full_matrices=False)
    dirs = vh[:2]
    if dirs.shape[0] < 2:  # a single epoch: complete with an arbitrary orthogonal direction
        extra = torch.randn(m.shape[1], dtype=torch.float64, generator=torch.Generator().manual_seed(0))
        extra -= (extra @ dirs[0]) * dirs[0]
        dirs = torch.stack([dirs[0], extra / extra.norm()])
    coords = (trajectory.double() - final) @ dirs.t()
    var = s**2
    ratio = (var[:2] / var.sum()).numpy() if var.sum() > 0 else np.zeros(2)
    return dirs.float(), coords.float(), np.pad(ratio, (0, 2 - len(ratio)))


def pca_grid(coords: torch.Tensor, resolution: int, margin: float = 0.25) -> tuple[np.ndarray, np.ndarray]:
    """Grid axes covering the projected trajectory (and the final point at 0) with a relative margin."""
    axes = []
    for k in range(2):
        lo, hi = float(coords[:, k].min()), float(coords[:, k].max())
        lo, hi = min(lo, 0.0), max(hi, 0.0)
        pad = margin * max(hi - lo, 1e-3)
        axes.append(np.linspace(lo - pad, hi + pad, resolution))
    return axes[0], axes[1]


def subset_indices(n: int, samples: int, seed: int) -> np.ndarray:
    """A fixed, seeded subset of ``samples`` rows (all rows when there are fewer), sorted."""
    if samples >= n:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, size=samples, replace=False))


def subset_rows(features: str, split: str, samples: int, seed: int) -> np.ndarray:
    """:func:`subset_indices` of one split of a feature store (its length read from the file)."""
    from normscape.features import store

    return subset_indices(store.split_length(features, split), samples, seed)


def rows_as_tensors(features: str, split: str, rows: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """Features and labels (int64) of ``rows`` of one split; only those rows are read."""
    from normscape.features import store

    x, y = store.load_rows(features, split, rows)
    return torch.from_numpy(x), torch.from_numpy(y).long()


def grid_axis(span: float, resolution: int) -> np.ndarray:
    return np.linspace(-span, span, resolution)


# --------------------------------------------------------------------------------------------- one run
def load_head(path) -> ClassifierHead:
    return _load_head_file(path)[0]


def _load_head_file(path) -> tuple[ClassifierHead, dict]:
    from normscape.pipeline.errors import DataError

    state = torch.load(path, map_location="cpu", weights_only=False)
    model = build_head(**state["head_config"])
    try:
        model.load_state_dict(state["state_dict"])
    except RuntimeError as exc:  # the norm's (or head's) code changed since the run was trained
        problem = str(exc).strip().splitlines()[-1].strip()
        raise DataError(
            f"{path} does not fit the head that norm {state['head_config']['norm']!r} builds now ({problem}): its "
            "code changed after this run was trained. Retrain the run: snakemake --cores 2 all (a run's identity "
            "covers its norm's code, so Snakemake retrains it; for results of an older normscape add "
            "--forcerun train)."
        ) from None
    return model.eval(), state


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


def divergence_of(model: ClassifierHead, model_state: dict) -> str | None:
    """Why no landscape can be computed at this point (None: the run converged or at least stayed finite)."""
    if model_state.get("diverged"):
        return f"the run diverged: {model_state.get('diverged_reason') or 'see its summary.json'}"
    if not all(bool(torch.isfinite(p).all()) for p in model.parameters()):
        return "the trained parameters are not finite"
    return None


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
    the sample subset, which :func:`compute_sharpness` reuses). ``settings``: the landscape slice without hessian."""
    import h5py

    from normscape.pipeline.atomic import atomic_path

    model, model_state = _load_head_file(model_final)
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
    drawn). Its own rule: editing landscape.hessian.* reruns this, not the planes."""
    import h5py

    from normscape.curvature.hessian_diagonal import SampleCouplingError, exact_trace
    from normscape.curvature.sharpness import HessianOperator, extreme_eigenvalues, hutchinson_trace
    from normscape.features import store
    from normscape.pipeline.atomic import write_json
    from normscape.pipeline.errors import DataError

    model, model_state = _load_head_file(model_final)
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
