"""Join the feature shards into the one feature store the unsharded extraction writes (rule merge_features)."""

from normscape.features.merge_shards import merge_shards
from normscape.pipeline.runtime import script_main


def main(smk):
    merge_shards(list(smk.input.parts), smk.output[0])


script_main(snakemake, main)  # noqa: F821
