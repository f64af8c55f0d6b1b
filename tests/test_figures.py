"""Figures and tables from the tiny workflow's real runs: files exist, are valid images; table math."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from conftest import config_conditions, run_snakemake, write_config

from normscape.reporting import summary_table

pytestmark = pytest.mark.slow

TINY_FIGURES = [
    "fig4_convergence_accuracy",
    "fig5_landscape_surface",
    "fig5_landscape_contour",
    "fig5_trajectory_pca",
    "fig_landscape_1d",
    "fig6_grad_hist_fc2",
    "fig11_lr_sweep_grads",
    "fig_smoothness",
    "fig_hessian_density",
    "fig_adaptive_sharpness",
    "fig_preconditioned_sharpness",
    "fig_stability_map",
]


def test_every_figure_of_the_tiny_config_is_a_valid_image(tiny_workflow):
    _, _, results = tiny_workflow
    for name in TINY_FIGURES:
        pdf, png = results / "figures" / f"{name}.pdf", results / "figures" / f"{name}.png"
        assert pdf.read_bytes()[:5] == b"%PDF-", name
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
        assert png.stat().st_size > 10_000, name
    # experiments missing from the config give no figure rather than an error
    assert not (results / "figures" / "fig9_clipping_val_loss.pdf").exists()  # the tiny config has no clipping


def test_summary_table_is_written(tiny_workflow):
    _, cfg, results = tiny_workflow
    df = pd.read_csv(results / "tables" / "summary.csv")
    assert set(df["experiment"]) == set(cfg["experiments"]) and len(df) == config_conditions(cfg)
    md = (results / "tables" / "summary.md").read_text()
    assert md.startswith("# Summary of all runs\n\n### convergence — 3 rows") and "BatchNorm" in md and "RMSNorm" in md
    # one table per experiment; the sweep's variants in the order of their value
    assert "| head | variant |" in md and md.index("| lr-0.001 |") < md.index("| lr-0.01 |")


def test_targeting_one_figure_schedules_only_what_it_needs(tiny_config, tmp_path):
    path = write_config(tiny_config, tmp_path / "c.yaml")
    proc = run_snakemake(["-n", f"{tiny_config['results_dir']}/figures/fig4_convergence_accuracy.pdf"], configfile=path)
    jobs = {
        line.split()[0]: int(line.split()[1])
        for line in proc.stdout.splitlines()
        if len(line.split()) == 2 and line.split()[1].isdigit()
    }
    assert jobs.get("train_convergence") == 3 and "landscape" not in jobs and jobs.get("total") == 6


def test_table_aggregates_mean_and_std_over_seeds(tmp_path):
    paths, metrics = [], []
    curves = [[0.5, 0.7, 0.78, 0.8], [0.6, 0.8, 0.8, 0.8], [0.3, 0.4, 0.5, 0.9]]  # 95 % plateau: epochs 3, 2, 4
    for seed, acc in enumerate([0.80, 0.84, 0.86]):
        d = tmp_path / "runs" / "convergence" / "layer" / "base" / f"seed{seed}"
        d.mkdir(parents=True)
        summary = {
            "final": {"test_acc": acc, "val_loss": 0.5 + seed},
            "best": {"test_acc": acc + 0.01},
            "epochs_to_val_acc": {"0.80": 3 + seed, "0.85": None if seed < 2 else 9},
            "grad_norm": {"median": 1.0, "p99": 2.0, "clipped_fraction": 0.0},
            "diverged": seed == 0,
            "wall_time_s": 10.0,
        }
        (d / "summary.json").write_text(json.dumps(summary))
        paths.append(str(d / "summary.json"))
        rows = [f"{epoch},{acc}" for epoch, acc in enumerate(curves[seed], start=1)]
        (d / "metrics.csv").write_text("epoch,val_acc\n" + "\n".join(rows) + "\n")
        metrics.append(str(d / "metrics.csv"))
    table = summary_table.write_summary_table(paths, [], tmp_path / "t.csv", tmp_path / "t.md", metrics, 0.95)
    row = table.iloc[0]
    assert row["final_test_acc_mean"] == pytest.approx(np.mean([0.80, 0.84, 0.86]))
    assert row["final_test_acc_std"] == pytest.approx(np.std([0.80, 0.84, 0.86], ddof=1))
    assert row["epochs_to_plateau_mean"] == pytest.approx(3.0) and row["epochs_to_plateau_n"] == 3
    aucs = [np.trapezoid(c, [1, 2, 3, 4]) / 3 for c in curves]
    assert row["val_auc_mean"] == pytest.approx(np.mean(aucs)) and row["val_auc_std"] == pytest.approx(
        np.std(aucs, ddof=1)
    )
    assert row["diverged"] == "1/3"
    assert "83.3 ± 3.1%" in (tmp_path / "t.md").read_text()


def test_snakemake_report_builds_with_every_caption(tiny_workflow, tmp_path):
    path, _, _ = tiny_workflow
    report = tmp_path / "report.html"
    proc = run_snakemake(["--report", str(report)], configfile=path)
    out = proc.stdout + proc.stderr
    assert report.stat().st_size > 100_000
    assert "ERROR" not in out, out[-2000:]  # e.g. reStructuredText errors in a caption


def test_figures_of_experiments_missing_from_the_tiny_config(tiny_workflow, tmp_path):
    """fig7-10 and the batch-size appendix need experiments the tiny config lacks: render them from copies
    of the tiny runs placed under those experiments' names (same files, same loaders and plot code)."""
    import shutil

    from normscape.figures.registry import render

    _, _, results = tiny_workflow
    runs = tmp_path / "runs"
    for experiment, variant in (
        ("convergence", "base"),
        ("clipping", "base"),
        ("high_lr", "base"),
        ("batch_size", "bs-8"),
        ("batch_size", "bs-32"),
    ):
        for head in ("none", "batch"):
            shutil.copytree(
                results / "runs" / "convergence" / head / "base" / "seed0", runs / experiment / head / variant / "seed0"
            )

    def files(experiments, name, heads=("none", "batch")):
        return [str(p) for e in experiments for h in heads for p in sorted((runs / e / h).glob(f"*/seed0/{name}"))]

    cases = {
        "fig7_layernorm_clipping_val_loss": {"metrics": files(["convergence", "clipping"], "metrics.csv", ["batch"])},
        "fig8_layernorm_clipping_grads": {"grads": files(["convergence", "clipping"], "grads.h5", ["batch"])},
        "fig9_clipping_val_loss": {"metrics": files(["convergence", "clipping"], "metrics.csv")},
        "fig10_high_lr": {"metrics": files(["high_lr"], "metrics.csv")},
        "figA_batch_size": {"summaries": files(["batch_size"], "summary.json")},
    }
    for name, inputs in cases.items():
        assert all(inputs.values()), name
        if name.startswith("fig7"):  # fig7 draws the LayerNorm head, which the tiny config does not train
            from normscape.figures import curves, style

            fig = curves.clipping_figure(inputs["metrics"], ["batch"], {"smoothing_window": 3})
            style.save(fig, tmp_path / f"{name}.pdf", tmp_path / f"{name}.png")
        else:
            render(name, inputs, {"smoothing_window": 3}, tmp_path / f"{name}.pdf", tmp_path / f"{name}.png")
        assert (tmp_path / f"{name}.pdf").read_bytes()[:5] == b"%PDF-", name
        png = tmp_path / f"{name}.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000, name


# ------------------------------------------------------------------------------------------ figure content
def figure_inputs(results, name: str) -> dict[str, list[str]]:
    """The files the figure's own spec (normscape.figures.registry.FIGURES) names, from the tiny run directories."""
    from normscape.figures.registry import FIGURES

    inputs: dict[str, list[str]] = {}
    for kind, entries in FIGURES[name].inputs.items():
        for experiment, filename, heads in entries:
            root = results / ("landscapes" if filename in ("landscape.h5", "sharpness.json") else "runs") / experiment
            found = sorted(str(p) for p in root.glob(f"*/*/seed*/{filename}"))
            inputs.setdefault(kind, []).extend(p for p in found if heads is None or p.split("/")[-4] in heads)
    return inputs


def data_axes(fig):
    return [ax for ax in fig.axes if ax.get_label() != "<colorbar>"]


def test_convergence_figure_draws_each_heads_mean_curve(tiny_workflow):
    from normscape.figures import registry
    from normscape.models.norms import NORM_COLOURS

    _, _, results = tiny_workflow
    fig = registry.draw("fig4_convergence_accuracy", figure_inputs(results, "fig4_convergence_accuracy"), {})
    axes = data_axes(fig)
    assert [ax.get_title() for ax in axes] == ["Validation accuracy", "Training accuracy"]
    legend = [t.get_text() for t in fig.legends[0].get_texts()]
    assert legend == ["Baseline, no norm (n=1)", "BatchNorm (n=1)", "RMSNorm (n=1)"]  # rms: label from the registry
    for head, colour in (("batch", NORM_COLOURS["batch"]), ("rms", NORM_COLOURS["rms"])):
        metrics = pd.read_csv(results / "runs" / "convergence" / head / "base" / "seed0" / "metrics.csv")
        raw = [ln for ln in axes[0].lines if ln.get_color() == colour][0]  # first line: the raw mean over seeds
        np.testing.assert_allclose(raw.get_ydata(), metrics["val_acc"].to_numpy())
        np.testing.assert_allclose(raw.get_xdata(), metrics["epoch"].to_numpy())


def test_a_running_average_is_drawn_only_over_more_epochs_than_its_window():
    """Centred over 3 epochs, a 2-epoch curve's average is one flat line across the panel: left out."""
    import matplotlib.pyplot as plt

    from normscape.figures.curves import plot_curves

    for epochs, lines in ((2, 1), (4, 2)):
        df = pd.DataFrame({"epoch": range(1, epochs + 1), "head": "batch", "val_acc": np.linspace(0.3, 0.8, epochs)})
        df["diverged"] = 0
        fig, ax = plt.subplots()
        plot_curves(ax, df, "val_acc", "head", window=3)
        assert len(ax.lines) == lines, epochs
        plt.close(fig)


def test_landscape_figures_show_every_head_with_its_data(tiny_workflow):
    import h5py

    from normscape.figures import registry

    _, _, results = tiny_workflow
    inputs = figure_inputs(results, "fig5_landscape_contour")
    contour = registry.draw("fig5_landscape_contour", inputs, {})
    axes = data_axes(contour)
    assert [ax.get_title() for ax in axes] == ["Baseline (no norm)", "BatchNorm", "RMSNorm"]
    assert all(ax.collections for ax in axes)  # filled contours drawn in every panel
    one_d = registry.draw("fig_landscape_1d", inputs, {})
    interp_ax = data_axes(one_d)[0]
    with h5py.File(results / "landscapes" / "convergence" / "rms" / "base" / "seed0" / "landscape.h5") as f:
        expected = f["interpolation/loss"][()]
    rms_line = [ln for ln in interp_ax.lines if ln.get_label() == "RMSNorm"][0]
    np.testing.assert_allclose(rms_line.get_ydata(), expected)
    assert len(data_axes(registry.draw("fig5_landscape_surface", inputs, {}))) == 3
    assert len(data_axes(registry.draw("fig5_trajectory_pca", inputs, {}))) == 3


def test_a_path_on_one_line_gets_a_readable_pca_panel(tiny_workflow, tmp_path):
    """Two epochs give three trajectory points and one line: PC2 explains ~1e-28 of the variance and its grid is a
    sliver; on equal scales the panel collapsed to a flat strip with overlapping tick labels."""
    import shutil

    import h5py

    from normscape.figures import registry

    _, _, results = tiny_workflow
    source = results / "landscapes" / "convergence" / "none" / "base" / "seed0" / "landscape.h5"
    line = tmp_path / "landscapes" / "convergence" / "none" / "base" / "seed0" / "landscape.h5"
    line.parent.mkdir(parents=True)
    shutil.copy(source, line)
    with h5py.File(line, "r+") as f:
        f["pca/explained_variance_ratio"][1] = 3e-28
        f["pca/betas"][...] = np.linspace(-2.5e-4, 2.5e-4, len(f["pca/betas"]))
    (degenerate,) = data_axes(registry.draw("fig5_trajectory_pca", {"landscapes": [str(line)]}, {}))
    (normal,) = data_axes(registry.draw("fig5_trajectory_pca", {"landscapes": [str(source)]}, {}))
    assert degenerate.get_aspect() == "auto" and normal.get_aspect() == 1.0
    assert [t.get_text() for t in degenerate.texts] == ["path on one line: PC2 arbitrary"] and not normal.texts


def test_gradient_heatmaps_show_the_histogram_fractions(tiny_workflow):
    import h5py
    from matplotlib import colors

    from normscape.figures import gradients, registry

    _, _, results = tiny_workflow
    fig = registry.draw("fig6_grad_hist_fc2", figure_inputs(results, "fig6_grad_hist_fc2"), {})
    axes = data_axes(fig)
    assert [ax.get_title() for ax in axes] == ["Baseline (no norm)", "BatchNorm", "RMSNorm"]
    with h5py.File(results / "runs" / "convergence" / "batch" / "base" / "seed0" / "grads.h5") as f:
        counts = f["layers/fc2.weight/counts"][()].astype(float)
    mesh = axes[1].collections[0]
    shown = mesh.get_array().filled(0).reshape(counts.shape[0], -1)
    assert shown.sum(1) == pytest.approx(
        np.ones(counts.shape[0]), abs=1e-6
    )  # every epoch's fractions, all bins in view
    frac = counts / counts.sum(1, keepdims=True)
    assert shown.max() == pytest.approx(frac.max())
    # empty bins are masked and drawn in their own colour, never the colour of the smallest fractions
    masked = mesh.get_array().mask.reshape(counts.shape[0], -1)
    assert masked.any() and np.array_equal(masked, shown == 0)
    assert mesh.get_cmap().get_bad()[:3] == pytest.approx(colors.to_rgb(gradients.EMPTY_BIN_COLOUR))
    assert mesh.get_cmap().get_bad()[:3] != pytest.approx(mesh.get_cmap()(0.0)[:3])
    # the colour scale spans the decades of the heads' data, not 1e-4 ... 1 whatever they are
    largest = max(m.get_array().max() for m in (ax.collections[0] for ax in axes))
    smallest = min(m.get_array().min() for m in (ax.collections[0] for ax in axes))
    assert mesh.norm.vmax == pytest.approx(min(10 ** np.ceil(np.log10(largest)), 1.0))
    assert mesh.norm.vmin == pytest.approx(10 ** np.floor(np.log10(smallest)))


def test_table_shows_lambda_max_lambda_min_and_saddles_and_which_checkpoint(tmp_path):
    paths, sharp, metrics = [], [], []
    eig = [(3.08, -9.63, True), (0.48, -251.7, True), (2.0, -1e-6, False)]  # seed 0/1 of the FRN
    for seed, (top, low, saddle) in enumerate(eig):
        d = tmp_path / "runs" / "convergence" / "frn" / "base" / f"seed{seed}"
        d.mkdir(parents=True)
        summary = {
            "final": {"test_acc": 0.1, "val_loss": 2.3},
            "best": {"test_acc": 0.12},
            "grad_norm": {"median": 1.0, "p99": 2.0, "clipped_fraction": 0.0},
            "diverged": False,
            "wall_time_s": 1.0,
        }
        (d / "summary.json").write_text(json.dumps(summary))
        paths.append(str(d / "summary.json"))
        (d / "metrics.csv").write_text("epoch,val_acc,val_loss\n1,0.1,2.3\n2,0.1,2.1\n3,0.1,2.0\n")
        metrics.append(str(d / "metrics.csv"))
        land = tmp_path / "landscapes" / "convergence" / "frn" / "base" / f"seed{seed}"
        land.mkdir(parents=True)
        record = {"top_eigenvalue": top, "min_eigenvalue": low, "saddle": saddle, "hessian_trace": 5.0}
        (land / "sharpness.json").write_text(json.dumps(record))
        sharp.append(str(land / "sharpness.json"))
    table = summary_table.write_summary_table(paths, sharp, tmp_path / "t.csv", tmp_path / "t.md", metrics, 0.95)
    row = table.iloc[0]
    # lambda_max averages the largest algebraic eigenvalues (never the signed dominant one); saddles counted
    assert row["top_eigenvalue_mean"] == pytest.approx(np.mean([3.08, 0.48, 2.0]))
    assert row["min_eigenvalue_mean"] == pytest.approx(np.mean([-9.63, -251.7, -1e-6]))
    assert row["saddle"] == "2/3"
    assert row["val_loss_auc_mean"] == pytest.approx(np.trapezoid([2.3, 2.1, 2.0], [1, 2, 3]) / 2)
    md = (tmp_path / "t.md").read_text()
    for text in ("λmax (sharpness)", "λmin", "| saddle |", "test acc, final epoch", "test acc, best-val checkpoint"):
        assert text in md
