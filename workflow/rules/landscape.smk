# Landscape stage: loss landscapes (plane, line, interpolation, trajectory PCA) and sharpness of each run of
# the experiments listed in landscape.experiments. Params hold only the landscape slice: editing landscape.*
# reruns these jobs and their figures, never training.


rule landscape:
    input:
        features=rules.extract_features.output[0],
        model_final=f"{RUN_DIR}/model_final.pt",
        model_init=f"{RUN_DIR}/model_init.pt",
        trajectory=f"{RUN_DIR}/trajectory.pt",
    output:
        landscape=f"{RESULTS}/landscapes/{{experiment}}/{{head}}/{{variant}}/seed{{seed}}/landscape.h5",
        sharpness=f"{RESULTS}/landscapes/{{experiment}}/{{head}}/{{variant}}/seed{{seed}}/sharpness.json",
    log:
        f"{RESULTS}/logs/landscape/{{experiment}}/{{head}}/{{variant}}/seed{{seed}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/landscape/{{experiment}}/{{head}}/{{variant}}/seed{{seed}}.tsv"
    conda:
        ENV
    # One thread: the evaluator runs thousands of small ops, and two-thread jobs side by side on a machine with
    # fewer cores than `--cores` (the README's `--cores 4` on 2 cores) stall on each other's OpenMP barriers
    # (measured: a 51x51 plane ~35x slower). Four single-thread jobs just share the cores. On SLURM, where
    # each job owns its CPUs, profiles/slurm gives it 2.
    threads: 1
    resources:
        mem_mb=2000,
        runtime=20,
    params:
        settings=canonical({k: v for k, v in config["landscape"].items() if k != "experiments"}),
    script:
        "../scripts/landscape.py"


STAGE_TARGETS["landscape"] = [
    f"{landscape_dir(run)}/{name}"
    for run in enumerate_runs(config, config["landscape"]["experiments"])
    for name in ("landscape.h5", "sharpness.json")
]
