"""Shared fixtures: tiny synthetic data so no test needs the network or ../shared."""

from __future__ import annotations

import copy
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

REPO = Path(__file__).resolve().parents[1]
SCHEMA = REPO / "workflow" / "schemas" / "config.schema.yaml"
TINY_CONFIG = REPO / "tests" / "config" / "tiny.yaml"

# Tests never talk to W&B servers and never touch the user's W&B settings.
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")


@pytest.fixture(scope="session")
def synthetic_archive(tmp_path_factory) -> Path:
    """A CIFAR-10-layout archive: 5 x 40 training images, 100 test images."""
    from normscape.data.synthetic import make_cifar_archive

    return make_cifar_archive(tmp_path_factory.mktemp("archive") / "cifar-10-python.tar.gz")


@pytest.fixture(scope="session")
def features_file(tmp_path_factory) -> Path:
    """A feature cache (2000/500/500 x 1280, 10 separable classes) in the features.store format."""
    from normscape.data.synthetic import make_features_file

    return make_features_file(tmp_path_factory.mktemp("features") / "features.h5")


@pytest.fixture(scope="session")
def tiny_workflow(tmp_path_factory, synthetic_archive):
    """The tiny config's whole workflow (`all`) run once per session: (config path, config dict, results dir)."""
    root = tmp_path_factory.mktemp("tiny")
    cfg = yaml.safe_load(TINY_CONFIG.read_text())
    cfg["data"]["archive"] = str(synthetic_archive)
    cfg["results_dir"] = str(root / "results")
    cfg["downloads_dir"] = str(root / "resources")
    path = write_config(cfg, root / "config.yaml")
    run_snakemake(["all", "--cores", "2"], configfile=path)
    return path, cfg, root / "results"


@pytest.fixture
def tiny_config(tmp_path, synthetic_archive) -> dict:
    """The tiny pipeline config (tests/config/tiny.yaml) pointing at the synthetic archive and tmp results."""
    cfg = yaml.safe_load(TINY_CONFIG.read_text())
    cfg = copy.deepcopy(cfg)
    cfg["data"]["archive"] = str(synthetic_archive)
    cfg["results_dir"] = str(tmp_path / "results")
    cfg["downloads_dir"] = str(tmp_path / "resources")
    return cfg


def write_config(cfg: dict, path: Path) -> Path:
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def snakemake_command(directory: Path, *args: str) -> list[str]:
    """The Snakemake CLI of this environment on the repository's Snakefile, working in ``directory``."""
    return [
        sys.executable,
        "-m",
        "snakemake",
        "--snakefile",
        str(REPO / "Snakefile"),
        "--directory",
        str(directory),
        *args,
    ]


def run_snakemake(
    args: list[str], cwd: Path = REPO, check: bool = True, timeout: float = 900, configfile: Path | None = None
) -> subprocess.CompletedProcess:
    """Run the real Snakemake CLI of this environment on the repository's Snakefile.

    With ``configfile`` the test config *replaces* config.yaml (``--replace-workflow-config``) instead of being
    merged into it, so the tiny config's experiments are the only ones.
    """
    cmd = snakemake_command(cwd, *args)
    if configfile is not None:
        cmd += ["--configfile", str(configfile), "--replace-workflow-config"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(
            f"snakemake {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
        )
    return proc


def trained_head(
    norm: str,
    in_features: int,
    hidden: int,
    classes: int,
    samples: int,
    batch: int,
    steps: int,
    seed: int = 0,
    dtype: torch.dtype = torch.float64,
):
    """A small head of ``norm`` trained ``steps`` Adam steps on rectified Gaussian data (so its Hessian is not
    the init's), in eval mode, with that data: (model, x, y). The tests of curvature measures share it."""
    from normscape.models.heads import build_head

    torch.manual_seed(seed)
    model = build_head(norm, in_features=in_features, hidden=hidden, num_classes=classes).to(dtype)
    x, y = torch.randn(samples, in_features, dtype=dtype).relu(), torch.randint(0, classes, (samples,))
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    model.train()
    for i in range(steps):
        rows = slice((i % (samples // batch)) * batch, (i % (samples // batch) + 1) * batch)
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(x[rows]), y[rows]).backward()
        opt.step()
    return model.eval(), x, y


def dense_hessian(loss) -> torch.Tensor:
    """The explicit Hessian of a normscape.curvature.head_loss.HeadLoss at its parameters (the reference of every
    test)."""
    return torch.autograd.functional.hessian(loss.loss, loss.theta.clone())


def config_run_ids(cfg: dict) -> list[str]:
    """Every run of a config (its experiments x norms x swept values x seeds), as sorted run ids."""
    import copy

    from normscape.pipeline.config import enumerate_runs, validate_config

    return sorted(run.run_id for run in enumerate_runs(validate_config(copy.deepcopy(cfg))))


def config_conditions(cfg: dict) -> int:
    """The (experiment, norm, swept value) conditions of a config: one summary-table row each."""
    return len({run_id.rsplit("/", 1)[0] for run_id in config_run_ids(cfg)})


def small_data(seed: int = 0, n: int = 160, dim: int = 24) -> dict:
    """Train/val/test splits of rectified Gaussian clusters, one per class of 10: the probes' trainings share it."""
    g = torch.Generator().manual_seed(seed)
    centers = torch.randn(10, dim, generator=g)
    split = {}
    for name, size in (("train", n), ("val", 40), ("test", 40)):
        y = torch.randint(0, 10, (size,), generator=g)
        split[name] = ((centers[y] + torch.randn(size, dim, generator=g)).relu(), y)
    return split


def train_with_and_without_probe(data: dict, probe, **kw) -> None:
    """One run trained plainly and with ``probe``: asserts the probe changed nothing (metrics bitwise, parameters,
    running statistics)."""
    from normscape.training.trainer import Trainer

    plain = Trainer(data, **kw)
    plain.fit()
    probed = Trainer(data, probe=probe, **kw)
    probed.fit()
    assert [{k: v for k, v in m.items() if k != "epoch_time_s"} for m in plain.runs[0].metrics] == [
        {k: v for k, v in m.items() if k != "epoch_time_s"} for m in probed.runs[0].metrics
    ]
    assert torch.equal(plain.flat_param, probed.flat_param)
    for (k, a), b in zip(plain.stack.state_of(0).items(), probed.stack.state_of(0).values()):
        assert torch.equal(a, b), k  # running statistics included
