"""Download torchvision's MobileNet-V2 ImageNet weights once (rule download_weights)."""

from normscape.backbone import torchvision_weights_url
from normscape.cifar import download
from normscape.runtime import script_main


def main(smk):
    url, sha256_prefix = torchvision_weights_url()
    download(url, smk.output[0], f"sha256:{sha256_prefix}", config_key="backbone.weights_sha256")


script_main(snakemake, main)  # noqa: F821
