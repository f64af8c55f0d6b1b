"""What the figures show when runs die or diverge, and how their axes are scaled: curves of a dead head stay off
the working heads' axis (and are named), legend labels carry one pair of parentheses, the main line is the raw
mean over seeds, compared panels share one scale, log axes have round ticks around the data, a run whose gradient
vanished or diverged says so, and the Hessian density's x axis is not stretched by a few outlier eigenvalues."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch

from normscape.figures import gradients, registry
from normscape.figures.axes import colorbar_ticks, fit_limits, legend_label, round_log_ticks

LN10 = math.log(10)  # a dead 10-class head's loss


def write_runs(root, experiment: str, curves: dict[str, list[tuple[list[float], list[float]]]]) -> list[str]:
    """metrics.csv per (head, seed) in the run layout: curves[head] = [(val_acc, val_loss) per seed]."""
    paths = []
    for head, seeds in curves.items():
        for seed, (acc, loss) in enumerate(seeds):
            d = root / "runs" / experiment / head / "base" / f"seed{seed}"
            d.mkdir(parents=True, exist_ok=True)
            epochs = np.arange(1, len(acc) + 1)
            pd.DataFrame({"epoch": epochs, "val_acc": acc, "val_loss": loss, "diverged": 0}).to_csv(
                d / "metrics.csv", index=False
            )
            paths.append(str(d / "metrics.csv"))
    return paths


def learning(seed: int, final_acc: float, final_loss: float, epochs: int = 6):
    rng = np.random.default_rng(seed)
    t = np.linspace(0, 1, epochs)
    acc = final_acc - 0.06 * (1 - t) ** 2 + rng.normal(0, 0.004, epochs)
    loss = final_loss + 0.4 * (1 - t) ** 2 + rng.normal(0, 0.01, epochs)
    return list(acc), list(loss)


def dead(epochs: int = 6):
    return [0.1] * epochs, [LN10 + 1e-4 * i for i in range(epochs)]


@pytest.fixture
def high_lr_runs(tmp_path):
    curves = {
        "none": [learning(0, 0.745, 1.2), learning(1, 0.75, 1.25)],
        "batch": [learning(2, 0.77, 0.75), learning(3, 0.765, 0.8)],
        "frn": [dead(), dead()],
    }
    return write_runs(tmp_path, "high_lr", curves)


SETTINGS = {"conditions": {"high_lr": {"lr": 0.01}, "convergence": {"lr": 0.001}, "clipping": {"lr": 0.001}}}


def panel_texts(ax) -> str:
    return " ".join(t.get_text() for t in ax.texts)


def test_a_dead_heads_loss_stays_off_the_axis_of_the_heads_that_learn_and_is_named(high_lr_runs):
    fig = registry.draw("fig10_high_lr", {"metrics": high_lr_runs}, SETTINGS)
    acc_ax, loss_ax = fig.axes
    lo, hi = loss_ax.get_ylim()
    assert hi < LN10 and hi - lo < 1.2  # the 0.75-1.65 losses of the learning heads fill the axis
    assert "FRN" in panel_texts(loss_ax) and "2.3" in panel_texts(loss_ax)
    lo, hi = acc_ax.get_ylim()
    assert lo > 0.1 and hi - lo < 0.2  # chance accuracy of the dead head is off the axis, named
    assert "FRN" in panel_texts(acc_ax)
    assert "Exp. 3 (lr 0.01)" in fig.get_suptitle()


def test_curve_line_is_the_raw_mean_over_seeds_and_labels_have_one_pair_of_parentheses(high_lr_runs):
    fig = registry.draw("fig10_high_lr", {"metrics": high_lr_runs}, SETTINGS)
    labels = [t.get_text() for t in fig.legends[0].get_texts()]
    assert labels == ["Baseline, no norm (n=2)", "BatchNorm (n=2)", "FRN (n=2)"]
    df = pd.concat(pd.read_csv(p) for p in high_lr_runs if "/batch/" in p)
    mean = df.groupby("epoch")["val_loss"].mean().to_numpy()
    line = next(ln for ln in fig.axes[1].lines if ln.get_label() == "BatchNorm (n=2)")
    np.testing.assert_allclose(line.get_ydata(), mean)


def test_clipping_panels_share_one_y_scale_and_the_title_names_both_experiments(tmp_path):
    paths = write_runs(tmp_path, "convergence", {"none": [learning(0, 0.7, 1.4)], "batch": [learning(1, 0.8, 0.5)]})
    paths += write_runs(tmp_path, "clipping", {"none": [learning(2, 0.7, 1.3)], "batch": [learning(3, 0.8, 0.6)]})
    fig = registry.draw(
        "fig9_clipping_val_loss",
        {"metrics": paths},
        {**SETTINGS, "conditions": {"convergence": {"lr": 0.001}, "clipping": {"lr": 0.001, "clip_grad_norm": 1.0}}},
    )
    limits = {ax.get_ylim() for ax in fig.axes}
    assert len(limits) == 1
    assert fig.get_suptitle() == "Exp. 1 (lr 0.001) vs Exp. 2 (lr 0.001, clipping at norm 1): validation loss"
    assert [t.get_text() for t in fig.legends[0].get_texts()] == ["no clipping (n=1)", "clipping at norm 1 (n=1)"]


def test_a_head_whose_curves_all_lie_off_the_shared_scale_gets_its_own_panel_range(tmp_path):
    # FRN of the real study: unclipped dead at ln 10, clipped barely learning near 2.2; both far above the others
    barely = ([0.2] * 6, [2.3, 2.25, 2.2, 2.22, 2.18, 2.2])
    paths = write_runs(tmp_path, "convergence", {"none": [learning(0, 0.7, 0.8)], "frn": [dead()]})
    paths += write_runs(tmp_path, "clipping", {"none": [learning(2, 0.7, 0.85)], "frn": [barely]})
    fig = registry.draw(
        "fig9_clipping_val_loss",
        {"metrics": paths},
        {**SETTINGS, "conditions": {"convergence": {"lr": 0.001}, "clipping": {"lr": 0.001, "clip_grad_norm": 1.0}}},
    )
    baseline, frn = fig.axes[0], fig.axes[1]
    assert frn.get_title() == "FRN (own y scale)" and baseline.get_title() == "Baseline (no norm)"
    lo, hi = frn.get_ylim()
    assert lo <= 2.18 and hi >= 2.3  # the barely-learning curve is drawn on its own panel's range
    assert baseline.get_ylim()[1] < 2.0  # the baseline keeps the range fitted to it


def test_fit_limits_keeps_every_curve_when_none_lies_apart():
    limits = fit_limits({"a": np.array([0.5, 0.9]), "b": np.array([0.1, 0.6])})
    assert limits.off_axis == {} and limits.lo < 0.1 and limits.hi > 0.9
    assert fit_limits({"a": np.array([np.nan])}) is None  # every run diverged: nothing to fit


def test_legend_label():
    assert legend_label("Baseline (no norm)", 5) == "Baseline, no norm (n=5)"
    assert legend_label("FRN (learned eps)", 3) == "FRN, learned eps (n=3)"
    assert legend_label("BatchNorm", 3) == "BatchNorm (n=3)"


@pytest.mark.parametrize("lo,hi", [(0.68, 3.2), (0.047, 3.6), (1e-5, 0.3), (2.24, 2.41), (0.9, 1.1)])
def test_log_ticks_are_round_and_bracket_the_data(lo, hi):
    ticks, new_lo, new_hi = round_log_ticks(lo, hi)
    assert new_lo <= lo and new_hi >= hi and ticks[0] == new_lo and ticks[-1] == new_hi
    mantissas = ticks / 10.0 ** np.floor(np.log10(ticks) + 1e-9)
    np.testing.assert_allclose(mantissas, np.round(mantissas), atol=1e-9)  # 1, 2, 3, 5, 7 ... x 10^k
    assert ((ticks >= lo) & (ticks <= hi)).sum() >= 3 or hi / lo < 1.5
    bar = colorbar_ticks(lo, hi, log=True)
    assert len(bar) >= 2 and bar.min() >= lo * 0.9999 and bar.max() <= hi * 1.0001


def hist(counts, underflow, overflow):
    counts = np.asarray(counts)
    return {
        "counts": counts,
        "underflow": np.asarray(underflow),
        "overflow": np.asarray(overflow),
        "edges": np.geomspace(1e-9, 10, counts.shape[1] + 1),
    }


def test_gradient_fate_says_when_a_run_died_or_diverged():
    alive = [[5, 5], [4, 6]]
    assert gradients.gradient_fate(hist(alive + [[0, 0], [0, 0]], [0, 0, 10, 10], [0] * 4)).startswith(
        "no gradient after epoch 2: the run died"
    )
    assert gradients.gradient_fate(hist([[0, 0]] * 3, [10] * 3, [0] * 3)).startswith("no gradient from epoch 1 on")
    assert gradients.gradient_fate(hist(alive + [[1, 0]], [0, 0, 0], [0, 0, 9]), 3).startswith(
        "run diverged in epoch 3"
    )
    # stopped early (the training loop ends a diverged run) with some non-finite gradient in its last epoch
    assert gradients.gradient_fate(hist([[5, 5]], [3], [2]), 8).startswith("run diverged in epoch 1")
    assert gradients.gradient_fate(hist(alive, [0, 0], [0, 0]), 2) == ""


def spectrum_file(root, head: str, eigenvalues: np.ndarray) -> str:
    """The real SLQ of a diagonal Hessian with the given eigenvalues, written as the curvature rule does."""
    from normscape.curvature.spectrum import slq, write_spectrum_h5

    diag = torch.tensor(eigenvalues, dtype=torch.float64)
    nodes, weights, _ = slq(lambda v: diag * v, len(diag), steps=40, runs=3)
    path = root / "landscapes" / "convergence" / head / "base" / "seed0" / "spectrum.h5"
    path.parent.mkdir(parents=True)
    write_spectrum_h5(path, {"eval": {"nodes": nodes, "weights": weights, "summary": {}}})
    return str(path)


def test_hessian_density_axis_is_not_stretched_by_outlier_eigenvalues_and_names_them(tmp_path):
    from normscape.figures.diagnostics import plot_spectrum_density

    rng = np.random.default_rng(0)
    bulk = lambda shift: np.concatenate([rng.normal(shift, 0.3, 400), rng.uniform(2, 20, 8)])  # noqa: E731
    paths = [
        spectrum_file(tmp_path, "none", bulk(0.0)),
        spectrum_file(tmp_path, "batch", bulk(0.5)),
        spectrum_file(tmp_path, "frn", np.concatenate([bulk(-0.5), [-280.0, -150.0]])),
    ]
    fig = plot_spectrum_density(paths, None, None, title="Exp. 1 (lr 0.001)")
    axes = fig.axes
    lo, hi = axes[0].get_xlim()
    assert lo > -100 and hi < 40  # the bulk and the top eigenvalues (up to 20), not -280
    assert len(axes) == 3 and {ax.get_xlim() for ax in axes} == {(lo, hi)}  # one panel per head, shared x
    assert "-280" in panel_texts(axes[2]) and not panel_texts(axes[0])
    assert fig.get_suptitle().startswith("Exp. 1 (lr 0.001): Hessian eigenvalue density")


def test_batch_size_figure_states_n_and_epochs_and_fits_the_heads_that_learn(tmp_path):
    import json

    paths = []
    finals = {"batch": [0.77, 0.765, 0.76], "layer": [0.75, 0.745, 0.74], "frn": [0.1, 0.1, 0.1]}
    for head, accs in finals.items():
        for bs, acc in zip((8, 32, 128), accs):
            d = tmp_path / "runs" / "batch_size" / head / f"bs-{bs}" / "seed0"
            d.mkdir(parents=True)
            loss = LN10 if head == "frn" else 0.8
            (d / "summary.json").write_text(json.dumps({"final": {"test_acc": acc, "test_loss": loss}}))
            paths.append(str(d / "summary.json"))
    settings = {"conditions": {"batch_size": {"lr": 0.001, "epochs": 3}}}
    fig = registry.draw("figA_batch_size", {"summaries": paths}, settings)
    (ax,) = fig.axes
    lo, hi = ax.get_ylim()
    assert lo > 0.1 and hi - lo < 0.1  # the ~1-point differences fill the axis; the dead FRN is named
    assert "FRN" in panel_texts(ax)
    title = fig.get_suptitle()
    assert "3 epochs" in title and "lr 0.001" in title and "n = 1 seed per point" in title
    assert not any(c.__class__.__name__ == "LineCollection" for c in ax.collections)  # n = 1: no error bars


def test_a_panel_whose_every_run_diverged_says_so_and_marks_the_epoch(tmp_path):
    paths = []
    for head in ("none", "batch"):
        d = tmp_path / "runs" / "high_lr" / head / "base" / "seed0"
        d.mkdir(parents=True)
        pd.DataFrame({"epoch": [1], "val_acc": [0.1], "val_loss": [np.nan], "diverged": [1]}).to_csv(
            d / "metrics.csv", index=False
        )
        paths.append(str(d / "metrics.csv"))
    fig = registry.draw("fig10_high_lr", {"metrics": paths}, SETTINGS)
    for ax in fig.axes:
        assert "every run diverged (from epoch 1" in panel_texts(ax)
        assert list(ax.get_xticks()) == [1]
        assert len(ax.collections) >= 2  # the crosses of both runs (loss: NaN, drawn at the top of the axis)
