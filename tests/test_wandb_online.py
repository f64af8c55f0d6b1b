"""W&B through the CLI: `online` with a key but an unreachable server (a closed local port) costs the workflow ONE
attempt, not one per training job or run; `wandb sync` of the offline runs (the README's command) as a dry run."""

from __future__ import annotations

import copy
import glob
import os
import shlex
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO, write_config

from normscape.pipeline.config import enumerate_runs, validate_config
from normscape.training.wandb_reader import find_run_files
from normscape.training.wandb_tracking import UNREACHABLE_MARKER, WandbTracker


@pytest.fixture
def closed_port():
    """A local TCP port that is bound but never listens: connections are refused at once, nothing else gets it."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    yield sock.getsockname()[1]
    sock.close()


def snakemake(args, cwd, env, configfile):
    cmd = [sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "Snakefile"), "--directory", str(cwd)]
    cmd += [*args, "--configfile", str(configfile), "--replace-workflow-config"]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)


def test_the_marker_sends_later_trackers_offline_at_once(tmp_path, monkeypatch):
    """The bookkeeping alone (the CLI test below shows it with real W&B): one online attempt, then offline."""
    attempts = []
    monkeypatch.setattr(WandbTracker, "_init", lambda self, d, name, group, config, mode: attempts.append(mode))
    monkeypatch.setenv("WANDB_API_KEY", "0" * 40)
    monkeypatch.setenv("WANDB_BASE_URL", "http://127.0.0.1:9")
    settings = {"mode": "online", "project": "p", "entity": None, "log_checkpoints": False, "timeout_s": 1}
    for name in ("a", "b", "c"):
        WandbTracker(settings, tmp_path, name, "g", {})
    assert attempts == ["online", "offline", "offline", "offline"]
    monkeypatch.setenv("WANDB_BASE_URL", "http://127.0.0.1:10")  # another server: tried again
    WandbTracker(settings, tmp_path, "d", "g", {})
    assert attempts[-2:] == ["online", "offline"]


@pytest.mark.slow
def test_unreachable_server_costs_one_attempt_per_workflow(tiny_config, tmp_path, closed_port):
    cfg = tiny_config
    cfg["tracking"] = {"wandb": {"mode": "online", "timeout_s": 5, "log_checkpoints": False, "watch_log_freq": 0}}
    configfile = write_config(cfg, tmp_path / "config.yaml")
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_")}
    env.update(
        WANDB_API_KEY="0123456789abcdef0123456789abcdef01234567",
        WANDB_BASE_URL=f"http://127.0.0.1:{closed_port}",
        HOME=str(tmp_path),  # no ~/.netrc, no user W&B settings
        OMP_NUM_THREADS="1",
    )
    results = Path(cfg["results_dir"])
    proc = snakemake(["--cores", "2", "--until", "train_convergence", "train_lr_sweep"], tmp_path, env, configfile)
    assert proc.returncode == 0, proc.stderr[-4000:]
    n_runs = len(enumerate_runs(validate_config(copy.deepcopy(cfg)), ["convergence", "lr_sweep"]))
    logs = sorted((results / "logs" / "train").rglob("*.log"))
    assert 2 < len(logs) < n_runs  # several jobs; the lr sweep's runs train in one
    texts = "\n---\n".join(p.read_text() for p in logs)
    # one run of one job waited for the server; every other run, in its job or a later one, logged offline at once
    assert texts.count("W&B init failed") == 1, texts
    assert texts.count("falling back to offline") == 1, texts
    assert texts.count("an earlier job could not start a run on") == n_runs - 1, texts
    assert (results / "wandb" / UNREACHABLE_MARKER).exists()
    # every run still logged (offline) and finished its local outputs
    assert len(find_run_files(results / "wandb")) == n_runs
    assert len(list((results / "runs").rglob("summary.json"))) == n_runs

    # The README's upload command, as a dry run against the same local address (nothing is sent anywhere).
    readme = (REPO / "README.md").read_text()
    sync = next(line for line in readme.splitlines() if "wandb sync results/" in line)
    command = sync.split("`wandb sync", 1)[1].split("`", 1)[0]
    args = shlex.split(command.replace("results/", f"{results}/", 1))
    paths = [p for a in args for p in sorted(glob.glob(a))] if args else []
    assert len(paths) == n_runs, (command, paths)
    wandb_cli = [sys.executable, "-c", "import sys; from wandb.cli.cli import cli; sys.exit(cli())"]
    dry = subprocess.run(
        [*wandb_cli, "sync", "--dry-run", *paths], env=env, capture_output=True, text=True, timeout=120
    )
    assert dry.returncode == 0, dry.stdout + dry.stderr
    for path in paths:
        assert Path(path).name in dry.stdout + dry.stderr
