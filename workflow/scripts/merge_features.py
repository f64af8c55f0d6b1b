"""Join the feature shards into the one feature store the unsharded extraction writes (rule merge_features)."""

from normscape.runtime import script_main
from normscape.shards import merge_shards


def main(smk):
    merge_shards(list(smk.input.parts), smk.output[0])


script_main(snakemake, main)  # noqa: F821
