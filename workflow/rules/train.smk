# Training stage: one job per (experiment, head, swept value, seed) from the cached features.
# Each job's params hold only its own slice of the config, so editing one experiment reruns only its runs.


TRAIN_OUTPUTS = {
    name: f"{RUN_DIR}/{filename}"
    for name, filename in [
        ("summary", "summary.json"),
        ("metrics", "metrics.csv"),
        ("grads", "grads.h5"),
        ("model_final", "model_final.pt"),
        ("model_best", "model_best.pt"),
        # every run declares them (stable outputs); runs outside diagnostics.smoothness.experiments: zero records
        ("smoothness_h5", "smoothness.h5"),
        ("smoothness_json", "smoothness.json"),
    ]
}


# No `benchmark:` on the rules with one job per run (train, landscape, sharpness, curvature): Snakemake samples a
# benchmarked job's memory every 0.5 s for its first 15 s by reading /proc/<pid>/smaps, ~14 ms of kernel time per
# sample with torch loaded, so ~0.5 s of system time per job (~1.5 % of a training run, ~50 s over the default
# study). Every job's log ends with its exact usage instead (normscape.runtime.job_usage; python -m
# normscape.jobstats results/logs sums it per stage); the long extraction jobs keep their benchmark TSV.


# Runs of the experiments in landscape.experiments are trained by train_tracked, which also keeps what their
# landscape reads: the trajectory (~21 MB a run) and the initial model; the rest by train, without them. The
# experiment alone picks the rule: removing an experiment from landscape.experiments reruns nothing (unless its runs
# are then the same training as other runs: they reuse those, a copy), adding one retrains its runs.
# A run that is the same training as another (normscape/sharedruns.py) gets that run's outputs as inputs and
# `shared_from` names it: its job copies the results instead of training.
rule train:
    input:
        unpack(train_inputs),
    output:
        **TRAIN_OUTPUTS,
    log:
        f"{RESULTS}/logs/train/{paths.RUN_LAYOUT}.log",
    wildcard_constraints:
        experiment=experiment_pattern(config["landscape"]["experiments"], negate=True),
    conda:
        ENV
    threads: 1
    resources:
        mem_mb=2000,
        runtime=20,
    params:
        run=lambda wc: run_identity(wc),
        training=lambda wc: canonical(find_run(config, wc.experiment, wc.head, wc.variant, wc.seed).training),
        head=canonical(config["head"]),
        # the code the head is built from (its norm's builder and classes, the head module): an edited norm retrains
        model_code=lambda wc: code_digest(wc.head),
        grad_hist=canonical(config["grad_hist"]),
        # what the feature cache must have been built for (checked before training: never silently other features)
        features_request=canonical({"backbone": config["backbone"], "data": config["data"]}),
        wandb=canonical(config["tracking"]["wandb"]),
        wandb_dir=f"{RESULTS}/wandb",
        # the probe's slice only for the runs it probes (None otherwise): editing it reruns only those
        smoothness=lambda wc: smoothness_settings(wc.experiment),
        # the run whose training this one is (normscape/sharedruns.py; None: trains itself)
        shared_from=shared_from,
    script:
        "../scripts/train.py"


use rule train as train_tracked with:
    output:
        **TRAIN_OUTPUTS,
        model_init=f"{RUN_DIR}/model_init.pt",
        trajectory=f"{RUN_DIR}/trajectory.pt",
    wildcard_constraints:
        experiment=experiment_pattern(config["landscape"]["experiments"]),
    priority: LANDSCAPE_PRIORITY


STAGE_TARGETS["train"] = [f"{run_dir(run)}/summary.json" for run in enumerate_runs(config)]
