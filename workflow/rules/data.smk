# Data stage: the configured dataset (normscape/data/datasets.py: cifar10, cifar100, imagefolder) -> verified, read
# with our own readers, split train / val / test -> results/data/<dataset>.h5


if DATASET.url is not None:

    rule download_data:
        output:
            DATA_DOWNLOAD,
        log:
            f"{RESULTS}/logs/download_data.log",
        conda:
            ENV
        threads: 1
        resources:
            mem_mb=512,
            runtime=60,
        params:
            url=datasets.resolved_url(DATA),
            checksum=datasets.resolved_checksum(DATA),
        script:
            "../scripts/download_data.py"


# The prepared images (~180 MB for CIFAR) are only read by feature extraction: temporary, so Snakemake removes
# them once the features are built (re-preparing from the kept archive takes seconds when features are rebuilt;
# `snakemake --notemp` keeps them).
rule prepare_data:
    input:
        **data_inputs(),
    output:
        temp(f"{RESULTS}/data/{DATASET.name}.h5"),
    log:
        f"{RESULTS}/logs/prepare_data.log",
    conda:
        ENV
    threads: 1
    resources:
        mem_mb=4000,
        runtime=30,
    params:
        # the archive, or the image tree's root (its files are the inputs)
        source=lambda wildcards, input: input.archive if hasattr(input, "archive") else data_source(),
        # not data.checksum (read from the config by the script): how a local archive is verified changes none of
        # the prepared bytes (a downloaded one is verified by download_data, whose param it stays)
        data=canonical({k: v for k, v in DATA.items() if k not in ("url", "archive", "root", "checksum")}),
    script:
        "../scripts/prepare_data.py"
