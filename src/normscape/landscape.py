"""Loss landscapes of a trained head: exact, and fast because the head's first layer is affine in the grid.

Around trained parameters theta* the loss is evaluated on theta* + a*d1 + b*d2 (a 2D plane), theta* + a*d1
(a line), the init -> final interpolation, and the PCA plane of the optimisation trajectory. Directions are
seeded Gaussians with *filter normalisation* (Li et al. 2018): every row of every weight matrix is rescaled
to the norm of the same row of theta*; with ``ignore="biasbn"`` biases and normalisation parameters get a
zero direction.

The naive way (the reference tool's) loads each grid point's weights into the model and runs a full forward
pass. Here, for a block of samples X, fc1's pre-activation is affine in (a, b):

    Z(a, b) = X (W + a D1 + b D2)^T + (c + a e1 + b e2) = Z0 + a Z1 + b Z2,

so Z0, Z1, Z2 are computed once per sample block; each grid point then costs two fused multiply-adds, its
norm (BatchNorm in eval is a per-unit affine map; LayerNorm/GroupNorm/FRN are computed per point), the ReLU,
and the second layer, which is ONE matrix product of the stacked hidden activations with [W2; D2_1; D2_2].
Points and samples are processed in blocks small enough for the temporaries to stay in cache. The result
equals the per-point loop to float rounding (tests/test_landscape.py checks every head type).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from normscape.heads import ClassifierHead, build_head, is_norm_parameter

log = logging.getLogger(__name__)

Direction = dict[str, torch.Tensor]  # parameter name -> tensor shaped like the parameter


# --------------------------------------------------------------------------------------------- directions
def parameters_of(model: ClassifierHead) -> dict[str, torch.Tensor]:
    return {name: p.detach().clone() for name, p in model.named_parameters()}


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
        out[name] = flat[offset:offset + p.numel()].view_as(p).clone()
        offset += p.numel()
    return out


def flatten(direction: Direction, model: ClassifierHead) -> torch.Tensor:
    return torch.cat([direction[name].flatten() for name, _ in model.named_parameters()])


# --------------------------------------------------------------------------------------------- the naive loop
@torch.no_grad()
def loop_evaluate(model: ClassifierHead, x: torch.Tensor, y: torch.Tensor, d1: Direction, d2: Direction,
                  alphas: np.ndarray, betas: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Reference: set the weights of every grid point and run a full forward pass (what the reference tool does)."""
    base = parameters_of(model)
    probe = build_head(model.norm_name, model.fc1.in_features, model.fc1.out_features, model.fc2.out_features)
    probe.load_state_dict(model.state_dict())
    probe.eval()
    loss = np.zeros((len(alphas), len(betas)))
    acc = np.zeros_like(loss)
    params = dict(probe.named_parameters())
    for i, a in enumerate(alphas):
        for j, b in enumerate(betas):
            for name, theta in base.items():
                params[name].copy_(theta + float(a) * d1[name] + float(b) * d2[name])
            logits = probe(x)
            loss[i, j] = F.cross_entropy(logits, y).item()
            acc[i, j] = (logits.argmax(1) == y).float().mean().item()
    return loss, acc


# --------------------------------------------------------------------------------------------- the fast path
@dataclass
class _NormTerms:
    """Norm parameters along the plane: value = base + a*d1 + b*d2 for each named tensor."""

    base: dict[str, torch.Tensor]
    d1: dict[str, torch.Tensor]
    d2: dict[str, torch.Tensor]

    def at(self, name: str, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        # a, b: (P, 1, 1); result (P, 1, C) or (P, 1, 1) broadcastable over (P, n, C)
        return self.base[name] + a * self.d1[name] + b * self.d2[name]


class FastLandscape:
    """Exact loss/accuracy of a head on a plane theta* + a d1 + b d2, blocked over samples and grid points."""

    def __init__(self, model: ClassifierHead, d1: Direction, d2: Direction, sample_block: int = 1024,
                 point_block: int = 16):
        self.model = model.eval()
        self.norm_name = model.norm_name
        self.d1, self.d2 = d1, d2
        self.sample_block, self.point_block = sample_block, point_block
        p = parameters_of(model)
        # second layer for all points at once: logits = H [W2; D2_1; D2_2]^T combined per point with (1, a, b)
        self.w2_stack = torch.cat([p["fc2.weight"], d1["fc2.weight"], d2["fc2.weight"]]).t().contiguous()
        self.c2 = (p["fc2.bias"], d1["fc2.bias"], d2["fc2.bias"])
        self.fc1 = (p["fc1.weight"], p["fc1.bias"], d1["fc1.weight"], d1["fc1.bias"], d2["fc1.weight"], d2["fc1.bias"])
        norm_params = {n[len("norm."):]: v for n, v in p.items() if is_norm_parameter(n)}
        self.norm_terms = _NormTerms(norm_params, {k: d1[f"norm.{k}"] for k in norm_params},
                                     {k: d2[f"norm.{k}"] for k in norm_params})
        self.norm_module = model.norm
        self.num_classes = p["fc2.weight"].shape[0]

    def _norm(self, z: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """Apply the head's norm to pre-activations z (P, n, C) at the points (a, b) (shape (P, 1, 1))."""
        name, m, t = self.norm_name, self.norm_module, self.norm_terms
        if name == "none":
            return z
        if name == "batch":  # eval mode: running statistics, a per-unit affine map
            inv_std = torch.rsqrt(m.running_var + m.eps)
            scale = t.at("weight", a, b) * inv_std
            shift = t.at("bias", a, b) - m.running_mean * scale
            return torch.addcmul(shift, z, scale)
        if name in ("layer", "group"):
            # Mean and variance of z over each normalisation group are quadratic in (a, b): computed from the
            # per-sample moments of z0, z1, z2 (precomputed in float64) instead of reducing over (P, n, C).
            mean, var = self._moments(a, b)                  # (P, n, G)
            rstd = torch.rsqrt(var + m.eps)
            P, n, C = z.shape
            groups = mean.shape[-1]
            zn = torch.addcmul((-mean * rstd).unsqueeze(-1), z.view(P, n, groups, C // groups), rstd.unsqueeze(-1))
            return torch.addcmul(t.at("bias", a, b), zn.view(P, n, C), t.at("weight", a, b))
        if name in ("frn", "frn_learned_eps"):
            eps = m.eps + t.at("eps_l", a, b).abs() if m.learnable_eps else m.eps
            zn = z * torch.rsqrt(z * z + eps)
            y = torch.addcmul(t.at("bias", a, b), zn, t.at("weight", a, b))
            return torch.maximum(y, t.at("tau", a, b))
        raise ValueError(f"no fast landscape path for norm {name!r}")

    def _prepare_moments(self, z0: torch.Tensor, z1: torch.Tensor, z2: torch.Tensor) -> None:
        """Per-sample, per-group means of z_i and z_i * z_j (i, j in 0..2) for LayerNorm/GroupNorm."""
        if self.norm_name not in ("layer", "group"):
            return
        groups = 1 if self.norm_name == "layer" else self.norm_module.num_groups
        zs = [z.double().view(z.shape[0], groups, -1) for z in (z0, z1, z2)]
        self._m = [zi.mean(-1) for zi in zs]
        self._q = {(i, j): (zs[i] * zs[j]).mean(-1) for i in range(3) for j in range(i, 3)}

    def _moments(self, a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        a, b = a.double(), b.double()
        m0, m1, m2 = self._m
        q = self._q
        mean = m0 + a * m1 + b * m2
        second = (q[0, 0] + 2 * a * q[0, 1] + 2 * b * q[0, 2] + a * a * q[1, 1] + 2 * a * b * q[1, 2]
                  + b * b * q[2, 2])
        var = (second - mean * mean).clamp_(min=0.0)
        return mean.float(), var.float()

    @torch.no_grad()
    def evaluate(self, x: torch.Tensor, y: torch.Tensor, alphas: np.ndarray, betas: np.ndarray,
                 progress: bool = False) -> tuple[np.ndarray, np.ndarray]:
        from tqdm import tqdm

        aa, bb = np.meshgrid(np.asarray(alphas, dtype=np.float64), np.asarray(betas, dtype=np.float64), indexing="ij")
        a_all = torch.from_numpy(aa.ravel()).float()
        b_all = torch.from_numpy(bb.ravel()).float()
        n_points = len(a_all)
        loss_sum = torch.zeros(n_points, dtype=torch.float64)
        correct = torch.zeros(n_points, dtype=torch.int64)
        w1, c1, w1a, c1a, w1b, c1b = self.fc1
        c2, c2a, c2b = self.c2
        k = self.num_classes
        bar = tqdm(total=len(x), unit="sample", desc="landscape", disable=not progress, mininterval=5)
        for s in range(0, len(x), self.sample_block):
            xs, ys = x[s:s + self.sample_block], y[s:s + self.sample_block]
            n = len(xs)
            z0 = torch.addmm(c1, xs, w1.t())
            z1 = torch.addmm(c1a, xs, w1a.t())
            z2 = torch.addmm(c1b, xs, w1b.t())
            self._prepare_moments(z0, z1, z2)
            for p0 in range(0, n_points, self.point_block):
                a = a_all[p0:p0 + self.point_block].view(-1, 1, 1)
                b = b_all[p0:p0 + self.point_block].view(-1, 1, 1)
                z = torch.addcmul(z0, a, z1)          # (P, n, C)
                z.addcmul_(b, z2)
                h = self._norm(z, a, b).relu_()
                out = (h.view(-1, h.shape[-1]) @ self.w2_stack).view(len(a), n, 3, k)
                logits = out[:, :, 0] + a * out[:, :, 1] + b * out[:, :, 2]
                logits += (c2 + a * c2a + b * c2b)
                lse = torch.logsumexp(logits, dim=-1)
                picked = logits.gather(-1, ys.view(1, n, 1).expand(len(a), n, 1)).squeeze(-1)
                loss_sum[p0:p0 + len(a)] += (lse - picked).sum(1).double()
                correct[p0:p0 + len(a)] += (logits.argmax(-1) == ys.view(1, n)).sum(1)
            bar.update(n)
        bar.close()
        shape = (len(alphas), len(betas))
        return (loss_sum / len(x)).view(shape).numpy(), (correct.double() / len(x)).view(shape).numpy()


def evaluate_plane(model: ClassifierHead, x: torch.Tensor, y: torch.Tensor, d1: Direction, d2: Direction,
                   alphas: np.ndarray, betas: np.ndarray, progress: bool = False) -> tuple[np.ndarray, np.ndarray]:
    return FastLandscape(model, d1, d2).evaluate(x, y, alphas, betas, progress)


def evaluate_line(model: ClassifierHead, x: torch.Tensor, y: torch.Tensor, d: Direction,
                  alphas: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    loss, acc = FastLandscape(model, d, zero_direction(model)).evaluate(x, y, alphas, np.zeros(1))
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
    var = (s ** 2)
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


def grid_axis(span: float, resolution: int) -> np.ndarray:
    return np.linspace(-span, span, resolution)



# --------------------------------------------------------------------------------------------- one run
def load_head(path) -> ClassifierHead:
    state = torch.load(path, map_location="cpu", weights_only=False)
    model = build_head(**state["head_config"])
    model.load_state_dict(state["state_dict"])
    return model.eval()


def compute_landscape(model_final: str, model_init: str, trajectory: str, features: str, out_h5: str,
                      out_json: str, settings: dict, progress: bool = True) -> dict:
    """Every landscape of one run (plane, line, interpolation, PCA plane) + sharpness numbers -> files."""
    import h5py

    from normscape import featurestore
    from normscape.atomic import atomic_path, write_json
    from normscape.hessian import HessianOperator, hutchinson_trace, top_eigenvalue

    model = load_head(model_final)
    init = load_head(model_init)
    x_all, y_all = featurestore.load_split(features, settings["split"])
    idx = subset_indices(len(x_all), settings["samples"], settings["direction_seed"])
    x, y = torch.from_numpy(x_all[idx]), torch.from_numpy(y_all[idx]).long()
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

    hs = settings["hessian"]
    x_tr, y_tr = featurestore.load_split(features, "train")
    hidx = subset_indices(len(x_tr), hs["samples"], settings["direction_seed"])
    op = HessianOperator(model, torch.from_numpy(x_tr[hidx]), torch.from_numpy(y_tr[hidx]).long())
    top, iters = top_eigenvalue(op, hs["power_iters"], hs["tol"], seed=settings["direction_seed"])
    trace, trace_sem = hutchinson_trace(op, hs["hutchinson_probes"], seed=settings["direction_seed"])
    centre = float(plane_loss[len(axis) // 2, len(axis) // 2])
    radii = [r for r in (0.25, 0.5, 1.0) if r <= settings["span"]]
    increase = {}
    for r in radii:
        rl, _ = evaluate_line(model, x, y, d1, np.array([-r, r]))
        rl2, _ = evaluate_line(model, x, y, d2, np.array([-r, r]))
        increase[f"{r:g}"] = float(np.mean(np.concatenate([rl, rl2])) - centre)
    sharpness = {"top_eigenvalue": top, "power_iterations": iters, "hessian_trace": trace,
                 "hessian_trace_sem": trace_sem, "loss_at_minimum": centre, "loss_increase_at_radius": increase,
                 "samples": int(len(hidx)), "landscape_samples": int(len(idx)), "split": settings["split"],
                 "head": model.norm_name}
    with atomic_path(out_h5, suffix=".h5") as tmp, h5py.File(tmp, "w") as f:
        for key, value in settings.items():
            if not isinstance(value, dict):
                f.attrs[key] = value
        for key, value in settings["hessian"].items():
            f.attrs[f"hessian_{key}"] = value
        f.attrs["head"] = model.norm_name
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
        for k, v in (("alphas", pa), ("betas", pb), ("loss", pca_loss), ("acc", pca_acc),
                     ("trajectory", coords.numpy()), ("explained_variance_ratio", ratio)):
            g.create_dataset(k, data=v)
        g = f.create_group("directions")
        for name in d1:
            g.create_dataset(f"d1/{name}", data=d1[name].numpy())
            g.create_dataset(f"d2/{name}", data=d2[name].numpy())
    write_json(out_json, sharpness)
    return sharpness
