# Shared helpers: config validation, the run matrix, output paths and input functions.
# Every stage file registers its final outputs in STAGE_TARGETS; `rule all` asks for all of them.
import os
import sys
from pathlib import Path

SRC_DIR = Path(workflow.basedir) / "src"
# Scripts import the `normscape` package from src/ even when it is not pip-installed (conda envs, clusters).
sys.path.insert(0, str(SRC_DIR))
os.environ.update(PYTHONPATH=os.pathsep.join(p for p in (str(SRC_DIR), os.environ.get("PYTHONPATH")) if p))

from normscape.config import enumerate_runs, experiment_runs, find_run, validate_config  # noqa: E402
from normscape.errors import ConfigError  # noqa: E402

try:
    validate_config(config, Path(workflow.basedir) / "workflow" / "schemas" / "config.schema.yaml")
except ConfigError as exc:
    sys.exit(f"normscape: {exc}")

RESULTS = config["results_dir"]
ENV = "../../envs/normscape.yaml"

# Final outputs of each stage, filled in by the stage's .smk file.
STAGE_TARGETS = {}


def all_targets():
    return [path for stage in STAGE_TARGETS.values() for path in stage]


def run_dir(run):
    """Directory of one training run (a normscape.config.RunSpec)."""
    return f"{RESULTS}/runs/{run.run_id}"


wildcard_constraints:
    experiment="[A-Za-z][A-Za-z0-9_]*",
    head="[a-z_]+",
    variant="[A-Za-z0-9_.+-]+",
    seed=r"\d+",
