"""Download torchvision's weights of backbone.arch once (rule download_weights)."""

from normscape.data.cifar import download
from normscape.features.backbones import torchvision_weights_url
from normscape.pipeline.runtime import script_main


def main(smk):
    url, sha256_prefix = torchvision_weights_url(smk.params.arch, smk.params.weights)
    checksum = f"sha256:{sha256_prefix}" if sha256_prefix else None
    download(url, smk.output[0], checksum, config_key="backbone.weights_sha256")


script_main(snakemake, main)  # noqa: F821
