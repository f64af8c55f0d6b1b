"""What a trainer keeps per run, and the resume state it writes and reads back.

:class:`RunRecord` is everything one run of a group owns (seed, learning rate, generator, histograms, metrics,
trajectory, best and initial states, divergence, probe, tracker); :class:`RunView` is one run as a probe reads the
trainer; :class:`ProbeSet` several probes as one. :class:`ResumableRuns` (a base of
:class:`normscape.training.trainer.Trainer`) turns each run into the checkpoint state that
:mod:`normscape.training.checkpoint` writes after every epoch, and resumes a group from those states: a resumed
group ends with exactly the metrics of an uninterrupted one (tests/test_train.py).
"""

from __future__ import annotations

import hashlib
import json
import math
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from normscape.models.stacked_heads import MOMENTS, StackedHeads
from normscape.training.grad_histograms import GradHistogram

if TYPE_CHECKING:
    from normscape.training.trainer import Trainer

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


def config_hash(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


class RunRecord:
    """Everything one run of a group owns: its seed, learning rate and generator, histograms, metrics, trajectory,
    best and initial states, divergence, probe and tracker. ``row`` is its row in the trainer's stack (None once
    stopped)."""

    def __init__(
        self, seed: int, lr: float, init_state: dict, rng_state: torch.Tensor, hist: GradHistogram, probe: Any
    ):
        self.seed, self.lr = seed, lr
        self.rng = torch.Generator()
        self.rng.set_state(rng_state)
        self.hist = hist
        self.probe = probe
        self.tracker: Any = None
        self.metrics: list[dict] = []
        self.step_norms: list[np.ndarray] = []  # per epoch: pre-clip global norms of each step
        self.step_norms_post: list[np.ndarray] = []
        self.trajectory: list[torch.Tensor] = []
        self.init_state = init_state
        self.best = {"epoch": 0, "val_acc": -1.0, "val_loss": math.inf, "state": init_state}
        self.final_state: dict | None = None  # the state it stopped with (None while it trains)
        self.diverged_epoch: int | None = None
        self.diverged_reason: str | None = None
        self.initial_loss = math.nan
        self.wall_time_s = 0.0
        self.row: int | None = None
        self.last_divergence_reason: str | None = None

    @property
    def steps_done(self) -> int:
        return sum(len(s) for s in self.step_norms)


class ProbeSet:
    """The probes of one run (by name) as the one probe the trainer calls: each measures on the steps its
    ``wants(step)`` accepts; their records travel together in the run's checkpoint."""

    def __init__(self, probes: dict[str, Any]):
        self.probes = dict(probes)

    def wants(self, step: int) -> bool:
        return any(probe.wants(step) for probe in self.probes.values())

    def __call__(self, view: RunView, step: int, xb: torch.Tensor, yb: torch.Tensor) -> None:
        for probe in self.probes.values():
            if probe.wants(step):
                probe(view, step, xb, yb)

    def state_dict(self) -> dict:
        return {name: probe.state_dict() for name, probe in self.probes.items()}

    def load_state_dict(self, state: dict) -> None:
        for name, probe in self.probes.items():
            probe.load_state_dict(state[name])


class RunView:
    """One run of a group as the smoothness probe reads a trainer: ``flat_param`` / ``flat_grad`` (its row),
    ``opt`` (its slice of Adam's state, keyed by ``flat_param`` as torch.optim keys it) and ``model`` (a copy of
    its head, built when first read)."""

    def __init__(self, trainer: Trainer, row: int, flat_grad: torch.Tensor):
        self._trainer, self._row = trainer, row
        self.flat_param = trainer.stack.param_row(row)
        self.flat_grad = flat_grad
        moments = trainer.run_moments(row)
        state = {self.flat_param: moments} if moments is not None else {}
        groups = [trainer.adam.hyperparameters(row)]  # the run's own lr
        self.opt = type("AdamView", (), {"param_groups": groups, "state": state})
        self._model: torch.nn.Module | None = None

    @property
    def model(self) -> torch.nn.Module:
        if self._model is None:
            self._model = self._trainer.stack.model_of(self._row)
        return self._model


class ResumableRuns:
    """The resume half of :class:`normscape.training.trainer.Trainer` (which provides ``runs``, ``stack``,
    ``adam``, ``head_config``, ``device``, ``keep_trajectory``, ``run_state``, ``_in_row_order`` and
    ``_new_adam``)."""

    def run_state_dict(self, run: RunRecord, provenance: dict) -> dict:
        """One run's resume state: its head, its slice of Adam's moments, its RNG, records and probe."""
        moments = None
        stacked = self.adam.moments() if run.row is not None else None
        if stacked is not None:
            step, per_param = stacked
            moments = {"step": step.cpu().clone()}
            for k in MOMENTS:  # in the module's shapes, like the model
                moments[k] = [
                    self.stack.module_shaped(n, m[k])[run.row].to("cpu").clone(memory_format=torch.contiguous_format)
                    for n, m in zip(self.stack.names, per_param)
                ]
        return {
            "provenance": provenance,
            "epoch": len(run.metrics),
            "model": self.run_state(run),
            "optimizer": moments,
            "rng": run.rng.get_state(),
            "metrics": run.metrics,
            "hist": run.hist.state_dict(),
            "step_norms": run.step_norms,
            "step_norms_post": run.step_norms_post,
            "trajectory": run.trajectory,
            "best": run.best,
            "init_state": run.init_state,
            "diverged_epoch": run.diverged_epoch,
            "diverged_reason": run.diverged_reason,
            "wall_time_s": run.wall_time_s,
            "probe": run.probe.state_dict() if run.probe is not None else None,
        }

    def state_dict(self, provenance: dict | None = None) -> dict:
        """The resume state of a one-seed trainer."""
        return self.run_state_dict(self.runs[0], provenance or {})

    def load_state_dict(self, state: dict) -> None:
        """Resume a one-seed trainer."""
        self.load_run_states([state])

    def load_run_states(self, states: list[dict]) -> None:
        """Resume every run from its state (all at the same epoch: they step together)."""
        if len(states) != len(self.runs) or len({s["epoch"] for s in states}) != 1:
            raise ValueError("resume needs one state per run, all after the same epoch")
        for run, state in zip(self.runs, states):
            run.rng.set_state(state["rng"])
            run.metrics = list(state["metrics"])
            run.hist.load_state_dict(state["hist"])
            run.step_norms, run.step_norms_post = list(state["step_norms"]), list(state["step_norms_post"])
            run.trajectory = list(state["trajectory"]) if self.keep_trajectory else []
            run.best, run.init_state = state["best"], state["init_state"]
            run.diverged_epoch, run.diverged_reason = state["diverged_epoch"], state["diverged_reason"]
            run.wall_time_s = state["wall_time_s"]
            if run.probe is not None and state.get("probe") is not None:
                run.probe.load_state_dict(state["probe"])
        state_of = {id(run): state for run, state in zip(self.runs, states)}
        for run, state in zip(self.runs, states):
            if run.diverged_epoch is not None:
                run.final_state, run.row = state["model"], None
        training = self._in_row_order([run for run in self.runs if run.diverged_epoch is None])
        for row, run in enumerate(training):
            run.row = row
        if training:
            self.stack = StackedHeads(self.head_config, [state_of[id(r)]["model"] for r in training], self.device)
            self.adam = self._new_adam()
            saved = [state_of[id(r)]["optimizer"] for r in training]
            if all(m is not None for m in saved):
                moments = [
                    {k: self.stack.leaf_shaped(name, torch.stack([m[k][i] for m in saved])) for k in MOMENTS}
                    for i, name in enumerate(self.stack.names)
                ]
                self.adam.load_moments(saved[0]["step"], moments)
        self.start_epoch = states[0]["epoch"] + 1
