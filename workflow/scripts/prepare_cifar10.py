"""Verify, read and split the CIFAR-10 archive (rule prepare_cifar10)."""

from normscape.cifar import prepare_dataset
from normscape.runtime import script_main


def main(smk):
    p = smk.params
    prepare_dataset(smk.input.archive, smk.output[0], p.checksum, p.val_size, p.test_size, p.split_seed)


script_main(snakemake, main)  # noqa: F821
