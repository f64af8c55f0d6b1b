"""Exact loss and accuracy of a head at many points of a plane in parameter space — fast.

The plane is theta(a, b) = theta* + a*d1 + b*d2. The naive way (the reference tool's, :func:`loop_evaluate`)
loads each point's weights into the model and runs a full forward pass: per point and sample that is the
1280 x 256 first layer again. Here the first layer is affine in (a, b),

    Z(a, b) = X (W + a D1 + b D2)^T + (c + a e1 + b e2) = Z0 + a Z1 + b Z2,

so Z0, Z1, Z2 are computed once per block of samples; each point then costs two multiply-adds per hidden unit,
its norm, the ReLU, and its own 10 x 256 second layer, W2 + a D2_1 + b D2_2.

Layout matters more than flops. The hidden activations of a block of P points and S samples are kept as
(P, hidden, S) — samples last — so the second layer is a batched (10 x 256) @ (256 x S) product: a GEMM with
a long N dimension runs ~4x faster on a CPU than the (S x 256) @ (256 x 10) of the row-major layout, whose
N = 10 leaves most of each SIMD register empty. That product was the bottleneck (~3.7 s of a 51 x 51 grid on
8,000 samples), not the elementwise part.

Norms, per point (eval mode, as in the landscapes):
  * BatchNorm uses its running statistics: a per-unit affine map. When its gamma/beta do not move along the
    plane (``ignore="biasbn"``, the default) it is folded into Z0, Z1, Z2 once per sample block and costs nothing.
  * LayerNorm/GroupNorm need each point's per-sample mean and variance of Z(a, b): both are polynomials in
    (a, b) of the per-sample moments of Z0, Z1, Z2 (precomputed in float64), so no reduction over the hidden
    units is done per point.
  * FRN/FRN-learned-eps are evaluated elementwise per point.
Each norm's rule (``identity``, ``running_affine``, ``moments``, ``frn``) is named in its registry entry
(normscape/norms.py); a norm registered without one is evaluated by :func:`loop_evaluate` (exact, slower).
The result equals the per-point loop to float rounding for every head and both ``ignore`` modes
(tests/test_landscape.py); benchmarks/bench_landscape.py measures the speed-up.

Where the native kernel ``normscape._planekernel`` is built, each point block's logits come from it in one pass:
the elementwise work (Z(a, b), the norm, ReLU) on 64-sample tiles that stay in cache, the second layer on
register tiles, the hidden activations never written to memory (each torch op would read and write the whole
block again, and the block does not fit in L2). :meth:`PlaneEvaluator._hidden` + ``baddbmm`` is the same
computation in torch ops — the fallback, and the reference the kernel is tested against.
"""

from __future__ import annotations

import logging

import numpy as np
import torch
import torch.nn.functional as F

from normscape.heads import ClassifierHead, build_head, is_norm_parameter
from normscape.norms import get_norm

try:
    from normscape import _planekernel as _native
except ImportError:  # no C compiler at install: the torch ops below (same numbers, slower)
    _native = None

log = logging.getLogger(__name__)
_EMPTY = np.empty(0, dtype=np.float32)  # an absent optional argument of the native kernel
_LOGGED_LOOP_NORMS: set[str] = set()  # fallbacks already logged (once per process): norm names, "_native"

Direction = dict[str, torch.Tensor]  # parameter name -> tensor shaped like the parameter

SAMPLE_BLOCK = 256  # samples per block: a block's (points, 256, samples) activations stay in L2/L3
POINT_BLOCK = 16
LOSS_CHUNK_BLOCKS = 16  # point blocks whose logits are stacked before the loss is taken
NATIVE_CLASS_TILE = 10  # TILE_CLASSES of src/normscape/_planekernel.c
MOMENT_PAIRS = ((0, 0), (0, 1), (0, 2), (1, 1), (1, 2), (2, 2))  # products Z_i Z_j whose means give E[Z(a, b)^2]


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
class PlaneEvaluator:
    """Exact loss/accuracy of ``model`` (eval mode) at points theta* + a d1 + b d2, blocked over samples/points."""

    def __init__(
        self,
        model: ClassifierHead,
        d1: Direction,
        d2: Direction,
        sample_block: int = SAMPLE_BLOCK,
        point_block: int = POINT_BLOCK,
        native: bool = True,
    ):
        self.model = model.eval()
        self.native = native and _native is not None
        if native and _native is None and "_native" not in _LOGGED_LOOP_NORMS:
            _LOGGED_LOOP_NORMS.add("_native")
            log.info("the native plane kernel normscape._planekernel is not built: landscapes use torch ops (slower)")
        self.norm_name = model.norm_name
        self.norm_module = model.norm
        self.sample_block, self.point_block = sample_block, point_block
        p = parameters_of(model)
        self.fc1 = [(p[k], d1[k], d2[k]) for k in ("fc1.weight", "fc1.bias")]
        self.fc2 = [(p[k], d1[k], d2[k]) for k in ("fc2.weight", "fc2.bias")]
        # norm parameters along the plane: name -> (base, d1, d2), each a column (hidden, 1) or a scalar (eps_l)
        self.norm_terms = {
            n[len("norm.") :]: tuple(t.reshape(-1, 1) for t in (p[n], d1[n], d2[n])) for n in p if is_norm_parameter(n)
        }
        self.norm_moves = any(bool(t[1].any() or t[2].any()) for t in self.norm_terms.values())
        self.rule = get_norm(self.norm_name).plane_rule  # how this norm is evaluated per point (norms.py)
        self.groups = getattr(self.norm_module, "num_groups", 1)  # "moments": GroupNorm's groups, LayerNorm 1
        self.d1, self.d2 = d1, d2
        if self.rule is None and self.norm_name not in _LOGGED_LOOP_NORMS:
            _LOGGED_LOOP_NORMS.add(self.norm_name)
            log.info(
                "norm %r has no fast plane rule (normscape/norms.py): exact landscape by the per-point loop "
                "evaluator (slower)",
                self.norm_name,
            )

    # ------------------------------------------------------------------------------------ per sample block
    def _first_layer(self, xs: torch.Tensor) -> list[torch.Tensor]:
        """Z0, Z1, Z2 transposed, (hidden, samples); eval BatchNorm with fixed gamma/beta folded in."""
        (w, w1, w2), (c, c1, c2) = self.fc1
        zs = [torch.addmm(ci.view(-1, 1), wi, xs.t()) for wi, ci in ((w, c), (w1, c1), (w2, c2))]
        if self.rule == "running_affine" and not self.norm_moves:
            m = self.norm_module
            scale = (m.weight.detach() * torch.rsqrt(m.running_var + m.eps)).view(-1, 1)
            shift = m.bias.detach().view(-1, 1) - m.running_mean.view(-1, 1) * scale
            zs = [torch.addcmul(shift, zs[0], scale), zs[1] * scale, zs[2] * scale]
        if self.rule == "moments":
            # per-sample, per-group means of Z_i and Z_i * Z_j: the statistics of Z(a, b) are polynomials in them
            # (so no reduction over the hidden units is done per point); float64: var = E[z^2] - E[z]^2 cancels
            g = [z.double().view(self.groups, -1, z.shape[1]) for z in zs]
            self._means = torch.stack([gi.mean(1) for gi in g]).flatten(1)  # (3, G*S)
            self._seconds = torch.stack([(g[i] * g[j]).mean(1) for i, j in MOMENT_PAIRS]).flatten(1)  # (6, G*S)
        return zs

    def _statistics(self, a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(-mean/std, 1/std) of Z(a, b) per point, group and sample: (P, G, 1, S) each, from the moments.

        E[Z] = m0 + a m1 + b m2 and E[Z^2] = sum over pairs (i, j) of c_i c_j q_ij with c = (1, a, b): two small
        float64 matrix products with the points' coefficient rows."""
        a, b = a.double().view(-1, 1), b.double().view(-1, 1)
        one = torch.ones_like(a)
        mean = torch.cat([one, a, b], 1) @ self._means  # (P, G*S)
        coef = torch.cat([one, 2 * a, 2 * b, a * a, 2 * a * b, b * b], 1)  # MOMENT_PAIRS order
        var = torch.addcmul(coef @ self._seconds, mean, mean, value=-1.0).clamp_(min=0.0)
        rstd = var.add_(self.norm_module.eps).rsqrt_()
        shape = (len(a), self.groups, 1, -1)
        return (-mean * rstd).float().view(shape), rstd.float().view(shape)

    def _norm_at(self, name: str, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        base, d1, d2 = self.norm_terms[name]
        return base + a * d1 + b * d2 if self.norm_moves else base  # (P, hidden, 1) or (hidden, 1)

    # ------------------------------------------------------------------------------------ per point block
    def _point_norm(self, a: torch.Tensor, b: torch.Tensor) -> tuple:
        """The norm's per-point terms after the statistics, for both paths: (gamma, beta, eps, tau), each None where
        the rule has none. gamma/beta: (hidden, 1) or (P, hidden, 1) when the norm's parameters move along the plane
        (BatchNorm's running statistics folded in); eps: FRN's, a float or (P | 1, 1, 1); tau: FRN's TLU."""
        rule, m = self.rule, self.norm_module
        if rule == "running_affine" and self.norm_moves:  # running statistics, gamma/beta moving: per-point affine
            inv_std = torch.rsqrt(m.running_var + m.eps).view(-1, 1)
            scale = self._norm_at("weight", a, b) * inv_std
            return scale, self._norm_at("bias", a, b) - m.running_mean.view(-1, 1) * scale, None, None
        if rule == "moments":
            return self._norm_at("weight", a, b), self._norm_at("bias", a, b), None, None
        if rule == "frn":
            eps = m.eps + self._norm_at("eps_l", a, b).abs() if m.learnable_eps else m.eps
            return self._norm_at("weight", a, b), self._norm_at("bias", a, b), eps, self._norm_at("tau", a, b)
        if rule not in ("identity", "running_affine"):
            raise ValueError(f"planeeval has no implementation of plane rule {rule!r}")
        return None, None, None, None

    def _native_args(self, zs, a, b, out, statistics) -> tuple:
        """The arguments of the native kernels up to ``per_point`` (see src/normscape/_planekernel.c)."""
        rule = self.rule
        hidden, samples = zs[0].shape
        P = len(a)

        def arg(t) -> np.ndarray:
            return _EMPTY if t is None else t.detach().contiguous().float().numpy()

        def per_point(t):  # (hidden, 1) shared or (P, hidden, 1) along the plane -> the kernel's layout
            return None if t is None else t.expand(P, hidden, 1) if self.norm_moves else t.reshape(hidden)

        gamma, beta, eps, tau = self._point_norm(a, b)
        shift, rstd = statistics if rule == "moments" else (None, None)
        if eps is not None:
            eps = torch.as_tensor(eps, dtype=torch.float32).reshape(-1).expand(P)
        return (
            *(arg(z) for z in zs),
            arg(a.reshape(-1)),
            arg(b.reshape(-1)),
            out.numpy(),
            hidden,
            samples,
            arg(shift),
            arg(rstd),
            self.groups if rule == "moments" else 1,
            arg(eps),
            *(arg(per_point(t)) for t in (gamma, beta, tau)),
            self.norm_moves,
        )

    def _logits_native(self, zs, a, b, statistics, second_layer, out) -> torch.Tensor:
        """(P, classes, samples) logits of the points (a, b): each point's second layer applied to its hidden
        activations inside the kernel (they are never stored). ``second_layer``: the points' (W2^T, c2), padded
        to whole class tiles (:meth:`_padded_second_layer`)."""
        w2t, c2 = second_layer
        classes = out.shape[1]
        _native.plane_logits(*self._native_args(zs, a, b, out, statistics), w2t, c2, classes, w2t.shape[2])
        return out

    @staticmethod
    def _padded_second_layer(w2_all: torch.Tensor, c2_all: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        """(points, hidden, padded) transposed weights and (points, padded) biases, classes zero-padded to a
        multiple of the native kernel's class tile."""
        points, classes, hidden = w2_all.shape
        padded = -(-classes // NATIVE_CLASS_TILE) * NATIVE_CLASS_TILE
        w2t = torch.zeros(points, hidden, padded)
        w2t[:, :, :classes] = w2_all.transpose(1, 2)
        c2 = torch.zeros(points, padded)
        c2[:, :classes] = c2_all.view(points, classes)
        return w2t.numpy(), c2.numpy()

    def _hidden(
        self,
        zs: list[torch.Tensor],
        a: torch.Tensor,
        b: torch.Tensor,
        out: torch.Tensor,
        statistics: tuple[torch.Tensor, torch.Tensor] | None,
        scratch: torch.Tensor | None,
    ) -> torch.Tensor:
        """ReLU(norm(Z(a, b))) for the points (a, b) of shape (P, 1, 1): (P, hidden, samples), computed in place
        in ``out`` (reused buffers: no fresh pages to fault in per block). ``statistics``: LayerNorm/GroupNorm's
        (-mean/std, 1/std) of these points; ``scratch``: a second buffer like ``out`` (FRN, torch path)."""
        z = torch.addcmul(zs[0], a, zs[1], out=out)
        z.addcmul_(b, zs[2])
        gamma, beta, eps, tau = self._point_norm(a, b)
        if self.rule == "moments":
            shift, rstd = statistics
            P, C, S = z.shape
            grouped = z.view(P, self.groups, C // self.groups, S)
            torch.addcmul(shift, grouped, rstd, out=grouped)  # (z - mean) / std
        if eps is not None:
            inv = torch.mul(z, z, out=scratch).add_(eps).rsqrt_()  # 1 / sqrt(z^2 + eps)
            z.mul_(inv)
        if gamma is not None:
            torch.addcmul(beta, z, gamma, out=z)
        if tau is not None:
            torch.maximum(z, tau, out=z)  # TLU
        return z.relu_()

    @torch.no_grad()
    def evaluate(
        self, x: torch.Tensor, y: torch.Tensor, alphas: np.ndarray, betas: np.ndarray, progress: bool = False
    ) -> tuple[np.ndarray, np.ndarray]:
        """(mean cross-entropy, accuracy) at every (alpha, beta) of the grid: two (len(alphas), len(betas)) arrays."""
        from tqdm import tqdm

        if self.rule is None:  # a registered norm without a fast rule: the exact per-point loop
            return loop_evaluate(self.model, x, y, self.d1, self.d2, alphas, betas)
        aa, bb = np.meshgrid(np.asarray(alphas, dtype=np.float64), np.asarray(betas, dtype=np.float64), indexing="ij")
        a_all = torch.from_numpy(aa.ravel()).float()
        b_all = torch.from_numpy(bb.ravel()).float()
        n_points = len(a_all)
        loss_sum = torch.zeros(n_points, dtype=torch.float64)
        correct = torch.zeros(n_points, dtype=torch.int64)
        # every point's own second layer, (points, classes, hidden) and (points, classes, 1): small, made once
        (w2, w2a, w2b), (c2, c2a, c2b) = self.fc2
        col = a_all.view(-1, 1, 1), b_all.view(-1, 1, 1)
        w2_all = torch.addcmul(torch.addcmul(w2, col[0], w2a), col[1], w2b)
        c2_all = torch.addcmul(torch.addcmul(c2.view(-1, 1), col[0], c2a.view(-1, 1)), col[1], c2b.view(-1, 1))
        bar = tqdm(total=len(x), unit="sample", desc="landscape", disable=not progress, mininterval=5)
        hidden, classes = w2.shape[1], w2.shape[0]
        block_samples = min(self.sample_block, len(x))
        # The loss of a chunk of points is taken in one go from their stacked logits: a dozen small ops per chunk
        # instead of per point block (their fixed costs were ~a quarter of the time).
        chunk = self.point_block * LOSS_CHUNK_BLOCKS
        second_layer = None
        if self.native:  # the kernel's layout replaces the torch path's (one copy of every point's layer in memory)
            second_layer = self._padded_second_layer(w2_all, c2_all)
            del w2_all, c2_all
        hidden_buffer = torch.empty(0 if self.native else self.point_block * hidden * block_samples)
        scratch_buffer = torch.empty_like(hidden_buffer) if self.rule == "frn" and not self.native else None
        logits_buffer = torch.empty(min(chunk, n_points) * classes * block_samples)
        for s in range(0, len(x), self.sample_block):
            xs, ys = x[s : s + self.sample_block], y[s : s + self.sample_block]
            n = len(xs)
            zs = self._first_layer(xs)
            labels = ys.view(1, 1, n)
            for c0 in range(0, n_points, chunk):
                c1 = min(c0 + chunk, n_points)
                logits = logits_buffer[: (c1 - c0) * classes * n].view(c1 - c0, classes, n)
                chunk_stats = None
                if self.rule == "moments":  # for the whole chunk at once: few, larger ops
                    chunk_stats = self._statistics(a_all[c0:c1].view(-1, 1, 1), b_all[c0:c1].view(-1, 1, 1))
                for p0 in range(c0, c1, self.point_block):
                    p1 = min(p0 + self.point_block, c1)
                    a, b = a_all[p0:p1].view(-1, 1, 1), b_all[p0:p1].view(-1, 1, 1)
                    size = (p1 - p0) * hidden * n
                    stats = None if chunk_stats is None else tuple(t[p0 - c0 : p1 - c0] for t in chunk_stats)
                    shape = (p1 - p0, hidden, n)
                    scratch = None if scratch_buffer is None else scratch_buffer[:size].view(shape)
                    if self.native:  # hidden activations and second layer in one kernel
                        points = slice(p0, p1)
                        layer = (second_layer[0][points], second_layer[1][points])
                        self._logits_native(zs, a, b, stats, layer, logits[p0 - c0 : p1 - c0])
                        continue
                    h = self._hidden(zs, a, b, hidden_buffer[:size].view(shape), stats, scratch)
                    torch.baddbmm(c2_all[p0:p1], w2_all[p0:p1], h, out=logits[p0 - c0 : p1 - c0])  # (P, classes, S)
                picked = logits.gather(1, labels.expand(c1 - c0, 1, n)).squeeze(1)
                nll = torch.logsumexp(logits, dim=1) - picked  # (points, S)
                loss_sum[c0:c1] += nll.sum(1, dtype=torch.float64)
                # max() gives the first maximal index like argmax(), and reduces the class axis ~15x faster
                correct[c0:c1] += (logits.max(1).indices == labels.view(1, n)).sum(1)
            bar.update(n)
        bar.close()
        shape = (len(alphas), len(betas))
        return (loss_sum / len(x)).view(shape).numpy(), (correct.double() / len(x)).view(shape).numpy()
