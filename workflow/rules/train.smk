# Training stage: one job per (experiment, head, swept value) from the cached features, training all of that
# condition's seeds together as one batched model (normscape/training/trainer.py); its outputs are every seed's files. The
# values of an lr sweep train together too (one job per (experiment, head), each run at its own lr): they share
# the batch shape and step count, which a batch-size or epochs sweep does not.
# Each job's params hold only its own slice of the config, so editing one experiment reruns only its jobs.
# Outputs cannot be functions of wildcards, so the seeds are expanded per experiment: one rule per experiment,
# `train_<experiment>`.

TRAIN_FILES = {
    "summary": "summary.json",
    "metrics": "metrics.csv",
    "grads": "grads.h5",
    "model_final": "model_final.pt",
    "model_best": "model_best.pt",
    # every run declares its probes' files (stable outputs); runs outside a probe's experiments: zero records
    **{f"{m.name}_{Path(f).suffix[1:]}": f for m in training_probes() for f in m.files},
}
# what a landscape reads: only the experiments in landscape.experiments keep them (the trajectory is ~21 MB a run)
LANDSCAPE_INPUT_FILES = {"model_init": "model_init.pt", "trajectory": "trajectory.pt"}


def sweeps_lr(experiment):
    """Whether ``experiment`` sweeps the learning rate: then one job trains all its values."""
    return "lr" in (config["experiments"][experiment].get("sweep") or {})


def job_variants(experiment, wildcards=None):
    """The swept values one job of ``experiment`` trains: all of an lr sweep's, else the job's {variant}."""
    if sweeps_lr(experiment):
        return list(dict.fromkeys(run.variant for run in experiment_runs(config, experiment)))
    return [wildcards.variant] if wildcards is not None else ["{variant}"]


def job_files(experiment, filename):
    """``filename`` of every run one job of ``experiment`` trains (the seeds of each of its swept values)."""
    condition_dir = paths.run_dir(RESULTS, paths.RUN_LAYOUT.replace("{experiment}", experiment))
    return [
        path.replace("{variant}", variant)
        for variant in job_variants(experiment)
        for path in expand(f"{condition_dir}/{filename}", seed=experiment_seeds(experiment), allow_missing=True)
    ]


def experiment_seeds(experiment):
    return sorted({run.seed for run in experiment_runs(config, experiment)})


def job_runs(experiment, wildcards):
    """The runs one job trains, in the order of its outputs (swept value, then seed)."""
    return [
        find_run(config, experiment, wildcards.head, variant, seed)
        for variant in job_variants(experiment, wildcards)
        for seed in experiment_seeds(experiment)
    ]


def job_identities(experiment, wildcards):
    return [run_identity(experiment, r.head, r.variant, r.seed) for r in job_runs(experiment, wildcards)]


def job_trainings(experiment, wildcards):
    """Each run's training slice (the runs of an lr sweep differ in their lr)."""
    return [canonical(run.training) for run in job_runs(experiment, wildcards)]


# No `benchmark:` on the rules with many jobs (train, landscape, sharpness, curvature): Snakemake samples a
# benchmarked job's memory every 0.5 s for its first 15 s by reading /proc/<pid>/smaps, ~14 ms of kernel time per
# sample with torch loaded. Every job's log ends with its exact usage instead (normscape.pipeline.runtime.job_usage;
# python -m normscape.pipeline.jobstats results/logs sums it per stage); the long extraction jobs keep their benchmark TSV.
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
            **{key: job_files(EXPERIMENT, filename) for key, filename in FILES.items()},
        log:
            f"{RESULTS}/logs/train/{EXPERIMENT}/{{head}}/"
            + ("lr-sweep" if sweeps_lr(EXPERIMENT) else "{variant}")
            + ".log",
        # the runs a landscape reads train first, so their landscapes run beside the remaining trainings
        priority: LANDSCAPE_PRIORITY if LANDSCAPE_READS else 0
        conda:
            ENV
        threads: 1
        resources:
            mem_mb=1500 + 150 * len(SEEDS) * len(job_variants(EXPERIMENT)),
            runtime=10 + 10 * len(SEEDS) * len(job_variants(EXPERIMENT)),
        params:
            runs=lambda wc, experiment=EXPERIMENT: job_identities(experiment, wc),
            training=lambda wc, experiment=EXPERIMENT: job_trainings(experiment, wc),
            head=canonical(config["head"]),
            # the code the head is built from (its norm's builder and classes, the head module): an edited norm
            # retrains its runs
            model_code=lambda wc: code_digest(wc.head),
            grad_hist=canonical(grad_hist_settings(config)),
            # what the feature cache must have been built for (checked before training: never other features)
            features_request=features_request(),
            # tracking.wandb is read from the config by the script, not passed here: how a run is reported changes
            # none of its numbers, and a changed param would retrain it
            wandb_dir=f"{RESULTS}/wandb",
            # each probe's slice only for the experiments it probes (None otherwise): editing it reruns only those
            probes=probe_settings(EXPERIMENT),
        script:
            "../scripts/train.py"


STAGE_TARGETS["train"] = [f"{run_dir(run)}/summary.json" for run in enumerate_runs(config)]
