"""Exact loss and accuracy of a head at many points of a plane in parameter space: one torch path for every norm.

The plane is theta(a, b) = theta* + a*d1 + b*d2. The naive way (the reference tool's, :func:`loop_evaluate`)
loads each point's weights into the model and runs a full forward pass: per point and sample that is the
in_features x hidden first layer again, the bulk of a head's work. But the first layer is affine in (a, b),

    Z(a, b) = X (W + a D1 + b D2)^T + (c + a e1 + b e2) = Z0 + a Z1 + b Z2,

so three GEMMs per plane replace one per point; each point then costs two multiply-adds per activation, the
norm, the ReLU, and its own second layer.

The norm is a black box — built in or registered by a user, any parameter or buffer shapes (0-d too),
BatchNorm in eval mode with its running statistics — called the way :mod:`normscape.curvature.head_loss` calls it: on a
chunk of points x samples at once. Where none of its parameters move along the plane (``ignore="biasbn"``, the
default) that is one ordinary call on the chunk's points' samples together; where they move, it is
``torch.func.functional_call`` with each point's parameters under ``torch.vmap`` over the chunk's points. The
second layer is linear too: every point's (W2 + a D2_1 + b D2_2, c2 + ...) is applied by one batched GEMM per
chunk, with the samples as the long axis (samples-last: the classes are few, and a GEMM whose N is 10 leaves
most of each SIMD register empty). Chunks are small enough (``POINTS_PER_CHUNK`` x ``SAMPLE_BLOCK``) for their
activations to stay in cache between the few torch ops that pass over them.

The result equals the per-point loop to float32 rounding for every norm and both ``ignore`` modes, and the
float64 loop to float32 accuracy (tests/test_landscape.py); benchmarks/bench_landscape.py measures the time.
A norm that cannot run under ``torch.vmap`` (an ``autograd.Function`` without a vmap rule: give it
``generate_vmap_rule = True``) still gets exact landscapes: its points are evaluated one at a time inside each
chunk, and the log says so once.
"""

from __future__ import annotations

import logging

import numpy as np
import torch
import torch.nn.functional as F
from torch.func import functional_call

from normscape.models.heads import ClassifierHead, build_head

log = logging.getLogger(__name__)
_LOGGED_UNBATCHED_NORMS: set[str] = set()  # norms whose vmap failure was logged (once per process)

Direction = dict[str, torch.Tensor]  # parameter name -> tensor shaped like the parameter

FIRST_LAYER = ("fc1.weight", "fc1.bias")
SECOND_LAYER = ("fc2.weight", "fc2.bias")
NORM_PREFIX = "norm."
# A chunk's (points, samples, hidden) activations: 4 MiB at hidden 256, in cache between the ops that pass over them;
# smaller chunks would multiply the per-chunk Python and vmap costs. CHUNK_BYTES caps a chunk for wide heads (a
# few such tensors are alive at once).
POINTS_PER_CHUNK = 8
SAMPLE_BLOCK = 256
POINT_CHUNKS_PER_GROUP = 32  # points whose parameters are made at once: 256 points' fc2 = 2.6 MB at hidden 256
CHUNK_BYTES = 64 * 2**20


def parameters_of(model: ClassifierHead) -> dict[str, torch.Tensor]:
    return {name: p.detach().clone() for name, p in model.named_parameters()}


# --------------------------------------------------------------------------------------------- the naive loop
@torch.no_grad()
def loop_evaluate(
    model: ClassifierHead,
    x: torch.Tensor,
    y: torch.Tensor,
    d1: Direction,
    d2: Direction,
    alphas: np.ndarray,
    betas: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """Reference: set the weights of every grid point and run a full forward pass (what the reference tool does)."""
    base = parameters_of(model)
    probe = build_head(model.norm_name, model.fc1.in_features, model.fc1.out_features, model.fc2.out_features)
    probe.load_state_dict(model.state_dict())
    probe.to(next(model.parameters()).dtype).eval()
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
class PlaneEvaluator:
    """Exact loss/accuracy of ``model`` (eval mode) at points theta* + a d1 + b d2: fc1 once per plane, then per
    chunk of points the norm (a black box) and fc2 as one batched GEMM. Works in the model's dtype."""

    def __init__(
        self,
        model: ClassifierHead,
        d1: Direction,
        d2: Direction,
        points_per_chunk: int = POINTS_PER_CHUNK,
        sample_block: int = SAMPLE_BLOCK,
    ):
        self.model = model.eval()
        self.norm_name = model.norm_name
        self.points_per_chunk, self.sample_block = points_per_chunk, sample_block
        p = parameters_of(model)
        self.fc1 = [(p[k], d1[k], d2[k]) for k in FIRST_LAYER]
        self.fc2 = [(p[k], d1[k], d2[k]) for k in SECOND_LAYER]
        # the norm's parameters that move along the plane (by their names inside the norm module); the others stay
        # the module's own, shared by every point
        self.norm_moving = {
            k[len(NORM_PREFIX) :]: (p[k], d1[k], d2[k])
            for k in p
            if k.startswith(NORM_PREFIX) and bool(d1[k].any() or d2[k].any())
        }
        unknown = set(p) - {*FIRST_LAYER, *SECOND_LAYER} - {k for k in p if k.startswith(NORM_PREFIX)}
        if unknown:
            raise ValueError(
                f"landscape.plane_eval knows fc1, the norm and fc2 of a head; {model.norm_name!r} also has {unknown}"
            )
        self.batched_norm = torch.vmap(self._norm_at_point)

    # ------------------------------------------------------------------------------------ the norm, black box
    def _norm_at_point(self, params: dict[str, torch.Tensor], z: torch.Tensor) -> torch.Tensor:
        return functional_call(self.model.norm, params, (z,))

    def _norm_point_by_point(self, params: dict[str, torch.Tensor], z: torch.Tensor) -> torch.Tensor:
        """The same function as :attr:`batched_norm`, one point at a time: for norms that cannot run under vmap."""
        return torch.stack([self._norm_at_point({k: v[i] for k, v in params.items()}, z[i]) for i in range(len(z))])

    def _norm(self, params: dict[str, torch.Tensor], z: torch.Tensor) -> torch.Tensor:
        """The norm of (points, samples, hidden) pre-activations, each point with its own parameters ``params``
        ((points, *shape) each). No moving parameter: one call on the points' samples together, as in training
        (vmap's batching rules can cost more than the norm itself, e.g. BatchNorm's in eval mode)."""
        if not params:
            return self.model.norm(z.view(-1, z.shape[-1])).reshape(z.shape)
        try:
            return self.batched_norm(params, z)
        except RuntimeError as err:
            if "vmap" not in str(err) or self.batched_norm == self._norm_point_by_point:
                raise
            if self.norm_name not in _LOGGED_UNBATCHED_NORMS:
                _LOGGED_UNBATCHED_NORMS.add(self.norm_name)
                log.info(
                    "norm %r cannot run under torch.vmap (%s): where its parameters move along a plane, its points "
                    "are evaluated one at a time (same numbers, slower); an autograd.Function in it needs "
                    "generate_vmap_rule = True to batch them",
                    self.norm_name,
                    str(err).splitlines()[0],
                )
            self.batched_norm = self._norm_point_by_point
            return self.batched_norm(params, z)

    def _point_parameters(self, a: torch.Tensor, b: torch.Tensor) -> tuple[dict, torch.Tensor, torch.Tensor]:
        """The points' own parameters after fc1: the norm's moving ones ((points, *shape) each), fc2's weight
        (points, classes, hidden) and bias (points, classes, 1)."""
        norm_params = {name: _along(base, da, db, a, b) for name, (base, da, db) in self.norm_moving.items()}
        (w2, w2a, w2b), (c2, c2a, c2b) = self.fc2
        return norm_params, _along(w2, w2a, w2b, a, b), _along(c2, c2a, c2b, a, b).unsqueeze(2)

    def _logits(self, z: torch.Tensor, norm_params: dict, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        """(points, classes, samples) logits from the points' fc1 outputs ``z`` (points, samples, hidden)."""
        # ReLU in place (as curvature.head_loss applies it, the head's fixed activation): the norm's output is a fresh
        # tensor or ``z`` itself (no norm), both this chunk's own, and an in-place pass skips writing a new buffer
        h = self.model.drop(torch.relu_(self._norm(norm_params, z)))
        # samples last: a GEMM with the long sample axis as N, not the few classes (which leave most of each SIMD
        # register empty), and the loss's reductions over the classes then run along it too
        return torch.baddbmm(bias, weight, h.transpose(1, 2))

    # ------------------------------------------------------------------------------------ the plane
    def _first_layer(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Z0, Z1, Z2 of the samples ``x``: (samples, hidden) each, three GEMMs for the whole plane."""
        (w, w1, w2), (c, c1, c2) = self.fc1
        return F.linear(x, w, c), F.linear(x, w1, c1), F.linear(x, w2, c2)

    def _chunk_shape(self, samples: int, hidden: int, itemsize: int) -> tuple[int, int]:
        """(points, samples) per chunk: the configured sizes, shrunk to keep one activation tensor <= CHUNK_BYTES."""
        block = max(1, min(self.sample_block, samples))
        points = max(1, min(self.points_per_chunk, CHUNK_BYTES // (block * hidden * itemsize)))
        return points, block

    @torch.no_grad()
    def evaluate(
        self, x: torch.Tensor, y: torch.Tensor, alphas: np.ndarray, betas: np.ndarray, progress: bool = False
    ) -> tuple[np.ndarray, np.ndarray]:
        """(mean cross-entropy, accuracy) at every (alpha, beta) of the grid: two (len(alphas), len(betas)) arrays."""
        from tqdm import tqdm

        dtype = self.fc1[0][0].dtype
        x = x.to(dtype)
        aa, bb = np.meshgrid(np.asarray(alphas, dtype=np.float64), np.asarray(betas, dtype=np.float64), indexing="ij")
        a_all, b_all = torch.from_numpy(aa.ravel()).to(dtype), torch.from_numpy(bb.ravel()).to(dtype)
        n_points = len(a_all)
        loss_sum = torch.zeros(n_points, dtype=torch.float64)
        correct = torch.zeros(n_points, dtype=torch.int64)
        z0, z1, z2 = self._first_layer(x)
        points, block = self._chunk_shape(len(x), z0.shape[1], z0.element_size())
        bar = tqdm(total=n_points, unit="point", desc="landscape", disable=not progress, mininterval=5)
        # Point groups, then sample blocks, then the group's point chunks: a sample block's Z0, Z1, Z2 stay in
        # cache across the group's chunks, and each point's parameters are made once per group.
        group = points * POINT_CHUNKS_PER_GROUP
        z_buffer = torch.empty(points * block, z0.shape[1], dtype=dtype)  # reused: stays in cache
        for g0 in range(0, n_points, group):
            g1 = min(g0 + group, n_points)
            a, b = a_all[g0:g1], b_all[g0:g1]
            norm_params, weight, bias = self._point_parameters(a, b)
            for s0 in range(0, len(x), block):
                s1 = min(s0 + block, len(x))
                zs = z0[s0:s1], z1[s0:s1], z2[s0:s1]
                labels = y[s0:s1].view(1, 1, -1)
                for c0 in range(0, g1 - g0, points):
                    c = slice(c0, min(c0 + points, g1 - g0))
                    z = z_buffer[: (c.stop - c.start) * (s1 - s0)].view(-1, s1 - s0, z0.shape[1])
                    torch.addcmul(zs[0], a[c].view(-1, 1, 1), zs[1], out=z)  # (points, samples, hidden)
                    z.addcmul_(b[c].view(-1, 1, 1), zs[2])
                    chunk_params = {name: t[c] for name, t in norm_params.items()}
                    logits = self._logits(z, chunk_params, weight[c], bias[c])  # (points, classes, samples)
                    nll, hits = _cross_entropy_and_hits(logits, labels.expand(len(z), 1, -1))
                    loss_sum[g0 + c.start : g0 + c.stop] += nll.sum(1, dtype=torch.float64)
                    correct[g0 + c.start : g0 + c.stop] += hits.sum(1)
            bar.update(g1 - g0)
        bar.close()
        shape = (len(alphas), len(betas))
        return (loss_sum / len(x)).view(shape).numpy(), (correct.double() / len(x)).view(shape).numpy()


def _cross_entropy_and_hits(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per point and sample: the cross-entropy and whether the label is the (first) largest logit, from
    (points, classes, samples) logits and (points, 1, samples) labels. One max serves both (logsumexp would take
    its own), and each op is a pass over the small logits: their fixed costs, not their flops, are what counts."""
    top = logits.max(1, keepdim=True)  # the first maximal index, as argmax() gives
    shifted = logits - top.values
    nll = shifted.exp().sum(1).log_() - shifted.gather(1, labels).squeeze(1)
    return nll, top.indices.squeeze(1) == labels.squeeze(1)


def _along(base: torch.Tensor, d1: torch.Tensor, d2: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """theta* + a d1 + b d2 for every point of ``a``, ``b``: (points, *base.shape), any base shape (0-d too)."""
    col = (-1,) + (1,) * base.dim()
    return base + a.view(col) * d1 + b.view(col) * d2
