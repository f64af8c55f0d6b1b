"""Download the dataset's official archive and verify its checksum (rule download_data)."""

from normscape.data.cifar import download
from normscape.data.datasets import resolved_checksum
from normscape.pipeline.runtime import script_main


def main(smk):
    checksum = resolved_checksum(smk.config["data"])  # not a param (see the rule)
    download(smk.params.url, smk.output[0], checksum, config_key="data.checksum")


script_main(snakemake, main)  # noqa: F821
