# Training stage: one job per (experiment, head, swept value, seed) from the cached features.
# Each job's params hold only its own slice of the config, so editing one experiment reruns only its runs.


rule train:
    input:
        features=FEATURES,
    output:
        summary=f"{RUN_DIR}/summary.json",
        metrics=f"{RUN_DIR}/metrics.csv",
        grads=f"{RUN_DIR}/grads.h5",
        model_init=f"{RUN_DIR}/model_init.pt",
        model_final=f"{RUN_DIR}/model_final.pt",
        model_best=f"{RUN_DIR}/model_best.pt",
        trajectory=f"{RUN_DIR}/trajectory.pt",
    log:
        f"{RESULTS}/logs/train/{paths.RUN_LAYOUT}.log",
    benchmark:
        f"{RESULTS}/benchmarks/train/{paths.RUN_LAYOUT}.tsv"
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
        grad_hist=canonical(config["grad_hist"]),
        # what the feature cache must have been built for (checked before training: never silently other features)
        features_request=canonical({"backbone": config["backbone"], "data": config["data"]}),
        wandb=canonical(config["tracking"]["wandb"]),
        wandb_dir=f"{RESULTS}/wandb",
    script:
        "../scripts/train.py"


STAGE_TARGETS["train"] = [f"{run_dir(run)}/summary.json" for run in enumerate_runs(config)]
