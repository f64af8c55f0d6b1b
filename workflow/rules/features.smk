# Feature stage: the frozen MobileNet-V2 turns every split into 1280-d features -> results/features/features.h5


rule download_weights:
    output:
        f"{RESULTS}/weights/mobilenet_v2-IMAGENET1K_V1.pth",
    log:
        f"{RESULTS}/logs/download_weights.log",
    conda:
        ENV
    threads: 1
    resources:
        mem_mb=512,
        runtime=30,
    script:
        "../scripts/download_weights.py"


rule download:
    """Fetch-only target (e.g. on a cluster login node): the data archive and the backbone weights."""
    default_target: False
    input:
        [] if config["data"]["archive"] else rules.download_cifar10.output,
        backbone_weights_file(),


rule extract_features:
    input:
        dataset=rules.prepare_cifar10.output[0],
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
        mem_mb=6000,
        runtime=240,
    params:
        backbone=canonical(config["backbone"]),
    script:
        "../scripts/extract_features.py"


STAGE_TARGETS["features"] = rules.extract_features.output
