# Feature stage: the frozen backbone (backbone.arch, any torchvision classifier) turns every split into its
# penultimate features -> results/features/features.h5


if is_weights_name(config["backbone"]["weights"]):

    rule download_weights:
        output:
            backbone_weights_file(),
        log:
            f"{RESULTS}/logs/download_weights.log",
        conda:
            ENV
        threads: 1
        resources:
            mem_mb=512,
            runtime=30,
        params:
            arch=config["backbone"]["arch"],
            weights=config["backbone"]["weights"],
        script:
            "../scripts/download_weights.py"


rule download:
    """Fetch-only target (e.g. on a cluster login node): the data archive and the backbone weights."""
    default_target: False
    input:
        download_targets(),
        backbone_weights_file(),


# Snakemake rebuilds the cache when the settings it was built with change only if it recorded them; a cache copied
# in (another study's, benchmarks.study_ab's) has no record, and the jobs after it would start, remove their outputs
# and stop at the mismatch. A cache that records other settings than the config's is therefore rebuilt whatever
# Snakemake recorded: a marker naming the difference, written now, is a newer input of the rule that writes it.
CACHE_VERDICT = cache_verdict_input(f"{RESULTS}/features/cache_verdict.txt")


# features.shards > 1: each shard (a batch-aligned block of rows of every split) is its own single-thread job,
# so processes replace OpenMP threads locally and shards run side by side on a cluster; merge_features joins
# them into the same file, bit for bit. Changing the shard count rebuilds the features (identical bits).
rule extract_features:
    input:
        **(CACHE_VERDICT if SHARDS == 1 else {}),
        dataset=rules.prepare_data.output[0],
        weights=backbone_weights_file(),
    output:
        FEATURES if SHARDS == 1 else temp(f"{RESULTS}/{FEATURE_SHARD}.h5"),
    log:
        f"{RESULTS}/logs/extract_features.log" if SHARDS == 1 else f"{RESULTS}/logs/{FEATURE_SHARD}.log",
    benchmark:
        (f"{RESULTS}/benchmarks/extract_features.tsv" if SHARDS == 1 else f"{RESULTS}/benchmarks/{FEATURE_SHARD}.tsv")
    conda:
        ENV
    threads: 2 if SHARDS == 1 else 1
    resources:
        mem_mb=2500,
        runtime=90,
    params:
        backbone=canonical(config["backbone"]),
        shard=lambda wc: [int(wc.index), SHARDS] if SHARDS > 1 else None,
    script:
        "../scripts/extract_features.py"


if SHARDS > 1:

    rule merge_features:
        input:
            **CACHE_VERDICT,
            parts=expand(f"{RESULTS}/{FEATURE_SHARD}.h5", index=range(SHARDS)),
        output:
            FEATURES,
        log:
            f"{RESULTS}/logs/merge_features.log",
        conda:
            ENV
        threads: 1
        resources:
            mem_mb=1500,
            runtime=20,
        script:
            "../scripts/merge_features.py"


STAGE_TARGETS["features"] = [FEATURES]
