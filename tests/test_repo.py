"""Repository-level contracts: the README quick start, CI entry point, lint, and the default config."""

from __future__ import annotations

import re
import subprocess

import yaml
from conftest import REPO, SCHEMA

from normscape.pipeline.config import enumerate_runs, validate_config


def quick_start_lines() -> list[str]:
    text = (REPO / "README.md").read_text()
    block = text.split("## Quick start", 1)[1].split("```bash", 1)[1].split("```", 1)[0]
    return [line for line in block.strip().splitlines() if line.strip()]


def test_quick_start_has_exactly_two_command_lines():
    lines = quick_start_lines()
    assert len(lines) == 2, lines
    assert "snakemake --cores all all" in lines[0] and lines[0].endswith("# run the study")
    assert "pytest" in lines[1] and lines[1].endswith("# run the tests")


def test_ci_runs_the_readme_test_command():
    script = (REPO / ".ci" / "run").read_text()
    # .ci/run extracts the tagged README line; check the extraction picks the pytest line.
    extracted = subprocess.run(
        [
            "bash",
            "-c",
            "grep -E '^[^#].*# run the tests$' README.md | head -n 1 | sed 's/[[:space:]]*# run the tests$//'",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert extracted == re.sub(r"\s*# run the tests$", "", quick_start_lines()[1])
    assert "exit 5" in script or "-eq 5" in script  # pytest's "no tests collected" must fail CI


def test_default_config_is_valid_and_defines_the_study():
    cfg = validate_config(yaml.safe_load((REPO / "config.yaml").read_text()), SCHEMA)
    assert {"convergence", "clipping", "high_lr", "lr_sweep", "batch_size"} <= set(cfg["experiments"])
    for name in ("convergence", "clipping", "high_lr"):
        assert set(cfg["experiments"][name]["heads"]) >= {"none", "batch", "layer", "frn"}
    assert cfg["experiments"]["clipping"]["clip_grad_norm"] == 1.0
    assert cfg["experiments"]["high_lr"]["lr"] == 1e-2
    runs = enumerate_runs(cfg)
    assert len({r.run_id for r in runs}) == len(runs)  # run directories never collide


def test_snakemake_lint_is_clean():
    from conftest import run_snakemake

    proc = run_snakemake(["--lint"], check=False)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0 and "Congratulations" in out, out[-3000:]
