"""The real Snakemake workflow on the tiny config: runs end to end, reruns only what a config edit touches."""

from __future__ import annotations

import re

import h5py
import pytest
from conftest import config_run_ids, run_snakemake, write_config

pytestmark = pytest.mark.slow


def planned_jobs(proc) -> dict[str, int]:
    """Job counts per rule from a dry run's summary table."""
    jobs = {}
    for line in proc.stdout.splitlines():
        m = re.match(r"^(\w+)\s+(\d+)$", line.strip())
        if m and m.group(1) != "total":
            jobs[m.group(1)] = int(m.group(2))
    return jobs


def test_tiny_workflow_produces_every_stage(tiny_workflow):
    _, cfg, results = tiny_workflow
    with h5py.File(results / "features" / "features.h5") as f:
        assert f["train/features"].shape == (200, 512)  # random ResNet-18: width read from the model
        assert f["val/features"].shape == (60, 512) and f["test/features"].shape == (40, 512)
    # every job's log ends with its usage; python -m normscape.pipeline.jobstats sums them per stage
    from normscape.pipeline.jobstats import collect

    stages, missing = collect(results / "logs")
    assert not missing, missing
    # one job per (experiment, norm): 3 convergence, 1 lr_sweep (its values train together), 2 for each of high_lr,
    # stability, stability_large_batch
    assert stages["train"]["jobs"] == 10 and stages["train"]["user_s"] > 0 and stages["train"]["max_rss_mb"] > 100
    assert {"landscape", "sharpness", "figures", "extract_features", "prepare_data"} <= set(stages)
    runs = sorted(p.parent.relative_to(results / "runs").as_posix() for p in (results / "runs").rglob("summary.json"))
    assert runs == config_run_ids(cfg) and "lr_sweep/none/lr-0.01/seed0" in runs


def test_completed_workflow_has_nothing_to_do(tiny_workflow):
    path, _, _ = tiny_workflow
    proc = run_snakemake(["-n", "all"], configfile=path)
    assert "Nothing to be done" in proc.stdout + proc.stderr


def test_editing_one_experiment_reruns_only_its_jobs(tiny_workflow, tmp_path):
    path, cfg, _ = tiny_workflow
    cfg = {
        **cfg,
        "experiments": {**cfg["experiments"], "convergence": {**cfg["experiments"]["convergence"], "lr": 5e-3}},
    }
    edited = write_config(cfg, tmp_path / "edited.yaml")
    proc = run_snakemake(["-n", "all"], configfile=edited)
    jobs = planned_jobs(proc)
    assert jobs.get("train_convergence") == 3, proc.stdout  # the three convergence jobs, not the lr_sweep ones
    assert "train_lr_sweep" not in jobs
    assert "extract_features" not in jobs and "prepare_data" not in jobs
    assert "lr_sweep" not in " ".join(line for line in proc.stdout.splitlines() if "output:" in line)


def test_editing_backbone_rebuilds_features_and_everything_after(tiny_workflow, tmp_path):
    path, cfg, _ = tiny_workflow
    cfg = {**cfg, "backbone": {**cfg["backbone"], "input_size": 96}}
    jobs = planned_jobs(run_snakemake(["-n", "all"], configfile=write_config(cfg, tmp_path / "b.yaml")))
    # the prepared images are temporary (removed once the features were built): prepared again from the archive
    assert jobs.get("extract_features") == 1 and jobs.get("prepare_data") == 1
    assert jobs.get("train_lr_sweep") == 1 and jobs.get("train_convergence") == 3


def test_targeting_one_run_schedules_only_its_jobs(tiny_config, tmp_path):
    path = write_config(tiny_config, tmp_path / "c.yaml")
    target = f"{tiny_config['results_dir']}/runs/lr_sweep/none/lr-0.01/seed0/summary.json"
    jobs = planned_jobs(run_snakemake(["-n", target], configfile=path))
    assert jobs == {"prepare_data": 1, "extract_features": 1, "train_lr_sweep": 1}  # its condition's job


def test_downloads_go_to_downloads_dir_not_results(tiny_config, tmp_path):
    """The official archive and torchvision weights are inputs: fetched into downloads_dir (default resources/),
    so `du results` counts results only and removing results/ keeps them; a local archive downloads nothing."""
    cfg = {**tiny_config, "data": {**tiny_config["data"], "archive": None}}
    cfg["backbone"] = {**cfg["backbone"], "weights": "IMAGENET1K_V1"}
    proc = run_snakemake(["-n", "download"], configfile=write_config(cfg, tmp_path / "d.yaml"))
    outputs = sorted(line.split("output:")[1].strip() for line in proc.stdout.splitlines() if "output:" in line)
    downloads = cfg["downloads_dir"]
    arch = cfg["backbone"]["arch"]
    assert outputs == [f"{downloads}/data/cifar-10-python.tar.gz", f"{downloads}/weights/{arch}-IMAGENET1K_V1.pth"]
    local = run_snakemake(["-n", "download"], configfile=write_config(tiny_config, tmp_path / "l.yaml"))
    assert "download_data" not in local.stdout


def test_trajectories_only_where_a_landscape_reads_them(tiny_workflow, tmp_path):
    """Runs of landscape.experiments keep trajectory.pt and model_init.pt, the others write neither;
    re-targeting a finished run, removing an experiment from landscape.experiments rerun nothing; adding one
    retrains only its runs."""
    path, cfg, results = tiny_workflow
    for name in ("trajectory.pt", "model_init.pt"):
        assert len(list((results / "runs" / "convergence").rglob(name))) == 3
        assert not list((results / "runs" / "lr_sweep").rglob(name))
    assert len(list((results / "runs").rglob("summary.json"))) == len(config_run_ids(cfg))
    for run in ("convergence/batch/base/seed0", "lr_sweep/none/lr-0.01/seed0"):
        proc = run_snakemake(["-n", str(results / "runs" / run / "summary.json")], configfile=path)
        assert "Nothing to be done" in proc.stdout + proc.stderr, proc.stdout
    removed = {**cfg, "landscape": {**cfg["landscape"], "experiments": []}}
    jobs = planned_jobs(run_snakemake(["-n", "all"], configfile=write_config(removed, tmp_path / "r.yaml")))
    assert not {"train_convergence", "train_lr_sweep", "landscape", "sharpness"} & set(jobs), jobs
    added = {**cfg, "landscape": {**cfg["landscape"], "experiments": ["convergence", "lr_sweep"]}}
    jobs = planned_jobs(run_snakemake(["-n", "all"], configfile=write_config(added, tmp_path / "a.yaml")))
    assert jobs.get("train_lr_sweep") == 1 and "train_convergence" not in jobs, jobs  # the lr_sweep job (2 runs)
    assert jobs.get("landscape") == 2 and jobs.get("sharpness") == 2, jobs


def test_editing_hessian_settings_reruns_sharpness_not_the_planes(tiny_workflow, tmp_path):
    path, cfg, _ = tiny_workflow
    cfg = {**cfg, "hessian": {**cfg["hessian"], "lanczos_steps": 7}}
    jobs = planned_jobs(run_snakemake(["-n", "all"], configfile=write_config(cfg, tmp_path / "h.yaml")))
    tables = {"summary_table": 1, "table_html_summary": 1, "claims": 1, "table_html_claims": 1}  # both read it
    # matched_sharpness.json uses the Hessian settings too; the landing page reads the tables
    assert jobs == {"sharpness": 3, "matched": 3, **tables, "overview": 1, "all": 1}, jobs


def test_tiny_heads_learn_and_landscapes_have_a_basin(tiny_workflow):
    import json

    import numpy as np

    _, _, results = tiny_workflow
    for head in ("batch", "rms"):
        summary = json.loads((results / "runs" / "convergence" / head / "base" / "seed0" / "summary.json").read_text())
        assert summary["final"]["val_acc"] >= 0.8, (head, summary["final"])
    for head in ("none", "batch", "rms"):
        with h5py.File(results / "landscapes" / "convergence" / head / "base" / "seed0" / "landscape.h5") as f:
            loss = f["plane/loss"][()]
        centre = loss[loss.shape[0] // 2, loss.shape[1] // 2]
        assert loss.max() > 1.5 * centre and np.isfinite(loss).all(), (head, loss)  # not flat: a basin at theta*
        with h5py.File(results / "runs" / "convergence" / head / "base" / "seed0" / "grads.h5") as f:
            for layer in f["layers"]:
                assert (f["layers"][layer]["counts"][()].sum(axis=-1) > 0).all(), (head, layer)


def test_editing_spectrum_settings_reruns_only_curvature_and_its_readers(tiny_workflow, tmp_path):
    path, cfg, _ = tiny_workflow
    cfg = {**cfg, "hessian": {**cfg["hessian"], "spectrum": {**cfg["hessian"]["spectrum"], "top_k": 2}}}
    jobs = planned_jobs(run_snakemake(["-n", "all"], configfile=write_config(cfg, tmp_path / "s.yaml")))
    assert jobs.pop("curvature") == 3 and not [j for j in jobs if j.startswith("train_")], jobs
    assert "landscape" not in jobs, jobs
    readers = {"claims", "table_html_claims", "figure_fig_hessian_density", "figure_fig_adaptive_sharpness", "all"}
    readers.add("overview")  # the landing page reads the claims
    assert set(jobs) <= readers, jobs


def test_editing_smoothness_settings_reruns_only_the_probed_runs(tiny_workflow, tmp_path):
    path, cfg, _ = tiny_workflow
    diagnostics = {**cfg["diagnostics"], "smoothness": {**cfg["diagnostics"]["smoothness"], "every": 7}}
    cfg = {**cfg, "diagnostics": diagnostics}
    proc = run_snakemake(["-n", "all"], configfile=write_config(cfg, tmp_path / "p.yaml"))
    jobs = planned_jobs(proc)
    assert jobs.get("train_convergence") == 3 and "train_lr_sweep" not in jobs, jobs  # they carry the probe
    assert "extract_features" not in jobs
    assert "lr_sweep" not in " ".join(line for line in proc.stdout.splitlines() if "output:" in line)


def test_diagnostics_outputs_have_sane_numbers(tiny_workflow):
    """Every new output of the default workflow exists with numbers that mean something (not only files)."""
    import json

    import numpy as np

    _, cfg, results = tiny_workflow
    diag = cfg["diagnostics"]
    for head in ("none", "batch", "rms"):
        run = results / "runs" / "convergence" / head / "base" / "seed0"
        smooth = json.loads((run / "smoothness.json").read_text())
        steps = 8 * -(-200 // 16)  # epochs x batches per epoch of the tiny config
        assert smooth["probes"] == len(range(0, steps, diag["smoothness"]["every"])), smooth
        assert 0 < smooth["loss_range_median"] <= smooth["loss_range_p90"] and smooth["beta_median"] > 0, smooth
        summary = json.loads((run / "summary.json").read_text())
        assert summary["config"]["smoothness"]["every"] == diag["smoothness"]["every"]  # in the run's identity
        land = results / "landscapes" / "convergence" / head / "base" / "seed0"
        spectrum = json.loads((land / "spectrum.json").read_text())
        adaptive = json.loads((land / "adaptive_sharpness.json").read_text())
        matched = json.loads((land / "matched_sharpness.json").read_text())
        assert matched["provenance"]["run_identity"] == summary["provenance"]["identity"]
        metrics = (run / "metrics.csv").read_text().splitlines()
        losses = [float(line.split(",")[1]) for line in metrics[1:]]
        # the first epoch at or below the common level (which no learning run's final loss exceeds)
        assert (
            losses[matched["epoch"] - 1]
            <= matched["level"]
            < (losses[matched["epoch"] - 2] if matched["epoch"] > 1 else 9e9)
        )
        assert losses[-1] <= matched["level"]
        assert matched["top_eigenvalue"] >= matched["min_eigenvalue"] and matched["final_top_eigenvalue"] > 0
        for record in (spectrum, adaptive):
            assert record["provenance"]["run_identity"] == summary["provenance"]["identity"]
        assert set(spectrum) - {"enabled", "provenance"} == ({"eval", "train"} if head == "batch" else {"eval"})
        for mode in set(spectrum) - {"enabled", "provenance"}:
            top = spectrum[mode]["top_eigenvalues"]
            assert len(top) == cfg["hessian"]["spectrum"]["top_k"] and top == sorted(top, reverse=True) and top[0] > 0
            blocks = spectrum[mode]["blocks"]
            assert {"fc1", "fc2"} <= set(blocks) and all(b["trace"] > 0 for b in blocks.values())
            # no diagonal block's top eigenvalue exceeds the whole Hessian's (Cauchy interlacing), up to Lanczos error
            assert max(b["top_eigenvalue"] for b in blocks.values()) <= 1.05 * top[0]
            sharp = adaptive[mode]
            assert len(sharp["worst"]) == len(sharp["average"]) == 3, sharp  # the schema's default radii
            worst = [sharp["worst"][r] for r in sorted(sharp["worst"], key=float)]
            assert worst[0] > 0 and np.all(np.diff(worst) > 0), (head, mode, worst)  # a larger ball holds more
            # average case: second order at a minimum, a few noise draws -> small, of either sign off the minimum
            assert all(abs(v) < worst[-1] * 100 and np.isfinite(v) for v in sharp["average"].values()), sharp
    lr_run = results / "runs" / "lr_sweep" / "none" / "lr-0.01" / "seed0" / "smoothness.json"
    assert json.loads(lr_run.read_text())["probes"] == 0  # outside diagnostics.smoothness.experiments
    claims = (results / "tables" / "claims.md").read_text()
    assert "adaptive sharpness" in claims and "smoother landscape" in claims and "BatchNorm - baseline" in claims
    summary_md = (results / "tables" / "summary.md").read_text()
    assert "epochs to plateau" in summary_md and "80%" not in summary_md
    assert "Claims of the study" in (results / "tables" / "claims.html").read_text()
    for name in ("fig_smoothness", "fig_hessian_density", "fig_adaptive_sharpness"):
        assert (results / "figures" / f"{name}.pdf").stat().st_size > 0
        assert (results / "figures" / f"{name}.png").stat().st_size > 10_000


@pytest.mark.parametrize(
    "section,edit",
    [
        ("tracking", {"wandb": {"mode": "offline", "timeout_s": 5, "project": "elsewhere"}}),
        ("data", {"checksum": "the archive's own, written out"}),
    ],
)
def test_settings_that_change_no_number_rerun_nothing(tiny_workflow, tmp_path, section, edit):
    """How runs are reported (W&B) and how a local archive is verified change no result: Snakemake reruns a job
    whose params changed, so neither is a param of a job that reads it. Only the landing page, which shows the
    whole config, is written again (seconds)."""
    import hashlib
    from pathlib import Path

    path, cfg, _ = tiny_workflow
    if section == "data":
        edit = {"checksum": "sha256:" + hashlib.sha256(Path(cfg["data"]["archive"]).read_bytes()).hexdigest()}
    edited = {**cfg, section: {**cfg[section], **edit}}
    proc = run_snakemake(["-n", "all"], configfile=write_config(edited, tmp_path / "e.yaml"))
    assert set(planned_jobs(proc)) <= {"overview", "all"}, proc.stdout[-3000:]
