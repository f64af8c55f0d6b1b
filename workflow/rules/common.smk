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


def canonical(obj):
    """A config slice with keys sorted recursively: Snakemake compares params by their text, so the key order
    (which depends on how the config was merged) must not make an unchanged slice look changed."""
    if isinstance(obj, dict):
        return {key: canonical(obj[key]) for key in sorted(obj)}
    if isinstance(obj, list):
        return [canonical(value) for value in obj]
    return obj


def all_targets():
    return [path for stage in STAGE_TARGETS.values() for path in stage]


def run_dir(run):
    """Directory of one training run (a normscape.config.RunSpec)."""
    return f"{RESULTS}/runs/{run.run_id}"


def run_identity(wildcards):
    """The identity of the run a job's wildcards name (fails clearly if the config does not define it)."""
    run = find_run(config, wildcards.experiment, wildcards.head, wildcards.variant, wildcards.seed)
    return {"experiment": run.experiment, "head": run.head, "seed": run.seed, "variant": run.variant}


# ---- data and features stages
def cifar_archive():
    """The local archive when data.archive is set (checked to exist at parse time), else the download."""
    local = config["data"]["archive"]
    if local:
        if not Path(local).is_file():
            sys.exit(
                f"normscape: data.archive = {local!r} does not exist. Fix the path, or set data.archive to "
                "null to download the official archive."
            )
        return local
    return f"{RESULTS}/data/cifar-10-python.tar.gz"


def backbone_weights_file():
    """The weights file extraction needs: downloaded torchvision weights, a local file, or none (random)."""
    weights = config["backbone"]["weights"]
    if weights == "random":
        return []
    if weights == "IMAGENET1K_V1":
        return rules.download_weights.output[0]
    if not Path(weights).is_file():
        sys.exit(
            f"normscape: backbone.weights = {weights!r} is neither 'IMAGENET1K_V1', 'random' nor an existing "
            "file. Fix the path to a torchvision mobilenet_v2 state_dict."
        )
    return weights


wildcard_constraints:
    experiment="[A-Za-z][A-Za-z0-9_]*",
    head="[a-z_]+",
    variant="[A-Za-z0-9_.+-]+",
    seed=r"\d+",
