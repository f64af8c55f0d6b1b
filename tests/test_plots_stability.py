"""The edge-of-stability figures drawn through the figure registry from hand-made run files (real formats)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from stability_runs import files, lr_variant, ramp, write_run

from normscape.curvature.edge_of_stability import PreconditionedSharpnessProbe, write_preconditioned_sharpness
from normscape.figures import registry, style
from normscape.figures.stability import batch_label, threshold_label
from normscape.training.trainer import Trainer

NAN = float("nan")
SETTINGS = {
    "smoothing_window": 3,
    "conditions": {
        "convergence": {"lr": 1e-3, "batch_size": 32, "epochs": 2},
        "high_lr": {"lr": 1e-2, "batch_size": 32, "epochs": 2},
        "stability": {"batch_size": 32, "epochs": 2},
        "stability_large_batch": {"batch_size": 1024, "epochs": 6},
    },
}


def thresholds(ax) -> list[float]:
    return [float(line.get_ydata()[0]) for line in ax.get_lines() if line.get_gid() == "threshold"]


def test_preconditioned_sharpness_figure(tmp_path):
    for experiment, lr in (("convergence", 1e-3), ("high_lr", 1e-2)):
        for head in ("none", "batch", "layer"):
            for seed in (0, 1):
                write_run(tmp_path, experiment, head, "base", seed, 0.8, lr, ramp(1.0 + 0.02 * seed))
    write_run(tmp_path, "convergence", "frn", "base", 0, 0.8, 1e-3)  # not probed: zero records, left out
    # a third baseline seed at the high lr diverged: non-finite from its third probe on
    write_run(tmp_path, "high_lr", "none", "base", 2, NAN, 1e-2, [0.2, 0.6, NAN, NAN])
    fig = registry.draw("fig_preconditioned_sharpness", {"preconditioned_sharpness": files(tmp_path, "*.h5")}, SETTINGS)
    axes = np.array(fig.axes).reshape(2, 3)  # one row per learning rate, one column per probed norm
    for row, lr in zip(axes, (1e-3, 1e-2)):
        for ax in row:
            assert thresholds(ax) == [pytest.approx(38 / lr)]  # (2 + 2 beta1) / ((1 - beta1) lr), beta1 = 0.9
            assert ax.get_yscale() == "log"
            # the mean over the two seeds at each probe: 1.01 x the threshold on the plateau
            mean = next(line for line in ax.get_lines() if line.get_label().startswith("λ1(P⁻¹H), mean"))
            assert mean.get_ydata()[-1] == pytest.approx(1.01 * 38 / lr)
    (cross,) = [c for c in axes[1, 0].collections if c.get_gid() == "diverged"]
    assert tuple(cross.get_offsets()[0]) == pytest.approx((20, 3800))  # at its first non-finite probe, on the line
    assert not [c for ax in np.delete(axes.ravel(), 3) for c in ax.collections if c.get_gid() == "diverged"]
    assert "lr 0.001" in axes[0, 0].get_title() and "lr 0.01" in axes[1, 2].get_title()
    assert "BatchNorm" in axes[0, 1].get_title()
    assert threshold_label(0.9, 3800.0) == "threshold 38/η = 3,800" and threshold_label(0.5, 6.0) == "threshold 6/η = 6"
    style.save(fig, tmp_path / "f.pdf", tmp_path / "f.png")
    assert (tmp_path / "f.pdf").read_bytes()[:5] == b"%PDF-" and (tmp_path / "f.png").stat().st_size > 10_000


@pytest.mark.slow
def test_preconditioned_sharpness_figure_from_a_real_probe(tmp_path):
    """Records of a probe that measured a trained head (not hand-made): the figure reads the writer's file."""
    g = torch.Generator().manual_seed(0)
    centers = torch.randn(10, 12, generator=g)
    data = {}
    for name, size in (("train", 96), ("val", 32), ("test", 32)):
        y = torch.randint(0, 10, (size,), generator=g)
        data[name] = ((centers[y] + torch.randn(size, 12, generator=g)).relu(), y)
    x, y = data["train"]
    for experiment, lr in (("convergence", 1e-3), ("high_lr", 1e-2)):
        probe = PreconditionedSharpnessProbe(x[:64], y[:64], 32, every=2, lanczos_steps=6)
        Trainer(data, norm="layer", seeds=0, epochs=1, batch_size=32, lr=lr, hidden=8, probe=probe).fit()
        run = tmp_path / "runs" / experiment / "layer" / "base" / "seed0"
        write_preconditioned_sharpness(run / "p.h5", run / "p.json", probe, {"head": "layer"})
    fig = registry.draw("fig_preconditioned_sharpness", {"preconditioned_sharpness": files(tmp_path, "p.h5")}, SETTINGS)
    assert len(fig.axes) == 2
    assert thresholds(fig.axes[0]) == [pytest.approx(38000)] and thresholds(fig.axes[1]) == [pytest.approx(3800)]
    drawn = [line.get_ydata() for line in fig.axes[1].get_lines() if line.get_gid() != "threshold"]
    assert all(np.isfinite(v).all() and (v > 0).all() for v in drawn)


def test_stability_map(tmp_path):
    grid = (1e-4, 1e-3, 1e-2, 1e-1)
    accs = {"none": [0.80, 0.81, 0.70, NAN], "batch": [0.80, 0.81, 0.805, 0.60]}
    for experiment in ("stability", "stability_large_batch"):
        for head, values in accs.items():
            for seed in range(3):
                for lr, acc in zip(grid, values):
                    if head == "batch" and seed == 2 and lr == 1e-2:
                        acc = 0.70  # one seed loses it at 1e-2: over seeds 1e-3, the seeds' range 1e-3 .. 1e-2
                    write_run(tmp_path, experiment, head, lr_variant(lr), seed, acc + 0.001 * seed, lr)
    fig = registry.draw("fig_stability_map", {"summaries": files(tmp_path, "summary.json")}, SETTINGS)
    assert len(fig.axes) == 2  # one panel per norm
    none, batch = fig.axes
    assert none.get_xscale() == "log" and none.get_title() == "Baseline (no norm)"

    def gids(ax, gid):
        return [artist for artist in ax.get_children() if artist.get_gid() == gid]

    # critical lr: one vertical line per batch size
    assert sorted(line.get_xdata()[0] for line in gids(none, "critical_lr")) == [1e-3, 1e-3]
    assert sorted(line.get_xdata()[0] for line in gids(batch, "critical_lr")) == [1e-3, 1e-3]
    spread = [tuple(line.get_xdata()) for line in gids(batch, "critical_lr_spread")]
    assert (
        spread == [(1e-3, 1e-2), (1e-3, 1e-2)]
        and [tuple(x.get_xdata()) for x in gids(none, "critical_lr_spread")] == [(1e-3, 1e-3)] * 2
    )
    # the baseline's diverged runs at 1e-1, one cross per batch size, under the data
    crosses = gids(none, "diverged")
    assert len(crosses) == 2 and all(c.get_offsets()[0][0] == 1e-1 for c in crosses)
    assert all(c.get_offsets()[0][1] < 0.60 for c in crosses) and not gids(batch, "diverged")
    labels = fig.legends[0].get_texts()
    assert any("batch 1024, 6 epochs" in t.get_text() for t in labels)
    assert any("batch 32, 2 epochs" in t.get_text() for t in labels)
    assert (
        batch_label({"conditions": {"stability": {"batch_size": 64, "epochs": 1}}}, "stability") == "batch 64, 1 epoch"
    )
    assert "within 2 points" in fig.get_suptitle() and math.isclose(none.get_xlim()[0], 1e-4 / 10**0.1)
    style.save(fig, tmp_path / "m.pdf", tmp_path / "m.png")
    assert (tmp_path / "m.png").stat().st_size > 10_000


def test_registry_wires_the_figures():
    spec = registry.FIGURES["fig_preconditioned_sharpness"]
    assert {e for e, _, _ in spec.inputs["preconditioned_sharpness"]} == {"convergence", "high_lr"}
    assert "preconditioned_sharpness" in registry.INPUT_KINDS
    stability = registry.FIGURES["fig_stability_map"].inputs["summaries"]
    assert [e for e, _, _ in stability] == ["stability", "stability_large_batch"]
