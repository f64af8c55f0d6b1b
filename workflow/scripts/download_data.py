"""Download the dataset's official archive and verify its checksum (rule download_data)."""

from normscape.data.cifar import download
from normscape.pipeline.runtime import script_main


def main(smk):
    download(smk.params.url, smk.output[0], smk.params.checksum, config_key="data.checksum")


script_main(snakemake, main)  # noqa: F821
