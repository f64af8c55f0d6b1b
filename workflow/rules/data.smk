# Data stage: the CIFAR-10 archive (downloaded, or a local copy for air-gapped machines) -> verified,
# read with our own reader, split 50,000 / val / test -> results/data/cifar10.h5


rule download_cifar10:
    output:
        f"{RESULTS}/data/cifar-10-python.tar.gz",
    log:
        f"{RESULTS}/logs/download_cifar10.log",
    conda:
        ENV
    threads: 1
    resources:
        mem_mb=512,
        runtime=60,
    params:
        url=config["data"]["url"],
        checksum=config["data"]["checksum"],
    script:
        "../scripts/download_cifar10.py"


rule prepare_cifar10:
    input:
        archive=cifar_archive(),
    output:
        f"{RESULTS}/data/cifar10.h5",
    log:
        f"{RESULTS}/logs/prepare_cifar10.log",
    conda:
        ENV
    threads: 1
    resources:
        mem_mb=4000,
        runtime=30,
    params:
        checksum=config["data"]["checksum"],
        val_size=config["data"]["val_size"],
        test_size=config["data"]["test_size"],
        split_seed=config["data"]["split_seed"],
    script:
        "../scripts/prepare_cifar10.py"


STAGE_TARGETS["data"] = rules.prepare_cifar10.output
