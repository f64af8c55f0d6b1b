# Landscape stage: loss landscapes (plane, line, interpolation, trajectory PCA) of each run of the experiments
# listed in landscape.experiments, then their sharpness numbers as a separate rule. Params hold only the
# landscape slice: editing landscape.* reruns these jobs and their figures, never training; editing hessian.*
# reruns only the jobs that read it: sharpness and matched, and curvature for hessian.samples and hessian.spectrum.*


rule landscape:
    input:
        features=FEATURES,
        model_final=f"{RUN_DIR}/model_final.pt",
        model_init=f"{RUN_DIR}/model_init.pt",
        trajectory=f"{RUN_DIR}/trajectory.pt",
    output:
        landscape=f"{LANDSCAPE_DIR}/landscape.h5",
    log:
        f"{RESULTS}/logs/landscape/{paths.RUN_LAYOUT}.log",
    priority: LANDSCAPE_PRIORITY
    conda:
        ENV
    # One thread: the evaluator runs thousands of small ops, and two-thread jobs side by side on a machine with
    # fewer cores than `--cores` (e.g. `--cores 4` on 2 cores) stall on each other's OpenMP barriers
    # (measured: a 51x51 plane ~35x slower). Four single-thread jobs just share the cores. On SLURM, where
    # each job owns its CPUs, profiles/slurm gives it 2.
    threads: 1
    resources:
        mem_mb=1500,
        runtime=20,
    params:
        settings=canonical({k: v for k, v in config["landscape"].items() if k != "experiments"}),
    script:
        "../scripts/landscape.py"


rule sharpness:
    input:
        features=FEATURES,
        model_final=f"{RUN_DIR}/model_final.pt",
        landscape=rules.landscape.output.landscape,
    output:
        f"{LANDSCAPE_DIR}/sharpness.json",
    log:
        f"{RESULTS}/logs/sharpness/{paths.RUN_LAYOUT}.log",
    priority: LANDSCAPE_PRIORITY
    conda:
        ENV
    threads: 1
    resources:
        mem_mb=2000,
        runtime=30,
    params:
        hessian=canonical(hessian_settings(config)),
    script:
        "../scripts/sharpness.py"


# Curvature diagnostics (normscape.curvature.jobs): Hessian spectrum and adaptive sharpness of the final head, in eval
# mode and, for BatchNorm, in train mode (batch statistics at the run's batch size). Params: only the
# hessian.spectrum (with hessian.samples) / diagnostics.adaptive_sharpness slices, the run's batch size and the
# subset seed, so editing them reruns only these jobs (and what reads them).


rule curvature:
    input:
        features=FEATURES,
        model_final=f"{RUN_DIR}/model_final.pt",
    output:
        spectrum_h5=f"{LANDSCAPE_DIR}/spectrum.h5",
        spectrum_json=f"{LANDSCAPE_DIR}/spectrum.json",
        adaptive=f"{LANDSCAPE_DIR}/adaptive_sharpness.json",
    log:
        f"{RESULTS}/logs/curvature/{paths.RUN_LAYOUT}.log",
    priority: LANDSCAPE_PRIORITY
    conda:
        ENV
    threads: 1
    resources:
        mem_mb=2000,
        runtime=30,
    params:
        spectrum=canonical(spectrum_settings(config)),
        adaptive_sharpness=canonical(config["diagnostics"]["adaptive_sharpness"]),
        batch_size=lambda wc: find_run(config, wc.experiment, wc.head, wc.variant, wc.seed).training["batch_size"],
        seed=config["landscape"]["direction_seed"],
    script:
        "../scripts/curvature.py"


# Curvature at matched training loss (normscape.curvature.matched_loss): each landscape run's lambda_max, lambda_min and trace
# where its training loss first reaches the highest final training loss among the experiment's learning runs,
# beside its final point. Its inputs are every run of the experiment (the level depends on all of them).


rule matched:
    input:
        features=FEATURES,
        model_final=f"{RUN_DIR}/model_final.pt",
        trajectory=f"{RUN_DIR}/trajectory.pt",
        metrics=lambda wc: run_files(wc.experiment, "metrics.csv"),
        summaries=lambda wc: run_files(wc.experiment, "summary.json"),
    output:
        f"{LANDSCAPE_DIR}/matched_sharpness.json",
    log:
        f"{RESULTS}/logs/matched/{paths.RUN_LAYOUT}.log",
    priority: LANDSCAPE_PRIORITY
    conda:
        ENV
    threads: 1
    resources:
        mem_mb=2000,
        runtime=30,
    params:
        settings=lambda wc: canonical(
            {
                **hessian_settings(config),
                "min_val_acc": config["claims"]["min_val_acc"],
                "seed": config["landscape"]["direction_seed"],
                "batch_size": find_run(config, wc.experiment, wc.head, wc.variant, wc.seed).training["batch_size"],
            }
        ),
    script:
        "../scripts/matched.py"


STAGE_TARGETS["landscape"] = [
    f"{landscape_dir(run)}/{name}"
    for run in enumerate_runs(config, config["landscape"]["experiments"])
    for name in landscape_stage_files()
]
