"""docs/results.md from a finished study's tables (rule results_doc)."""

from importlib.metadata import version

from normscape.pipeline.runtime import script_main
from normscape.reporting.results_doc import write


def main(smk):
    versions = {name: version(name) for name in ("normscape", "torch", "torchvision", "snakemake")}
    write(smk.output[0], smk.input.summary, smk.input.claims, smk.input.features, dict(smk.params.config), versions)


script_main(snakemake, main)  # noqa: F821
