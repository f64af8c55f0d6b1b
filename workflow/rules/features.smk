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


rule extract_features:
    input:
        dataset=rules.prepare_data.output[0],
        weights=backbone_weights_file(),
    output:
        f"{RESULTS}/features/features.h5",
    log:
        f"{RESULTS}/logs/extract_features.log",
    benchmark:
        f"{RESULTS}/benchmarks/extract_features.tsv"
    conda:
        ENV
    threads: 2
    resources:
        mem_mb=2500,
        runtime=90,
    params:
        backbone=canonical(config["backbone"]),
    script:
        "../scripts/extract_features.py"


STAGE_TARGETS["features"] = rules.extract_features.output
