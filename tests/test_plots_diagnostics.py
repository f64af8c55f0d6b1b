"""Diagnostics figures drawn from real measure files of tiny trained heads: the plotted numbers are checked."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from normscape.curvature.adaptive_sharpness import adaptive_sharpness, write_adaptive_sharpness
from normscape.curvature.smoothness import SmoothnessProbe, derived, read_smoothness_h5, write_smoothness
from normscape.curvature.spectrum import hessian_spectrum, write_spectrum
from normscape.figures.diagnostics import plot_adaptive_sharpness, plot_smoothness, plot_spectrum_density
from normscape.training.trainer import Trainer

HEADS = ("none", "batch", "layer")


def data(seed=0, n=128, dim=24):
    g = torch.Generator().manual_seed(seed)
    centers = torch.randn(10, dim, generator=g)
    out = {}
    for name, size in (("train", n), ("val", 32), ("test", 32)):
        y = torch.randint(0, 10, (size,), generator=g)
        out[name] = ((centers[y] + torch.randn(size, dim, generator=g)).relu(), y)
    return out


@pytest.fixture(scope="module")
def measured(tmp_path_factory):
    root = tmp_path_factory.mktemp("diag")
    d = data()
    files = {"smoothness": [], "spectrum": [], "adaptive": []}
    for head in HEADS:
        for seed in (0, 1):
            run = root / "runs" / "convergence" / head / "base" / f"seed{seed}"
            probe = SmoothnessProbe(every=2)
            trainer = Trainer(d, norm=head, seeds=seed, epochs=2, batch_size=32, lr=1e-2, hidden=16, probe=probe)
            trainer.fit()
            write_smoothness(run / "smoothness.h5", run / "smoothness.json", probe)
            files["smoothness"].append(run / "smoothness.h5")
            land = root / "landscapes" / "convergence" / head / "base" / f"seed{seed}"
            x, y = d["train"]
            modes = ("eval", "train") if head == "batch" else ("eval",)
            spectra = {
                m: hessian_spectrum(
                    trainer.stack.model_of(0), x, y, mode=m, batch_size=32, slq_steps=12, block_steps=4, block_probes=2
                )
                for m in modes
            }
            write_spectrum(land / "spectrum.h5", land / "spectrum.json", spectra)
            files["spectrum"].append(land / "spectrum.h5")
            sharp = {
                m: adaptive_sharpness(
                    trainer.stack.model_of(0), x, y, [0.01, 0.05], mode=m, batch_size=32, samples=3, ascent_steps=2
                )
                for m in modes
            }
            write_adaptive_sharpness(land / "adaptive_sharpness.json", sharp)
            files["adaptive"].append(land / "adaptive_sharpness.json")
    return root, files


@pytest.mark.slow
def test_smoothness_figure_plots_median_over_seeds(measured):
    root, files = measured
    drawn = plot_smoothness(files["smoothness"], root / "s.pdf", root / "s.png")
    assert (root / "s.pdf").stat().st_size > 0 and (root / "s.png").stat().st_size > 0
    for head in HEADS:
        runs = [read_smoothness_h5(p) for p in files["smoothness"] if f"/{head}/" in str(p)]
        expected = np.median(np.vstack([derived(r)["beta"] for r in runs]), 0)
        np.testing.assert_allclose(drawn[("beta", head)], expected)
        assert np.all(drawn[("loss_range", head)] > 0)


@pytest.mark.slow
def test_spectrum_figure_draws_batchnorm_in_both_modes(measured):
    root, files = measured
    drawn = plot_spectrum_density(files["spectrum"], root / "d.pdf", root / "d.png")
    assert set(k for k in drawn if k != "grid") == {
        ("none", "eval"),
        ("batch", "eval"),
        ("batch", "train"),
        ("layer", "eval"),
    }
    grid = drawn["grid"]
    for key, dens in drawn.items():
        if key != "grid":
            assert np.sum(dens) * (grid[1] - grid[0]) == pytest.approx(1.0, abs=0.02)  # a density
    assert not np.allclose(drawn[("batch", "eval")], drawn[("batch", "train")])


@pytest.mark.slow
def test_adaptive_sharpness_figure(measured):
    root, files = measured
    drawn = plot_adaptive_sharpness(files["adaptive"], root / "a.pdf", root / "a.png")
    assert ("batch", "train", "worst") in drawn and ("none", "train", "worst") not in drawn
    for (_, _, key), values in drawn.items():
        assert values.shape == (2,) and np.all(np.isfinite(values))
        if key == "worst":
            assert values[1] > values[0]  # the larger ball holds a higher maximum


@pytest.mark.slow
def test_figures_skip_the_records_of_diverged_runs(measured, tmp_path):
    """A diverged run's curvature files hold only the reason (normscape.curvature.jobs.compute_curvature): the
    figures draw the other runs, unchanged."""
    import json

    import h5py

    root, files = measured
    land = tmp_path / "landscapes" / "convergence" / "none" / "base" / "seed7"
    land.mkdir(parents=True)
    with h5py.File(land / "spectrum.h5", "w") as f:
        f.attrs["status"] = "diverged"
    (land / "adaptive_sharpness.json").write_text(json.dumps({"diverged": True, "reason": "loss exploded"}))
    clean = plot_spectrum_density(files["spectrum"], root / "d.pdf", root / "d.png")
    with_diverged = plot_spectrum_density(files["spectrum"] + [land / "spectrum.h5"], root / "e.pdf", root / "e.png")
    np.testing.assert_allclose(with_diverged[("none", "eval")], clean[("none", "eval")])
    paths = files["adaptive"] + [land / "adaptive_sharpness.json"]
    drawn = plot_adaptive_sharpness(paths, root / "b.pdf", root / "b.png")
    clean = plot_adaptive_sharpness(files["adaptive"], root / "c.pdf", root / "c.png")
    np.testing.assert_allclose(drawn[("none", "eval", "worst")], clean[("none", "eval", "worst")])


@pytest.mark.slow
def test_smoothness_panels_have_y_labels_with_units_and_the_legend_covers_no_data(measured):
    root, files = measured
    fig = plot_smoothness(files["smoothness"], None, None, title="Exp. 1 (lr 0.01)")
    assert len(fig.axes) == 6
    for ax in fig.axes:
        assert "nats" in ax.get_ylabel(), ax.get_title()
        assert ax.get_legend() is None  # the legend is the figure's, outside every panel
    assert [t.get_text() for t in fig.legends[0].get_texts()] == ["Baseline (no norm)", "BatchNorm", "LayerNorm"]
    assert fig.get_suptitle().startswith("Exp. 1 (lr 0.01): smoothness")


@pytest.mark.slow
def test_adaptive_sharpness_axes_take_the_scale_their_values_allow(measured):
    from normscape.figures.diagnostics import value_axis
    from normscape.figures.style import plt

    root, files = measured
    fig = plot_adaptive_sharpness(files["adaptive"], None, None)
    for ax in fig.axes:  # every y drawn, the error bars' ends included, is inside the axis its scale allows
        assert ax.get_legend() is None
        lo, hi = ax.get_ylim()
        values = np.concatenate([line.get_ydata() for line in ax.lines if len(line.get_ydata())])
        assert lo <= values.min() and hi >= values.max()
        if (values > 0).all():  # log, with no empty decades; else no empty negative half is ever made up
            assert ax.get_yscale() == "log" and hi / lo < 100 * values.max() / values.min()
        else:
            assert ax.get_yscale() in ("symlog", "linear")
    _, ax = plt.subplots()
    assert value_axis(ax, "y", np.array([-1e-3, 2e-5, 0.4])) == "symlog"  # both signs, over decades
    assert value_axis(ax, "y", np.array([-0.2, 0.1, 0.3])) == "linear"
    assert value_axis(ax, "y", np.array([1e-4, 0.1])) == "log"


def test_an_error_bar_below_zero_takes_the_axis_off_log(tmp_path):
    # positive means over decades whose spread over seeds reaches below zero: a log axis would cut the bar off unseen
    import json

    paths = []
    for seed, (spread, narrow) in enumerate(((0.2, 0.9), (1.8, 1.1))):
        record = {
            "ball": "linf",
            "average": {"0.02": 2e-5 * spread, "0.05": 5e-4 * spread},
            "worst": {"0.001": 1e-4 * narrow, "0.002": 4e-2 * narrow},
        }
        path = tmp_path / "landscapes" / "convergence" / "batch" / "base" / f"seed{seed}" / "adaptive_sharpness.json"
        path.parent.mkdir(parents=True)
        path.write_text(json.dumps({"eval": record}))  # the file's layout: {mode: numbers by radius}
        paths.append(path)
    fig = plot_adaptive_sharpness(paths, None, None)
    average, worst = fig.axes
    assert average.get_yscale() == "symlog"  # mean 2e-5, std 2.3e-5: the bar ends below zero
    assert worst.get_yscale() == "log"  # every bar stays positive
    for ax in (average, worst):
        lo, hi = ax.get_ylim()
        values = np.concatenate([line.get_ydata() for line in ax.lines if len(line.get_ydata())])
        assert lo <= values.min() and hi >= values.max()
