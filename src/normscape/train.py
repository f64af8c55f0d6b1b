"""The training engine: one head, one condition, one seed, from cached features.

Why it is fast (benchmarks/bench_train.py compares it with the usual DataLoader loop, interleaved in one
process). Per step the head's arithmetic is two small GEMMs; everything else is overhead, so overhead is what
is cut:
  * the features live in memory as one tensor; each epoch draws a seeded permutation and each batch is one
    ``index_select`` of its rows — no per-sample DataLoader, no collate, no copy of the whole set;
  * all parameters live in one flat tensor and all gradients in another (every ``p.data``/``p.grad`` is a
    view): the global norm, clipping (one multiply, skipped when the norm is below the threshold), the
    histograms and the fused Adam update are each ONE op over one buffer; Adam's kernel is called without
    torch.optim's per-step Python and import cost (normscape.flat_adam: bit for bit the same update);
  * everything after the first layer (norm, ReLU, fc2, cross-entropy, their backward) is one native call
    (:class:`normscape.headstep.HeadStep`) instead of ~20 small torch ops and their autograd nodes, for every
    norm with a ``train_rule``; the others take torch's autograd path (same function, to float32 rounding);
  * the first layer's 1280 x 256 weight gradient is written straight into that buffer (both paths; autograd's
    :class:`LinearGradInto`) instead of being zeroed, computed into a temporary and accumulated — three passes
    over 1.3 MB saved;
  * gradient histograms of every element are one native pass (normscape.gradhist);
  * losses, accuracies and norms are read back with ``.item()``: the trainer runs on the CPU, where ops are
    synchronous, so that costs nothing, unlike a handful of tiny accumulation ops per step.

Trustworthy runs: the same config + seed gives identical metrics on CPU; a checkpoint with model, optimiser,
RNG state, histograms and metrics is written atomically after every epoch, and a restarted run resumes from it
and ends with exactly the metrics of an uninterrupted run. A checkpoint is resumed only when its identity — the
run's config slice, the feature cache's recorded identity and ``ENGINE_VERSION`` — equals the job's; otherwise
it is discarded with one log line saying which part differs. Every output records that identity
(``summary.json["provenance"]``, the ``provenance`` entry of every ``model_*.pt`` and ``trajectory.pt``).

Divergence (:func:`divergence_reason`): an epoch diverges when a loss or a parameter is not finite, or when the
training or validation loss exceeds ``DIVERGENCE_LOSS_FACTOR`` x the validation loss at initialisation (an
exploded but finite loss, e.g. 1e19 at lr 1e6). The run stops there and still writes all its outputs, marked
diverged.
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import math
import time
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import torch
import torch.nn.functional as F

from normscape import featurestore
from normscape.atomic import atomic_path, write_json
from normscape.checkpoint import discard_checkpoint, load_checkpoint, save_checkpoint
from normscape.flat_adam import FlatAdam
from normscape.gradhist import GradHistogram
from normscape.heads import build_head
from normscape.headstep import HeadStep

log = logging.getLogger(__name__)

METRIC_COLUMNS = [
    "epoch",
    "train_loss",
    "train_acc",
    "val_loss",
    "val_acc",
    "lr",
    "grad_norm_mean",
    "grad_norm_median",
    "grad_norm_p99",
    "grad_norm_max",
    "clipped_fraction",
    "epoch_time_s",
    "diverged",
]
ACC_THRESHOLDS = (0.80, 0.85)
EVAL_CHUNK = 8192
CLIP_EPS = 1e-6  # as in torch.nn.utils.clip_grad_norm_
# Part of every checkpoint's identity: a checkpoint written by an engine with another state layout (e.g. the
# optimiser over separate parameters, before version 2) is not resumed but retrained from scratch.
ENGINE_VERSION = 4  # 3: divergence also on non-finite parameters and exploded finite losses; 4: native head step
# A loss this many times the initial validation loss (~ln 10 = 2.3 for a fresh head) is an explosion, not
# training: a head that learns never gets there, a step size that has blown up does within an epoch.
DIVERGENCE_LOSS_FACTOR = 1000.0


class LinearGradInto(torch.autograd.Function):
    """``x @ weight.T + bias`` whose backward WRITES the weight and bias gradients into given buffers.

    Autograd would compute the first layer's 1280 x 256 weight gradient into a fresh tensor and add it to the
    (zeroed) ``.grad``: a zeroing pass, a temporary and a read-modify-write over 1.3 MB every step. Writing it
    straight into the trainer's flat gradient buffer gives the same values (``mm(grad_out.T, x)``, as
    AddmmBackward does) with one write. Autograd receives no gradient for ``weight``/``bias`` (None), so it
    accumulates nothing there.
    """

    @staticmethod
    def forward(ctx, x, weight, bias, grad_weight, grad_bias):
        ctx.save_for_backward(x, weight)
        ctx.grad_buffers = (grad_weight, grad_bias)
        return torch.addmm(bias, x, weight.t())

    @staticmethod
    def backward(ctx, grad_out):
        x, weight = ctx.saved_tensors
        grad_weight, grad_bias = ctx.grad_buffers
        torch.mm(grad_out.t(), x, out=grad_weight)
        torch.sum(grad_out, 0, out=grad_bias)
        grad_x = grad_out @ weight if ctx.needs_input_grad[0] else None
        return grad_x, None, None, None, None


def _to_cpu(obj: Any) -> Any:
    """``obj`` with every tensor in it on the CPU (the same tensors where they already are)."""
    if isinstance(obj, torch.Tensor):
        return obj.cpu()
    if isinstance(obj, dict):
        return {k: _to_cpu(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_to_cpu(v) for v in obj)
    return obj


def config_hash(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def divergence_reason(train_loss: float, val_loss: float, params: torch.Tensor, initial_loss: float) -> str | None:
    """Why an epoch counts as diverged, or None (see the module docstring for the rule)."""
    if not (math.isfinite(train_loss) and math.isfinite(val_loss)):
        return f"non-finite loss (train {train_loss}, val {val_loss})"
    if not bool(torch.isfinite(params).all()):
        return "non-finite parameters"
    limit = DIVERGENCE_LOSS_FACTOR * initial_loss
    if max(train_loss, val_loss) > limit:
        return (
            f"loss exploded (train {train_loss:.3g}, val {val_loss:.3g} > {DIVERGENCE_LOSS_FACTOR:g} x the "
            f"initial val loss {initial_loss:.3g})"
        )
    return None


def epoch_seed(seed: int, epoch: int) -> int:
    """Seed of epoch ``epoch``'s shuffle: independent of how many epochs ran before (resume-safe)."""
    return seed * 1_000_003 + epoch


@torch.no_grad()
def evaluate(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
    """(mean cross-entropy, accuracy) of ``model`` in eval mode on (x, y)."""
    was_training = model.training
    model.eval()
    loss_sum = torch.zeros((), dtype=torch.float64, device=x.device)
    correct = torch.zeros((), dtype=torch.int64, device=x.device)
    for start in range(0, len(x), EVAL_CHUNK):
        logits = model(x[start : start + EVAL_CHUNK])
        yb = y[start : start + EVAL_CHUNK]
        loss_sum += F.cross_entropy(logits, yb, reduction="sum").double()
        correct += (logits.argmax(1) == yb).sum()
    model.train(was_training)
    n = max(len(x), 1)
    return float(loss_sum) / n, float(correct) / n


def norm_stats(norms: np.ndarray) -> dict[str, float]:
    """Mean, median, 99th percentile and max of the finite per-step gradient norms (NaN when there are none)."""
    finite = norms[np.isfinite(norms)]
    if not finite.size:
        return dict.fromkeys(("mean", "median", "p99", "max"), math.nan)
    return {
        "mean": float(finite.mean()),
        "median": float(np.median(finite)),
        "p99": float(np.percentile(finite, 99)),
        "max": float(finite.max()),
    }


class Trainer:
    """Trains one head; see :func:`train_run` for the file outputs."""

    def __init__(
        self,
        data: dict[str, tuple[torch.Tensor, torch.Tensor]],
        norm: str,
        seed: int,
        epochs: int,
        batch_size: int,
        lr: float,
        weight_decay: float = 0.0,
        clip_grad_norm: float | None = None,
        hidden: int = 256,
        dropout: float = 0.0,
        grad_hist: dict | None = None,
        tracker: Any = None,
        probe: Any = None,
        keep_trajectory: bool = True,
        device: str | torch.device = "cpu",
        native_step: bool = True,
    ):
        # ``device``: where the head trains (the pipeline: cpu, whose runs are bit-reproducible on one machine).
        # The initialisation, the shuffles and everything written (checkpoints, models, trajectory, histograms)
        # are the same on every device: made on and kept on the CPU. On a GPU, dropout > 0 draws from the GPU's
        # generator, which checkpoints do not hold: such runs are not resumed bit for bit.
        self.device = torch.device(device)
        data = {split: (x.to(self.device), y.to(self.device)) for split, (x, y) in data.items()}
        self.data = data
        # optional diagnostics hook (normscape.smoothness.SmoothnessProbe): called as probe(trainer, step, xb, yb)
        # before every optimiser step, with the gradient Adam is about to receive in flat_grad; it must not
        # change the model, the optimiser or the RNG. Its records travel in the checkpoint.
        self.probe = probe
        self.seed, self.epochs, self.batch_size = seed, epochs, batch_size
        self.lr, self.weight_decay, self.clip = lr, weight_decay, clip_grad_norm
        x_train = data["train"][0]
        self.head_config = {
            "norm": norm,
            "in_features": int(x_train.shape[1]),
            "hidden": hidden,
            "num_classes": int(max(int(y.max()) for _, y in data.values()) + 1),  # from the data (10, 100, ...)
            "dropout": dropout,
        }
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.model = build_head(**self.head_config).to(self.device)
            # The run's own RNG stream (dropout): restored before and saved after every epoch, so runs in one
            # process do not disturb each other and a resumed run continues the exact stream.
            self.rng_state = torch.get_rng_state()
        self.names = [n for n, _ in self.model.named_parameters()]
        self.params = [p for _, p in self.model.named_parameters()]
        sizes = [p.numel() for p in self.params]
        # All parameters live in ONE flat tensor and all gradients in another (each p.data / p.grad is a view):
        # the global norm, clipping, zeroing, the histograms and the Adam update are then single ops over one
        # buffer instead of one small op per parameter.
        self.flat_param = torch.nn.Parameter(torch.cat([p.detach().flatten() for p in self.params]))
        self.flat_grad = torch.zeros_like(self.flat_param)
        self.flat_param.grad = self.flat_grad
        for p, value, grad in zip(self.params, self.flat_param.detach().split(sizes), self.flat_grad.split(sizes)):
            p.data = value.view_as(p)
            p.grad = grad.view_as(p)
        # The first layer's gradients are written (not accumulated) by LinearGradInto: only the rest is zeroed.
        self.fc1_grads = (self.model.fc1.weight.grad, self.model.fc1.bias.grad)
        assert self.names[:2] == ["fc1.weight", "fc1.bias"]
        self.accumulated_grad = self.flat_grad[sizes[0] + sizes[1] :]
        # ``native_step``: the step after fc1 in one native call where the norm has a train rule (else autograd)
        self.head_step = HeadStep.build(self.model) if native_step else None
        # fused Adam on the one flat tensor: one kernel per step, bit for bit torch.optim.Adam(fused=True)
        self.opt = FlatAdam(self.flat_param, lr=lr, weight_decay=weight_decay)
        gh = grad_hist or {"min": 1e-9, "max": 10.0, "bins_per_octave": 4}
        self.hist = GradHistogram(self.names, sizes, gh["min"], gh["max"], gh["bins_per_octave"])
        self.tracker = tracker
        self.metrics: list[dict] = []
        self.step_norms: list[np.ndarray] = []  # per epoch: pre-clip global norms of each step
        self.step_norms_post: list[np.ndarray] = []
        # parameters after each epoch (row 0 = init), for the landscapes' PCA plane: only kept (in memory and in
        # every checkpoint, ~1.3 MB per epoch) when ``keep_trajectory``, i.e. when a landscape reads this run
        self.keep_trajectory = keep_trajectory
        self.trajectory = [self._cpu_params()] if keep_trajectory else []
        self.init_state = self._cpu_state()
        self.best = {"epoch": 0, "val_acc": -1.0, "val_loss": math.inf, "state": self.init_state}
        self.diverged_epoch: int | None = None
        self.diverged_reason: str | None = None
        self.last_divergence_reason: str | None = None
        self.initial_loss = evaluate(self.model, *data["val"])[0]
        self.wall_time_s = 0.0
        self.start_epoch = 1

    def _cpu_params(self) -> torch.Tensor:
        return self.flat_param.detach().to("cpu", copy=True)

    def _cpu_state(self) -> dict[str, torch.Tensor]:
        return {k: v.detach().to("cpu", copy=True) for k, v in self.model.state_dict().items()}

    # ------------------------------------------------------------------------------------------- epochs
    def train_epoch(self, epoch: int) -> dict:
        with torch.random.fork_rng(devices=[]):
            torch.set_rng_state(self.rng_state)
            row = self._train_epoch(epoch)
            self.rng_state = torch.get_rng_state()
        return row

    def _train_epoch(self, epoch: int) -> dict:
        t0 = time.perf_counter()
        x, y = self.data["train"]
        n = len(x)
        perm = torch.randperm(n, generator=torch.Generator().manual_seed(epoch_seed(self.seed, epoch)))
        perm = perm.to(self.device)
        yp = y[perm]
        bs = self.batch_size
        n_batches = n // bs + (1 if n % bs > 1 else 0)  # a last batch of one sample would break BatchNorm
        pre = np.empty(n_batches, dtype=np.float32)  # global gradient norm of each step, before clipping
        post = np.empty(n_batches, dtype=np.float32)  # ... and after (what Adam receives)
        loss_sum, correct, seen = 0.0, 0, 0
        self.model.train()
        # On the CPU every op is synchronous, so .item() costs no pipeline stall: scalars are read back as
        # Python numbers instead of being accumulated with several tiny tensor ops per step.
        for i in range(n_batches):
            # rows gathered per batch: no 250 MB copy of the whole shuffled training set per epoch
            xb, yb = x.index_select(0, perm[i * bs : (i + 1) * bs]), yp[i * bs : (i + 1) * bs]
            loss, batch_correct = self.compute_gradient(xb, yb)
            norm = torch.linalg.vector_norm(self.flat_grad).item()
            pre[i] = post[i] = norm
            if self.clip is not None:
                coef = min(self.clip / (norm + CLIP_EPS), 1.0)  # as clip_grad_norm_; NaN: no multiply
                if coef < 1.0:
                    self.flat_grad.mul_(coef)
                    post[i] = norm * coef
            self.hist.update(self.flat_grad)  # the gradient Adam receives (after clipping)
            if self.probe is not None:
                self.probe(self, (epoch - 1) * n_batches + i, xb, yb)
            self.opt.step()
            loss_sum += loss * len(yb)
            correct += batch_correct
            seen += len(yb)
        self.hist.close_epoch()
        self.step_norms.append(pre)
        self.step_norms_post.append(post)
        train_loss = loss_sum / seen
        val_loss, val_acc = evaluate(self.model, *self.data["val"])
        stats = norm_stats(pre)
        reason = divergence_reason(train_loss, val_loss, self.flat_param.detach(), self.initial_loss)
        row = {
            "epoch": epoch,
            "train_loss": train_loss,
            "train_acc": correct / seen,
            "val_loss": val_loss,
            "val_acc": val_acc,
            "lr": self.lr,
            **{f"grad_norm_{k}": v for k, v in stats.items()},
            "clipped_fraction": float((pre > self.clip).mean()) if self.clip is not None else 0.0,
            "epoch_time_s": time.perf_counter() - t0,
            "diverged": int(reason is not None),
        }
        self.last_divergence_reason = reason
        return row

    def compute_gradient(self, xb: torch.Tensor, yb: torch.Tensor) -> tuple[float, int]:
        """Forward and backward of one batch: (mean loss, correct predictions); its gradient is in ``flat_grad``."""
        if self.head_step is not None:
            native = self.head_step(xb, yb)
            if native is not None:  # None: the native step does not apply to the model as it is now (eval mode, ...)
                return native
        fc1 = self.model.fc1
        logits = self.model.after_fc1(LinearGradInto.apply(xb, fc1.weight, fc1.bias, *self.fc1_grads))
        loss = F.cross_entropy(logits, yb)
        self.accumulated_grad.zero_()
        loss.backward()  # fc1: written into flat_grad; the other parameters accumulate into its views
        return loss.item(), int((logits.detach().argmax(1) == yb).sum())

    def fit(self, checkpoint_path: Path | None = None, provenance: dict | None = None) -> None:
        for epoch in range(self.start_epoch, self.epochs + 1):
            t0 = time.perf_counter()
            row = self.train_epoch(epoch)
            self.metrics.append(row)
            if self.keep_trajectory:
                self.trajectory.append(self._cpu_params())
            if row["diverged"]:
                self.diverged_epoch, self.diverged_reason = epoch, self.last_divergence_reason
                log.warning(
                    "run diverged in epoch %d: %s. Stopping; outputs are still written with the metrics up to here",
                    epoch,
                    self.diverged_reason,
                )
            elif row["val_acc"] > self.best["val_acc"]:
                self.best = {
                    "epoch": epoch,
                    "val_acc": row["val_acc"],
                    "val_loss": row["val_loss"],
                    "state": self._cpu_state(),
                }
            self.wall_time_s += time.perf_counter() - t0
            log.info(
                "epoch %d/%d  train loss %.4f acc %.4f  val loss %.4f acc %.4f  |g| median %.3g  %.1f s",
                epoch,
                self.epochs,
                row["train_loss"],
                row["train_acc"],
                row["val_loss"],
                row["val_acc"],
                row["grad_norm_median"],
                row["epoch_time_s"],
            )
            if self.tracker is not None:
                self.tracker.log_epoch(row, self.hist.epochs[-1], self.hist.edges)
            if checkpoint_path is not None:
                save_checkpoint(checkpoint_path, self.state_dict(provenance or {}))
            if self.diverged_epoch is not None:
                break

    # ------------------------------------------------------------------------------------------- resume
    def state_dict(self, provenance: dict) -> dict:
        return {
            "provenance": provenance,
            "epoch": len(self.metrics),
            "model": self._cpu_state(),
            "optimizer": _to_cpu(self.opt.state_dict()),
            "torch_rng": self.rng_state,
            "metrics": self.metrics,
            "hist": self.hist.state_dict(),
            "step_norms": self.step_norms,
            "step_norms_post": self.step_norms_post,
            "trajectory": self.trajectory,
            "best": self.best,
            "init_state": self.init_state,
            "diverged_epoch": self.diverged_epoch,
            "diverged_reason": self.diverged_reason,
            "wall_time_s": self.wall_time_s,
            "probe": self.probe.state_dict() if self.probe is not None else None,
        }

    def load_state_dict(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        self.opt.load_state_dict(state["optimizer"])
        self.rng_state = state["torch_rng"]
        self.metrics = list(state["metrics"])
        self.hist.load_state_dict(state["hist"])
        self.step_norms, self.step_norms_post = list(state["step_norms"]), list(state["step_norms_post"])
        self.trajectory = list(state["trajectory"]) if self.keep_trajectory else []
        self.best, self.init_state = state["best"], state["init_state"]
        self.diverged_epoch, self.wall_time_s = state["diverged_epoch"], state["wall_time_s"]
        self.diverged_reason = state["diverged_reason"]
        self.start_epoch = state["epoch"] + 1
        if self.probe is not None and state.get("probe") is not None:
            self.probe.load_state_dict(state["probe"])

    # ------------------------------------------------------------------------------------------- results
    def summary(self) -> dict:
        test = self.data["test"]
        if self.diverged_epoch is None:
            final_train = evaluate(self.model, *self.data["train"])
            final_test = evaluate(self.model, *test)
        else:
            final_train = final_test = (math.nan, math.nan)
        best_model = build_head(**self.head_config)
        best_model.load_state_dict(self.best["state"])
        best_model.to(self.device)
        best_test = evaluate(best_model, *test)
        last = self.metrics[-1] if self.metrics else {}
        norms = np.concatenate(self.step_norms) if self.step_norms else np.zeros(0)
        stats = norm_stats(norms)
        norms = norms[np.isfinite(norms)]
        epochs_to = {}
        for thr in ACC_THRESHOLDS:
            hit = [m["epoch"] for m in self.metrics if m["val_acc"] >= thr]
            epochs_to[f"{thr:.2f}"] = hit[0] if hit else None
        return {
            "head_config": self.head_config,
            "final": {
                "train_loss": final_train[0],
                "train_acc": final_train[1],
                "val_loss": last.get("val_loss"),
                "val_acc": last.get("val_acc"),
                "test_loss": final_test[0],
                "test_acc": final_test[1],
            },
            "best": {
                "epoch": self.best["epoch"],
                "val_loss": self.best["val_loss"],
                "val_acc": self.best["val_acc"],
                "test_loss": best_test[0],
                "test_acc": best_test[1],
            },
            "epochs_to_val_acc": epochs_to,
            "diverged": self.diverged_epoch is not None,
            "diverged_epoch": self.diverged_epoch,
            "diverged_reason": self.diverged_reason,
            # NaN (no finite step) is written as null by write_json
            "grad_norm": {
                "median": stats["median"],
                "p99": stats["p99"],
                "max": stats["max"],
                "clipped_fraction": float((norms > self.clip).mean()) if self.clip and norms.size else 0.0,
            },
            "wall_time_s": self.wall_time_s,
            "epochs_completed": len(self.metrics),
        }


def load_features(path: str | Path) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    out = {}
    for split in ("train", "val", "test"):
        x, y = featurestore.map_split(path, split)
        out[split] = (torch.from_numpy(x), torch.from_numpy(y).long())
    return out


def write_grads_h5(path: Path, trainer: Trainer) -> None:
    with atomic_path(path, suffix=".h5") as tmp, h5py.File(tmp, "w") as f:
        f.create_dataset("edges", data=trainer.hist.edges)
        f.attrs["binning"] = "octaves split into equal-width bins; counts of |grad| after clipping, all steps"
        for name in trainer.names:
            g = f.create_group(f"layers/{name}")
            for key, arr in trainer.hist.stacked(name).items():
                g.create_dataset(key, data=arr)
        pre = np.concatenate(trainer.step_norms) if trainer.step_norms else np.zeros(0)
        post = np.concatenate(trainer.step_norms_post) if trainer.step_norms_post else np.zeros(0)
        epochs = (
            np.concatenate([np.full(len(s), i + 1) for i, s in enumerate(trainer.step_norms)])
            if trainer.step_norms
            else np.zeros(0)
        )
        f.create_dataset("steps/grad_norm_pre_clip", data=pre.astype(np.float32))
        f.create_dataset("steps/grad_norm_post_clip", data=post.astype(np.float32))
        f.create_dataset("steps/epoch", data=epochs.astype(np.int32))


def write_metrics_csv(path: Path, metrics: list[dict]) -> None:
    with atomic_path(path, suffix=".csv") as tmp, open(tmp, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=METRIC_COLUMNS)
        writer.writeheader()
        for row in metrics:
            writer.writerow({k: row[k] for k in METRIC_COLUMNS})


def _save_model(path: Path, state: dict, head_config: dict, epoch: int, extra: dict) -> None:
    with atomic_path(path, suffix=".pt") as tmp:
        torch.save({"state_dict": state, "head_config": head_config, "epoch": epoch, **extra}, tmp)


def run_provenance(resolved: dict, features_identity: str) -> dict:
    """What a run is computed from; its ``identity`` keys resume checkpoints and is recorded in every output."""
    parts = {
        "config": config_hash(resolved),
        "features_identity": features_identity,
        "engine_version": ENGINE_VERSION,
    }
    return {"identity": config_hash(parts), **parts}


def train_run(
    features: str | Path,
    run_dir: str | Path,
    run: dict,
    training: dict,
    head: dict,
    grad_hist: dict,
    tracker_factory: Any = None,
    features_expected: dict | None = None,
    landscape_inputs: bool = True,
    smoothness: dict | None = None,
    smoothness_paths: tuple | None = None,
    model_code: str | None = None,
) -> dict:
    """Train one run into ``run_dir`` (resuming from ``checkpoints/last.pt`` when its identity matches) and
    write metrics.csv, summary.json, grads.h5, model_{final,best}.pt and, unless ``landscape_inputs`` is False (no
    landscape reads this run), what a landscape reads: model_init.pt and trajectory.pt (the parameters after every
    epoch, ~21 MB at the default head). The checkpoint is removed once they are all written. Returns the summary.

    ``features_expected`` (:func:`normscape.featurestore.expected_attrs` of the config): the feature cache must
    have been built for it, else one DataError names the mismatch and the rebuild command.

    ``model_code`` (:func:`normscape.norms.code_digest` of the run's norm; computed here when None): the code the
    head is built from is part of the run's identity, like its config.

    ``smoothness`` (the ``diagnostics.smoothness`` slice, None for runs without the probe): the probe's
    settings are part of the run's identity (a checkpoint never resumes under other settings); with
    ``smoothness_paths`` = (h5, json) the probe's records are written there (zero records without a probe).
    """
    from normscape.diagnostics import smoothness_probe
    from normscape.smoothness import SmoothnessProbe, write_smoothness

    run_dir = Path(run_dir)
    from normscape.norms import code_digest

    model_code = model_code or code_digest(run["head"])
    resolved = {"run": run, "training": training, "head": head, "grad_hist": grad_hist, "model_code": model_code}
    probe = smoothness_probe(smoothness) if smoothness else None
    if probe is not None:
        resolved["smoothness"] = smoothness
    if features_expected is not None:
        features_identity = featurestore.require_compatible(features, features_expected)
    else:
        features_identity = featurestore.identity(features)
    provenance = run_provenance(resolved, features_identity)
    data = load_features(features)
    trainer = Trainer(
        data,
        norm=run["head"],
        seed=int(run["seed"]),
        hidden=head["hidden"],
        dropout=head["dropout"],
        grad_hist=grad_hist,
        probe=probe,
        keep_trajectory=landscape_inputs,
        **training,
    )
    ckpt_path = run_dir / "checkpoints" / "last.pt"
    state = load_checkpoint(ckpt_path, provenance)
    if state is not None and landscape_inputs and len(state["trajectory"]) != state["epoch"] + 1:
        # written while no landscape read this run (no trajectory kept): resuming would leave epochs out of it
        log.warning(
            "discarding checkpoint %s: it has no training trajectory (which a landscape now reads); "
            "training from scratch",
            ckpt_path,
        )
        state = None
    if state is not None:
        trainer.load_state_dict(state)
        log.info("resuming %s after epoch %d from %s", run_dir, state["epoch"], ckpt_path)
    tracker = tracker_factory(resolved, trainer) if tracker_factory else None
    trainer.tracker = tracker
    try:
        if trainer.diverged_epoch is None:
            trainer.fit(ckpt_path, provenance)
        summary = {
            **run,
            "training": training,
            **trainer.summary(),
            "config": resolved,
            "versions": {"torch": torch.__version__, "numpy": np.__version__},
            "provenance": provenance,
        }
        meta = {"provenance": provenance, "diverged": summary["diverged"], "diverged_reason": trainer.diverged_reason}
        write_metrics_csv(run_dir / "metrics.csv", trainer.metrics)
        write_grads_h5(run_dir / "grads.h5", trainer)
        hc = trainer.head_config
        n_epochs = len(trainer.metrics)
        final_meta, best_meta = {**meta, "metrics": summary["final"]}, {**meta, "metrics": summary["best"]}
        _save_model(run_dir / "model_final.pt", trainer._cpu_state(), hc, n_epochs, final_meta)
        _save_model(run_dir / "model_best.pt", trainer.best["state"], hc, trainer.best["epoch"], best_meta)
        if landscape_inputs:
            _save_model(run_dir / "model_init.pt", trainer.init_state, hc, 0, {**meta, "metrics": {}})
            with atomic_path(run_dir / "trajectory.pt", suffix=".pt") as tmp:
                flat = torch.stack(trainer.trajectory)
                names, shapes = trainer.names, [list(p.shape) for p in trainer.params]
                torch.save(
                    {
                        "names": names,
                        "shapes": shapes,
                        "epochs": list(range(len(flat))),
                        "flat": flat,
                        "provenance": provenance,
                    },
                    tmp,
                )
        if smoothness_paths is not None:
            attrs = {"head": run["head"], "run_identity": provenance["identity"], "probed": probe is not None}
            write_smoothness(*smoothness_paths, probe if probe is not None else SmoothnessProbe(), attrs)
        if tracker is not None:
            tracker.log_summary(summary, [run_dir / "model_final.pt", run_dir / "model_best.pt"])
        write_json(run_dir / "summary.json", summary)
        discard_checkpoint(ckpt_path)  # every output is written: the run needs no resume state any more
    finally:
        if tracker is not None:
            tracker.finish()
    return summary
