"""The `train` rule inside the real workflow: contract outputs per run, and params slices that isolate experiments.

Uses the session's tiny workflow (tests/config/tiny.yaml, run once by the `tiny_workflow` fixture).
"""

from __future__ import annotations

import copy
import csv
import json

import h5py
import pytest
from conftest import run_snakemake, write_config

from normscape.pipeline.config import BASE_VARIANT, enumerate_runs, validate_config
from normscape.pipeline.jobstats import parse_usage

pytestmark = pytest.mark.slow

RUN_FILES = [
    "summary.json",
    "metrics.csv",
    "grads.h5",
    "model_final.pt",
    "model_best.pt",
]


def changed_params(path) -> set[str]:
    """Outputs a params-only rerun would rebuild: a dry run of `all` with `--rerun-triggers params`.

    (`--list-changes params` of Snakemake 9 lists every output even on an unchanged config, so the dry run's
    planned jobs are the reliable view of "which jobs does this edit rerun".)
    """
    proc = run_snakemake(["-n", "all", "--rerun-triggers", "params"], configfile=path)
    files = set()
    for line in proc.stdout.splitlines():
        if line.strip().startswith("output:"):
            files.update(f.strip() for f in line.split(":", 1)[1].split(","))
    return {f for f in files if f.endswith(("summary.json", "features.h5"))}


def test_every_run_has_the_contract_outputs_and_a_log_with_its_usage(tiny_workflow):
    _, cfg, results = tiny_workflow
    run = results / "runs" / "lr_sweep" / "none" / "lr-0.01" / "seed0"
    for name in RUN_FILES:
        assert (run / name).is_file(), name
    for name in ("trajectory.pt", "model_init.pt"):  # lr_sweep is not in landscape.experiments: no landscape inputs
        assert not (run / name).exists(), name
    # one job trains every seed of every value of an lr sweep, each run at its own lr
    log = (results / "logs" / "train" / "lr_sweep" / "none" / "lr-sweep.log").read_text()
    assert not (results / "logs" / "train" / "lr_sweep" / "none" / "lr-0.01.log").exists()
    usage = parse_usage(log)  # the job's exact usage instead of Snakemake's sampled benchmark TSV
    assert usage is not None and usage["user_s"] > 0 and usage["max_rss_mb"] > 50, log[-500:]
    assert not (results / "benchmarks" / "train").exists()
    summary = json.loads((run / "summary.json").read_text())
    # the job saw only its own slice: the swept lr, the tiny defaults, this head
    assert (summary["experiment"], summary["head"], summary["variant"], summary["seed"]) == (
        "lr_sweep",
        "none",
        "lr-0.01",
        0,
    )
    assert summary["training"]["lr"] == pytest.approx(0.01)
    assert summary["training"]["epochs"] == cfg["training"]["epochs"] == summary["epochs_completed"]
    assert summary["head_config"]["norm"] == "none" and summary["head_config"]["hidden"] == cfg["head"]["hidden"]
    rows = list(csv.DictReader((run / "metrics.csv").open()))
    assert [int(r["epoch"]) for r in rows] == list(range(1, cfg["training"]["epochs"] + 1))
    with h5py.File(run / "grads.h5") as f:
        assert f["layers/fc1.weight/counts"].shape[0] == cfg["training"]["epochs"]


def test_editing_grad_hist_changes_every_train_job_but_not_features(tiny_workflow, tmp_path):
    path, cfg, _ = tiny_workflow
    edited = write_config({**cfg, "grad_hist": {"min": 1e-8, "max": 1.0, "bins_per_octave": 2}}, tmp_path / "g.yaml")
    changed = changed_params(edited)
    runs = {p.split("/runs/")[1].rsplit("/", 1)[0] for p in changed if "/runs/" in p}
    every_run = {run.run_id for run in enumerate_runs(validate_config(copy.deepcopy(cfg)))}
    assert runs == every_run  # every run of every experiment
    assert "lr_sweep/none/lr-0.01/seed0" in runs and "stability_large_batch/batch/lr-3/seed0" in runs
    assert not any("features.h5" in p for p in changed)


def test_finished_runs_keep_no_resume_state_and_rerun_nothing(tiny_workflow):
    path, _, results = tiny_workflow
    assert not list((results / "runs").glob("**/checkpoints"))  # resume state removed once a run finished
    one_run = results / "runs" / "convergence" / "batch" / BASE_VARIANT / "seed0" / "summary.json"
    assert one_run.is_file()
    for target in (["all"], [str(one_run)]):  # the whole study again, or re-targeted at one of its runs
        proc = run_snakemake(["-n", *target], configfile=path)
        assert "Nothing to be done" in proc.stdout + proc.stderr, proc.stdout[-2000:]
