"""The tiny pipeline through profiles/slurm on a real single-node SLURM cluster (tests/cluster/slurm_cluster.py).

Checks that every job behind three of the tiny config's figures (data, sharded features, training of two
experiments, landscapes) is submitted with sbatch and runs as a SLURM job (job ids in snakemake's log, the same jobs
in `squeue -t all`, one SLURM log per job), that its outputs equal a local run's (HDF5 datasets, metrics.csv and
summary.json compared numerically), and that a second invocation submits nothing. Three figures, not `all`: every
stage from the data to a figure runs on the cluster, with a third of the jobs (`all` runs locally in
test_pipeline). Skips (with the reason) only where a cluster cannot exist: not root, or no apt to install SLURM.
"""

from __future__ import annotations

import csv
import json
import re
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
from conftest import REPO, snakemake_command, write_config

sys.path.insert(0, str(Path(__file__).parent / "cluster"))
import slurm_cluster  # noqa: E402

PROFILES = ["default", "slurm"]

# The targets on the cluster: their jobs cover every stage (data, sharded features, training of a single-lr and an
# lr-sweep experiment, landscapes, figures).
SLURM_FIGURES = ["fig4_convergence_accuracy", "fig11_lr_sweep_grads", "fig5_landscape_contour"]
# Wall-clock limit of one snakemake-on-SLURM invocation: a lost job hangs the plugin forever, fail instead.
SLURM_RUN_TIMEOUT_S = 420
SUBMITTED = re.compile(r"Job (\d+) has been submitted with SLURM jobid (\d+) \(log: (\S+)\)\.")
# Timing fields legitimately differ between two runs; everything else must match.
TIMING_COLUMNS = {"epoch_time_s"}
TIMING_KEYS = {"wall_time_s", "versions"}


@pytest.fixture(scope="session")
def slurm(tmp_path_factory):
    """A running single-node SLURM cluster for the session; its daemons are stopped (by PID) afterwards."""
    try:
        cluster = slurm_cluster.up(tmp_path_factory.mktemp("slurm"))
    except slurm_cluster.ClusterUnavailable as exc:
        pytest.skip(f"no SLURM test cluster here: {exc}")
    yield cluster
    slurm_cluster.down(cluster)


def slurm_snakemake(cluster, workdir: Path, logdir: Path, *targets: str) -> subprocess.CompletedProcess:
    """snakemake --profile profiles/slurm in ``workdir`` (whose config.yaml is the tiny config), with test-only
    overrides (fast polling, tiny resources, no GPU).

    Why a work directory with its own config.yaml rather than `--configfile X --replace-workflow-config`:
    snakemake 9.27 does not pass --replace-workflow-config on to the jobs it submits, so inside a SLURM job the
    study's config.yaml would be merged under the tiny config (jobs then see other experiments and params).
    """
    cmd = snakemake_command(
        workdir,
        "--profile",
        str(REPO / "profiles" / "slurm"),
        "--workflow-profile",
        str(REPO / "profiles" / "default"),
        # no slurmdbd on the test cluster: sacct cannot answer, squeue can (MinJobAge=300 >= 3 x 2 s)
        "--slurm-status-command",
        "squeue",
        "--slurm-init-seconds-before-status-checks",
        "2",
        "--slurm-keep-successful-logs",
        "--slurm-logdir",
        str(logdir),
        # the test node has no GPU and 2 real cores: replaces the profile's set-resources/set-threads
        "--set-resources",
        "extract_features:gpu=0",
        "extract_features:mem_mb=2000",
        "--set-threads",
        "extract_features=2",
        "landscape=2",
        "--latency-wait",
        "5",
        "--retries",
        "0",
        "--jobs",
        "8",
        *targets,
    )
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=SLURM_RUN_TIMEOUT_S, env=cluster.env)
    except subprocess.TimeoutExpired as exc:
        out = (exc.stdout or b"")[-3000:] if isinstance(exc.stdout, bytes) else (exc.stdout or "")[-3000:]
        err = (exc.stderr or b"")[-3000:] if isinstance(exc.stderr, bytes) else (exc.stderr or "")[-3000:]
        subprocess.run(["scancel", "--partition", cluster.partition], env=cluster.env, capture_output=True)
        pytest.fail(f"snakemake on SLURM hung for {SLURM_RUN_TIMEOUT_S} s:\n{out}\n{err}")


def squeue_all(cluster) -> dict[str, str]:
    """SLURM job id -> comment (the plugin writes `rule_<name>[_wildcards_...]`) of every job the cluster knows."""
    out = subprocess.run(
        ["squeue", "-t", "all", "-h", "-o", "%i|%k|%T"],
        env=cluster.env,
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    ).stdout
    return {jid: comment for jid, comment, _ in (line.split("|") for line in out.splitlines() if line)}


def tree(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()}


def compare_h5(a: Path, b: Path) -> None:
    with h5py.File(a, "r") as fa, h5py.File(b, "r") as fb:
        names_a, names_b = [], []
        fa.visit(names_a.append)
        fb.visit(names_b.append)
        assert sorted(names_a) == sorted(names_b), f"{a.name}: different HDF5 layout"
        for name in names_a:
            if isinstance(fa[name], h5py.Dataset):
                x, y = fa[name][()], fb[name][()]
                assert x.dtype == y.dtype and x.shape == y.shape, f"{a}:{name}"
                if np.issubdtype(x.dtype, np.number):
                    np.testing.assert_allclose(x, y, rtol=1e-4, atol=1e-6, err_msg=f"{a}:{name}")
                else:
                    assert np.array_equal(x, y), f"{a}:{name}"


def compare_csv(a: Path, b: Path) -> None:
    ra, rb = list(csv.DictReader(a.open())), list(csv.DictReader(b.open()))
    assert len(ra) == len(rb) and ra and ra[0].keys() == rb[0].keys(), a
    for row_a, row_b in zip(ra, rb):
        for key in row_a.keys() - TIMING_COLUMNS:
            np.testing.assert_allclose(float(row_a[key]), float(row_b[key]), rtol=1e-4, atol=1e-6, err_msg=f"{a}:{key}")


def compare_json(x, y, where: str) -> None:
    if isinstance(x, dict):
        assert x.keys() == y.keys(), where
        for key in x.keys() - TIMING_KEYS:
            compare_json(x[key], y[key], f"{where}.{key}")
    elif isinstance(x, list):
        assert len(x) == len(y), where
        for i, (u, v) in enumerate(zip(x, y)):
            compare_json(u, v, f"{where}[{i}]")
    elif isinstance(x, float) or isinstance(y, float):
        assert x is not None and y is not None, where
        np.testing.assert_allclose(x, y, rtol=1e-4, atol=1e-6, err_msg=where)
    else:
        assert x == y, where


@pytest.mark.parametrize("name", PROFILES)
def test_profile_entries_are_commented(name):
    """Every top-level setting of a profile is explained by a comment right above it (or its block)."""
    lines = (REPO / "profiles" / name / "config.yaml").read_text().splitlines()
    keys = [i for i, line in enumerate(lines) if re.match(r"^[a-z][a-z0-9-]*:", line)]
    assert keys
    # `cores` in the workflow profile would cap SLURM jobs' threads at the login node's core count
    assert not any(lines[i].startswith("cores:") for i in keys)
    for i in keys:
        assert lines[i - 1].startswith("#"), f"profiles/{name}: {lines[i]!r} has no comment above it"


def test_slurm_profile_maps_rule_resources(tiny_config, tmp_path):
    """The slurm profile (+ the workflow profile on top) parses and gives each rule the intended resources."""
    write_config(tiny_config, tmp_path / "config.yaml")
    cmd = snakemake_command(
        tmp_path,
        "--profile",
        str(REPO / "profiles" / "slurm"),
        "-n",
        "all",
        # a dry run caps threads at --cores (default 1); a real SLURM run has no cap (profiles/default must
        # not set `cores`, or it caps them at the login node's core count)
        "--cores",
        "64",
    )
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    log = proc.stdout + proc.stderr
    resources = {}
    for rule, res in re.findall(r"^(?:local)?rule (\w+):.*?^\s+resources: (.*?)$", log, re.M | re.S):
        resources[rule] = dict(kv.split("=", 1) for kv in res.split(", "))
    ext = resources["extract_features"]
    assert (ext["cpus_per_task"], ext["mem_mb"], ext["runtime"], ext["gpu"]) == ("8", "6000", "120", "1")
    assert "threads: 8" in log.split("rule extract_features:")[1].split("\n\n")[0]
    train, land = resources["train_convergence"], resources["landscape"]
    assert (train["cpus_per_task"], train["mem_mb"]) == ("1", "1650") and "gpu" not in train  # the rule's: 1 seed
    assert (land["cpus_per_task"], land["mem_mb"]) == ("2", "1500") and "gpu" not in land
    assert resources["prepare_data"]["cpus_per_task"] == "1"


@pytest.mark.cluster
@pytest.mark.slow
def test_tiny_pipeline_on_slurm_matches_local_run(slurm, tiny_workflow, tmp_path):
    _, cfg, local_results = tiny_workflow
    # sharded extraction on the cluster: 2 extract_features jobs and a merge, equal to the unsharded local run
    cfg = dict(cfg, results_dir=str(tmp_path / "results"), features={"shards": 2})
    write_config(cfg, tmp_path / "config.yaml")  # the Snakefile's `configfile: "config.yaml"`, in the workdir
    logdir = tmp_path / "slurm_logs"
    known_before = squeue_all(slurm)

    targets = [str(Path(cfg["results_dir"]) / "figures" / f"{name}.png") for name in SLURM_FIGURES]
    proc = slurm_snakemake(slurm, tmp_path, logdir, *targets)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-6000:]
    # what docs/cluster.md says the plugin prints without an account (and that it then submits without one)
    cluster_doc = (REPO / "docs" / "cluster.md").read_text().replace("\n", " ")
    for message in (
        "No SLURM account given, trying to guess.",
        "Unable to guess SLURM account. Trying to proceed without.",
    ):
        assert message in log and f"`{message}`" in cluster_doc, message

    # every job of the DAG was submitted with sbatch ...
    submitted = {int(job): (jid, Path(path)) for job, jid, path in SUBMITTED.findall(log)}
    total = int(re.search(r"^total\s+(\d+)", log, re.M).group(1))
    assert len(submitted) == total >= 10, log[-4000:]
    # ... is known to the cluster as a job of one of our rules, finished, with its own SLURM log
    jobs = squeue_all(slurm)
    rules_run = set()
    for jid, path in submitted.values():
        assert jid in jobs and jid not in known_before, jid
        assert jobs[jid].startswith("rule_"), jobs[jid]
        rules_run.add(jobs[jid].removeprefix("rule_").split("_wildcards_")[0])
        assert path.is_file() and str(path).startswith(str(logdir)), path
    expected = {
        "prepare_data",
        "extract_features",
        "merge_features",
        "train_convergence",
        "train_lr_sweep",
        "landscape",
        "figure_fig4_convergence_accuracy",
    }
    assert expected <= rules_run
    assert sum(jobs[jid].startswith("rule_extract_features_") for jid, _ in submitted.values()) == 2
    out = subprocess.run(
        ["squeue", "-t", "all", "-h", "-o", "%i %T"], env=slurm.env, capture_output=True, text=True, timeout=30
    ).stdout
    states = dict(line.split() for line in out.splitlines())
    assert all(states[jid] == "COMPLETED" for jid, _ in submitted.values()), states
    # the allocation follows the rule's threads (cpus_per_task: threads in the profile)
    out = subprocess.run(
        ["squeue", "-t", "all", "-h", "-o", "%i %C"], env=slurm.env, capture_output=True, text=True, timeout=30
    ).stdout
    cpus = dict(line.split() for line in out.splitlines())
    expected_cpus = {"extract_features": "2", "landscape": "2"}  # every other rule 1
    for jid, _ in submitted.values():
        rule = jobs[jid].removeprefix("rule_").split("_wildcards_")[0]
        assert cpus[jid] == expected_cpus.get(rule, "1"), (rule, cpus[jid])

    # the outputs equal the local run's (which ran `all`: every file of the cluster's run is among its files)
    remote_results = Path(cfg["results_dir"])
    compared = {p for p in tree(remote_results) if not p.startswith(("logs/", "benchmarks/"))}
    assert compared <= tree(local_results), compared - tree(local_results)
    assert {f"figures/{name}.png" for name in SLURM_FIGURES} <= compared
    n_h5 = 0
    for rel in sorted(compared):
        a, b = local_results / rel, remote_results / rel
        if rel.endswith(".h5"):
            compare_h5(a, b)
            n_h5 += 1
        elif rel.endswith("metrics.csv"):
            compare_csv(a, b)
        elif rel.endswith("summary.json"):
            compare_json(json.loads(a.read_text()), json.loads(b.read_text()), rel)
    assert n_h5 >= 5  # data, features, grads per run, landscapes

    # a second invocation finds everything up to date and submits nothing
    again = slurm_snakemake(slurm, tmp_path, logdir, *targets)
    log2 = again.stdout + again.stderr
    assert again.returncode == 0, log2[-4000:]
    assert not SUBMITTED.search(log2) and "Nothing to be done" in log2, log2[-4000:]
    assert squeue_all(slurm).keys() == jobs.keys()
