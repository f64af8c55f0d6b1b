"""Read, check and split the configured dataset into the prepared HDF5 file (rule prepare_data)."""

from normscape.data.datasets import prepare_dataset
from normscape.pipeline.runtime import script_main


def main(smk):
    checksum = smk.config["data"]["checksum"]  # not a param (see the rule)
    prepare_dataset(smk.params.source, smk.output[0], {**smk.params.data, "checksum": checksum})


script_main(snakemake, main)  # noqa: F821
