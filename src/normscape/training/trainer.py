"""The training engine's epoch loop: the seeds of one condition (head, training settings) trained together, from
cached features.

Why grouped: a step of one head is two small GEMMs and ~20 tiny ops, so one run per process pays mostly fixed
costs (process start, imports, per-op dispatch, evaluation setup). The runs of one condition differ only in their
seed, so :class:`Trainer` trains them as ONE batched model (:class:`normscape.models.stacked_heads.StackedHeads`:
``torch.vmap`` of the head module over stacked parameters): one forward, backward and ``torch.optim.Adam`` step
per batch for all of them. Every norm — built-in or registered by a user — trains through this one code path.

Per run, as if it trained alone: its head is built under ``torch.manual_seed(seed)``; its shuffle is
``epoch_seed(seed, epoch)``; its dropout masks come from its own generator; its gradient norm, clipping (the
formula of ``torch.nn.utils.clip_grad_norm_`` over its own row), histograms, probe records, metrics,
divergence, checkpoint, outputs and W&B run are its own. A run's numbers do not depend on which runs share its
group (tests/test_train.py: a seed alone and in a group, every metric and tensor bitwise), so the group is not
part of a run's identity. That needs one thread on the CPU: with several, the BLAS splits a batched GEMM among
them by the batch's size (MKL on an Intel Xeon: a group of 3 and a run alone differ from the first step), so an
epoch trains on one intra-op thread whatever the process has (a job trains one group; jobs run side by side).
A run that diverges stops (its outputs are written, marked diverged) and leaves the stack; the others go on.

Subnormal floats: ``normscape.pipeline.runtime.flush_denormals`` is applied when a trainer is built (and in every
torch job); the setting is part of every run's provenance (benchmarks/bench_train.py measures what it saves).

Trustworthy runs (the files: normscape.training.job): the same config + seed gives identical metrics on CPU; a
checkpoint per run with model, optimiser moments, RNG state, histograms and metrics is written atomically after
every epoch, and a restarted group resumes from them and ends with exactly the metrics of an uninterrupted run. A
checkpoint is resumed only when its identity — the run's config slice, the feature cache's recorded identity,
``ENGINE_VERSION`` and the subnormal setting — equals the job's; otherwise it is discarded with one log line
saying which part differs. Every output records that identity (``summary.json["provenance"]``, the
``provenance`` entry of every ``model_*.pt`` and ``trajectory.pt``).

The trainer's parts: what it keeps per run and its resume state in :mod:`normscape.training.run_records`;
evaluation, the divergence rule and a run's summary in :mod:`normscape.training.evaluation`.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch

from normscape.models.heads import build_head
from normscape.models.stacked_heads import MOMENTS, StackedAdam, StackedHeads
from normscape.pipeline.runtime import flush_denormals
from normscape.training.checkpoint import save_checkpoint
from normscape.training.evaluation import divergence_reason, evaluate, norm_stats, run_summary
from normscape.training.grad_histograms import GradHistogram, count_codes
from normscape.training.run_records import ResumableRuns, RunRecord, RunView

log = logging.getLogger(__name__)

CLIP_EPS = 1e-6  # as in torch.nn.utils.clip_grad_norm_
# Part of every checkpoint's identity: a checkpoint written by an engine with another state layout is not resumed
# but retrained from scratch.
ENGINE_VERSION = 7  # 3: divergence on non-finite parameters / exploded losses; 4: native step; 5: grouped torch;
# 6: fused Adam where rows are aligned, per-stack norms and histograms; 7: per-run learning rates, named probes


@contextlib.contextmanager
def one_thread(device: torch.device) -> Iterator[None]:
    """Torch's intra-op threads set to one on the CPU while the block runs (restored after): a run's numbers must
    not depend on the size of the stack it trains in."""
    threads = torch.get_num_threads()
    if device.type == "cpu":
        torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def epoch_seed(seed: int, epoch: int) -> int:
    """Seed of epoch ``epoch``'s shuffle: independent of how many epochs ran before (resume-safe)."""
    return seed * 1_000_003 + epoch


class Trainer(ResumableRuns):
    """Trains the heads of one condition for one or several seeds together; see :func:`train_group` for files.

    ``seeds``: one seed or a list; ``lr``: one learning rate, or one per seed (a list: the runs of an lr sweep
    train together; a seed may then appear once per lr); ``probe``: one probe per seed (a list), or one probe when
    training one seed (e.g. normscape.curvature.smoothness.SmoothnessProbe, or a :class:`ProbeSet` of several), called
    as
    ``probe(view, step, xb, yb)`` with a :class:`RunView` before every optimiser step its ``wants(step)``
    accepts (every step without that method); it must not change the model, the optimiser or the RNG; its records
    travel in the checkpoint).
    """

    def __init__(
        self,
        data: dict[str, tuple[torch.Tensor, torch.Tensor]],
        norm: str,
        seeds: int | Sequence[int],
        epochs: int,
        batch_size: int,
        lr: float | Sequence[float],
        weight_decay: float = 0.0,
        clip_grad_norm: float | None = None,
        hidden: int = 256,
        dropout: float = 0.0,
        grad_hist: dict | None = None,
        probe: Any = None,
        keep_trajectory: bool = True,
        device: str | torch.device = "cpu",
    ):
        # ``device``: where the heads train (the pipeline: cpu, whose runs are bit-reproducible on one machine).
        # The initialisation, the shuffles, the dropout masks and everything written are made on the CPU.
        self.flush_denormal = flush_denormals()
        self.device = torch.device(device)
        self.data = {split: (x.to(self.device), y.to(self.device)) for split, (x, y) in data.items()}
        seeds = [int(seeds)] if isinstance(seeds, int) else [int(s) for s in seeds]
        probes = probe if isinstance(probe, (list, tuple)) else [probe] * len(seeds)
        if len(probes) != len(seeds) or (len(seeds) > 1 and probe is not None and not isinstance(probe, list)):
            raise ValueError("give one probe per seed (a list) when training several seeds")
        lrs = [float(v) for v in lr] if isinstance(lr, (list, tuple)) else [float(lr)] * len(seeds)
        if len(lrs) != len(seeds):
            raise ValueError("give one learning rate per seed (a list), or one for all")
        self.epochs, self.batch_size = epochs, batch_size
        self.weight_decay, self.clip, self.dropout = weight_decay, clip_grad_norm, dropout
        x_train = self.data["train"][0]
        self.head_config = {
            "norm": norm,
            "in_features": int(x_train.shape[1]),
            "hidden": hidden,
            "num_classes": int(max(int(y.max()) for _, y in self.data.values()) + 1),  # from the data
            "dropout": dropout,
        }
        gh = grad_hist or {"min": 1e-9, "max": 10.0, "bins_per_octave": 4}
        # counted steps: every ``every``-th optimiser step of each epoch, from its first (absent: every step), so
        # that every epoch has a histogram
        self.hist_every = int(gh.get("every", 1))
        if self.hist_every < 1:
            raise ValueError(f"grad_hist every must be at least 1, got {self.hist_every}")
        self.runs: list[RunRecord] = []
        for seed, run_lr, run_probe in zip(seeds, lrs, probes):
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)  # each head exactly as a lone run's: independent of the group
                state = {k: v.detach().clone() for k, v in build_head(**self.head_config).state_dict().items()}
                rng_state = torch.get_rng_state()  # the run's own stream (dropout) continues from here
            self.runs.append(RunRecord(seed, run_lr, state, rng_state, None, run_probe))
        # rows grouped by learning rate (in order of first appearance): each lr's rows are one optimiser block
        self.lr_order = {v: i for i, v in enumerate(dict.fromkeys(lrs))}
        for row, run in enumerate(self._in_row_order(self.runs)):
            run.row = row
        self.stack = StackedHeads(self.head_config, [r.init_state for r in self.active], self.device)
        self.names = list(self.stack.names)
        for run in self.runs:
            run.hist = GradHistogram(self.names, self.stack.sizes, gh["min"], gh["max"], gh["bins_per_octave"])
            run.initial_loss = evaluate(self.stack.model_of(run.row), *self.data["val"])[0]
        # parameters after each epoch (row 0 = init), for the landscapes' PCA plane: only kept (in memory and in
        # every checkpoint, ~1.3 MB per epoch) when ``keep_trajectory``, i.e. when a landscape reads the runs
        self.keep_trajectory = keep_trajectory
        for run in self.runs:
            run.trajectory = [self._cpu_params(run.row)] if keep_trajectory else []
        self.adam = self._new_adam()
        self.start_epoch = 1

    def _in_row_order(self, runs: Sequence[RunRecord]) -> list[RunRecord]:
        """``runs`` in the order the stack holds them: grouped by learning rate, otherwise as given."""
        return sorted(runs, key=lambda r: self.lr_order[r.lr])

    def _new_adam(self) -> StackedAdam:
        return StackedAdam(self.stack.parameters(), [r.lr for r in self.active], self.weight_decay, self.device)

    @property
    def active(self) -> list[RunRecord]:
        """The runs still training, in stack order."""
        return sorted((r for r in self.runs if r.row is not None), key=lambda r: r.row)

    @property
    def flat_param(self) -> torch.Tensor:
        """(runs still training, P): one row of parameters per run (a copy)."""
        return torch.stack([self.stack.param_row(row) for row in range(len(self.stack))])

    def _cpu_params(self, row: int) -> torch.Tensor:
        return self.stack.param_row(row).to("cpu")

    def run_moments(self, row: int) -> dict | None:
        """Run ``row``'s slice of Adam's state as one flat tensor per moment (None before the first step)."""
        moments = self.adam.moments()
        if moments is None:
            return None
        step, per_param = moments
        return {"step": step.clone(), **{k: self.stack.moment_row([m[k] for m in per_param], row) for k in MOMENTS}}

    def run_state(self, run: RunRecord) -> dict[str, torch.Tensor]:
        """A run's current head as a state_dict (its final one once it stopped)."""
        return run.final_state if run.row is None else self.stack.state_of(run.row)

    # ------------------------------------------------------------------------------------------- epochs
    def train_epoch(self, epoch: int) -> list[dict]:
        """One epoch of every active run (in stack order): their metric rows."""
        with one_thread(self.device):
            return self._train_epoch(epoch)

    def _train_epoch(self, epoch: int) -> list[dict]:
        t0 = time.perf_counter()
        active = self.active
        x, y = self.data["train"]
        n = len(x)
        perms = torch.stack(
            [torch.randperm(n, generator=torch.Generator().manual_seed(epoch_seed(r.seed, epoch))) for r in active]
        ).to(self.device)
        bs = self.batch_size
        n_batches = n // bs + (1 if n % bs > 1 else 0)  # a last batch of one sample would break BatchNorm
        k = len(active)
        pre = np.empty((k, n_batches), dtype=np.float32)  # global gradient norm of each run's step, before clipping
        post = np.empty((k, n_batches), dtype=np.float32)  # ... and after (what Adam receives)
        loss_sum, correct = np.zeros(k), np.zeros(k, dtype=np.int64)
        seen = 0
        hidden, p = self.head_config["hidden"], self.dropout
        shift, n_codes = active[0].hist.shift, active[0].hist.n_codes
        hist_counts = torch.zeros(k, len(self.names), n_codes, dtype=torch.int64, device=self.device)
        for i in range(n_batches):
            idx = perms[:, i * bs : (i + 1) * bs]
            b = idx.shape[1]
            # rows gathered per batch: no copy of the whole shuffled training set per epoch
            xb, yb = x.index_select(0, idx.reshape(-1)).view(k, b, -1), y[idx]
            masks = None
            if p > 0:  # each run's dropout mask from its own generator, as nn.Dropout scales it
                masks = torch.stack([torch.empty(b, hidden).bernoulli_(1 - p, generator=r.rng) for r in active])
                masks = masks.div_(1 - p).to(self.device)
            losses, batch_correct = self.stack.forward_backward(xb, yb, masks)
            # each run's own global norm and clipping (torch.nn.utils.clip_grad_norm_'s formula over its own row),
            # for the whole stack at once; one transfer of the k norms per step
            norms = self.stack.grad_norms()
            pre[:, i] = post[:, i] = norms.cpu().numpy()
            if self.clip is not None:
                coef = self.clip / (norms.double() + CLIP_EPS)
                coef = torch.where(coef < 1.0, coef, torch.ones_like(coef))  # NaN: no multiply
                self.stack.scale_grads(coef.float())
                post[:, i] = (norms.double() * coef).cpu().numpy()
            step = (epoch - 1) * n_batches + i
            # the gradient Adam receives (after clipping), counted for every run in one pass per parameter
            if i % self.hist_every == 0:
                hist_counts += count_codes(self.stack.grads(), shift, n_codes)
            for row, run in enumerate(active):
                # a probe or tracker reads a run's tensors on the steps it measures (copies out of the stack)
                if run.probe is not None and getattr(run.probe, "wants", lambda _: True)(step):
                    run.probe(RunView(self, row, self.stack.grad_row(row)), step, xb[row], yb[row])
                if run.tracker is not None:
                    run.tracker.before_step(
                        self.names,
                        lambda row=row: self.stack.grad_row(row).split(self.stack.sizes),
                        lambda row=row: self._param_rows(row),
                    )
            self.adam.step()
            loss_sum += losses.double().numpy() * b
            correct += batch_correct.numpy()
            seen += b
        rows = []
        elapsed = time.perf_counter() - t0
        hist_counts = hist_counts.cpu()
        for row, run in enumerate(active):
            run.hist.add(hist_counts[row])
            run.hist.close_epoch()
            run.step_norms.append(pre[row])
            run.step_norms_post.append(post[row])
            train_loss = float(loss_sum[row]) / seen
            val_loss, val_acc = evaluate(self.stack.model_of(row), *self.data["val"])
            reason = divergence_reason(train_loss, val_loss, self.stack.param_row(row), run.initial_loss)
            run.last_divergence_reason = reason
            rows.append(
                {
                    "epoch": epoch,
                    "train_loss": train_loss,
                    "train_acc": int(correct[row]) / seen,
                    "val_loss": val_loss,
                    "val_acc": val_acc,
                    "lr": run.lr,
                    **{f"grad_norm_{key}": v for key, v in norm_stats(pre[row]).items()},
                    "clipped_fraction": float((pre[row] > self.clip).mean()) if self.clip is not None else 0.0,
                    # the group's epoch: the runs' steps are one computation
                    "epoch_time_s": elapsed,
                    "diverged": int(reason is not None),
                }
            )
        return rows

    def _param_rows(self, row: int) -> list[torch.Tensor]:
        return [self.stack.module_shaped(n, p.detach())[row] for n, p in self.stack.params.items()]

    def fit(self, checkpoint_paths: Any = None, provenances: Any = None) -> None:
        """Train every active run to ``epochs``; after each epoch each run's checkpoint is written to its path
        (``checkpoint_paths``: one per run, or one path when training one seed)."""
        paths = _per_run(checkpoint_paths, len(self.runs))
        provs = _per_run(provenances, len(self.runs))
        for epoch in range(self.start_epoch, self.epochs + 1):
            active = self.active
            if not active:
                break
            t0 = time.perf_counter()
            rows = self.train_epoch(epoch)
            elapsed = time.perf_counter() - t0
            stopped = []
            for run, row in zip(active, rows):
                run.metrics.append(row)
                if self.keep_trajectory:
                    run.trajectory.append(self._cpu_params(run.row))
                if row["diverged"]:
                    run.diverged_epoch, run.diverged_reason = epoch, run.last_divergence_reason
                    log.warning(
                        "seed %d diverged in epoch %d: %s. It stops; its outputs are still written with the "
                        "metrics up to here",
                        run.seed,
                        epoch,
                        run.diverged_reason,
                    )
                    stopped.append(run)
                elif row["val_acc"] > run.best["val_acc"]:
                    run.best = {
                        "epoch": epoch,
                        "val_acc": row["val_acc"],
                        "val_loss": row["val_loss"],
                        "state": self.stack.state_of(run.row),
                    }
                run.wall_time_s += elapsed
                log.info(
                    "seed %d epoch %d/%d  train loss %.4f acc %.4f  val loss %.4f acc %.4f  |g| median %.3g  %.1f s",
                    run.seed,
                    epoch,
                    self.epochs,
                    row["train_loss"],
                    row["train_acc"],
                    row["val_loss"],
                    row["val_acc"],
                    row["grad_norm_median"],
                    row["epoch_time_s"],
                )
                if run.tracker is not None:
                    run.tracker.log_epoch(row, run.hist.epochs[-1], run.hist.edges)
            for run in active:
                index = self.runs.index(run)
                if paths[index] is not None:
                    save_checkpoint(paths[index], self.run_state_dict(run, provs[index] or {}))
            if stopped:
                self._stop(stopped)

    def _stop(self, stopped: list[RunRecord]) -> None:
        """Take stopped runs out of the stack and the optimiser; the others keep their values and moments."""
        for run in stopped:
            run.final_state = self.stack.state_of(run.row)
        keep = [r for r in self.active if r not in stopped]
        rows = [r.row for r in keep]
        moments = self.adam.moments()
        for run in stopped:
            run.row = None
        for new_row, run in enumerate(keep):
            run.row = new_row
        if not keep:
            return
        self.stack.keep(rows)
        self.adam = self._new_adam()
        if moments is not None:
            index = torch.tensor(rows, dtype=torch.long, device=self.device)
            step, per_param = moments
            self.adam.load_moments(step, [{k: m[k].index_select(0, index) for k in MOMENTS} for m in per_param])

    # ------------------------------------------------------------------------------------------- results
    def summary(self, run: RunRecord) -> dict:
        return run_summary(run, self.run_state(run), self.head_config, self.data, self.clip, self.device)


def _per_run(value: Any, n: int) -> list:
    """``value`` as one entry per run: a list as given, a single value for a one-run group, None for none."""
    if isinstance(value, (list, tuple)):
        return list(value)
    if value is not None and n != 1:
        raise ValueError("give one entry per run when training several seeds")
    return [value] * n
