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
from normscape.runtime import JOB_ENV  # noqa: E402

# Every job inherits these (OpenMP settings must be in place before a job imports torch); a value already set wins.
os.environ.update({key: os.environ.get(key, value) for key, value in JOB_ENV.items()})

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


def landscape_dir(run):
    """Directory of one run's landscape and sharpness outputs."""
    return f"{RESULTS}/landscapes/{run.run_id}"


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


# ---- figures: which run files each figure reads (experiment, file, heads or None for all of them)
FIGURE_SPECS = {
    "fig4_convergence_accuracy": {"metrics": [("convergence", "metrics.csv", None)], "category": "experiments"},
    "fig5_landscape_surface": {"landscapes": [("convergence", "landscape.h5", None)], "category": "landscapes"},
    "fig5_landscape_contour": {"landscapes": [("convergence", "landscape.h5", None)], "category": "landscapes"},
    "fig5_trajectory_pca": {"landscapes": [("convergence", "landscape.h5", None)], "category": "landscapes"},
    "fig_landscape_1d": {"landscapes": [("convergence", "landscape.h5", None)], "category": "landscapes"},
    "fig6_grad_hist_fc2": {"grads": [("convergence", "grads.h5", None)], "category": "gradients"},
    "fig7_layernorm_clipping_val_loss": {
        "metrics": [("convergence", "metrics.csv", ["layer"]), ("clipping", "metrics.csv", ["layer"])],
        "category": "experiments",
    },
    "fig8_layernorm_clipping_grads": {
        "grads": [("convergence", "grads.h5", ["layer"]), ("clipping", "grads.h5", ["layer"])],
        "category": "gradients",
    },
    "fig9_clipping_val_loss": {
        "metrics": [
            ("convergence", "metrics.csv", ["batch", "frn", "none"]),
            ("clipping", "metrics.csv", ["batch", "frn", "none"]),
        ],
        "category": "experiments",
    },
    "fig10_high_lr": {"metrics": [("high_lr", "metrics.csv", None)], "category": "experiments"},
    "fig11_lr_sweep_grads": {"grads": [("lr_sweep", "grads.h5", None)], "category": "appendix"},
    "figA_batch_size": {"summaries": [("batch_size", "summary.json", None)], "category": "appendix"},
}
FIGURE_INPUT_KINDS = ("metrics", "grads", "landscapes", "summaries")


def run_files(experiment, filename, heads=None):
    """The files ``filename`` of every run of ``experiment`` (optionally only some heads)."""
    runs = [r for r in experiment_runs(config, experiment) if heads is None or r.head in heads]
    if filename in ("landscape.h5", "sharpness.json"):
        return [f"{landscape_dir(r)}/{filename}" for r in runs]
    return [f"{run_dir(r)}/{filename}" for r in runs]


def figure_inputs(name):
    """Named input lists of a figure, or None when the config lacks an experiment (or a head) it needs."""
    spec = FIGURE_SPECS[name]
    inputs = {}
    for kind in FIGURE_INPUT_KINDS:
        for experiment, filename, heads in spec.get(kind, []):
            if experiment not in config["experiments"]:
                return None
            if filename == "landscape.h5" and experiment not in config["landscape"]["experiments"]:
                return None
            files = run_files(experiment, filename, heads)
            if not files:
                return None
            inputs.setdefault(kind, []).extend(files)
    return inputs


wildcard_constraints:
    experiment="[A-Za-z][A-Za-z0-9_]*",
    head="[a-z_]+",
    variant="[A-Za-z0-9_.+-]+",
    seed=r"\d+",
