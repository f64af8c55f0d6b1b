# Training stage: one job per (experiment, head, swept value) from the cached features, training all of that
# condition's seeds together as one batched model (normscape/train.py); its outputs are every seed's files.
# Each job's params hold only its own slice of the config, so editing one experiment reruns only its jobs.
# Outputs cannot be functions of wildcards, so the seeds are expanded per experiment: one rule per experiment,
# `train_<experiment>`.

TRAIN_FILES = {
    "summary": "summary.json",
    "metrics": "metrics.csv",
    "grads": "grads.h5",
    "model_final": "model_final.pt",
    "model_best": "model_best.pt",
    # every run declares them (stable outputs); runs outside diagnostics.smoothness.experiments: zero records
    "smoothness_h5": "smoothness.h5",
    "smoothness_json": "smoothness.json",
}
# what a landscape reads: only the experiments in landscape.experiments keep them (the trajectory is ~21 MB a run)
LANDSCAPE_INPUT_FILES = {"model_init": "model_init.pt", "trajectory": "trajectory.pt"}


def seed_files(experiment, filename):
    """``filename`` of every seed of one (experiment, {head}, {variant}) condition."""
    condition_dir = paths.run_dir(RESULTS, paths.RUN_LAYOUT.replace("{experiment}", experiment))
    return expand(f"{condition_dir}/{filename}", seed=experiment_seeds(experiment), allow_missing=True)


def experiment_seeds(experiment):
    return sorted({run.seed for run in experiment_runs(config, experiment)})


def condition_runs(experiment, wildcards):
    """The identities of the runs one job trains (its seeds, in order)."""
    return [run_identity(experiment, wildcards.head, wildcards.variant, seed) for seed in experiment_seeds(experiment)]


def condition_training(experiment, wildcards):
    first = experiment_seeds(experiment)[0]
    return canonical(find_run(config, experiment, wildcards.head, wildcards.variant, first).training)


# No `benchmark:` on the rules with many jobs (train, landscape, sharpness, curvature): Snakemake samples a
# benchmarked job's memory every 0.5 s for its first 15 s by reading /proc/<pid>/smaps, ~14 ms of kernel time per
# sample with torch loaded. Every job's log ends with its exact usage instead (normscape.runtime.job_usage;
# python -m normscape.jobstats results/logs sums it per stage); the long extraction jobs keep their benchmark TSV.
for EXPERIMENT in config["experiments"]:
    LANDSCAPE_READS = EXPERIMENT in config["landscape"]["experiments"]
    FILES = {**TRAIN_FILES, **(LANDSCAPE_INPUT_FILES if LANDSCAPE_READS else {})}
    SEEDS = experiment_seeds(EXPERIMENT)

    rule:
        name:
            f"train_{EXPERIMENT}"
        input:
            features=FEATURES,
        output:
            **{key: seed_files(EXPERIMENT, filename) for key, filename in FILES.items()},
        log:
            f"{RESULTS}/logs/train/{EXPERIMENT}/{{head}}/{{variant}}.log",
        # the runs a landscape reads train first, so their landscapes run beside the remaining trainings
        priority: LANDSCAPE_PRIORITY if LANDSCAPE_READS else 0
        conda:
            ENV
        threads: 1
        resources:
            mem_mb=1500 + 150 * len(SEEDS),
            runtime=10 + 10 * len(SEEDS),
        params:
            runs=lambda wc, experiment=EXPERIMENT: condition_runs(experiment, wc),
            training=lambda wc, experiment=EXPERIMENT: condition_training(experiment, wc),
            head=canonical(config["head"]),
            # the code the head is built from (its norm's builder and classes, the head module): an edited norm
            # retrains its runs
            model_code=lambda wc: code_digest(wc.head),
            grad_hist=canonical(config["grad_hist"]),
            # what the feature cache must have been built for (checked before training: never other features)
            features_request=canonical({"backbone": config["backbone"], "data": config["data"]}),
            wandb=canonical(config["tracking"]["wandb"]),
            wandb_dir=f"{RESULTS}/wandb",
            # the probe's slice only for the experiments it probes (None otherwise): editing it reruns only those
            smoothness=smoothness_settings(EXPERIMENT),
        script:
            "../scripts/train.py"


STAGE_TARGETS["train"] = [f"{run_dir(run)}/summary.json" for run in enumerate_runs(config)]
