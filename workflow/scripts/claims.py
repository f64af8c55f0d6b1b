"""The claims table: every claim of the study with its statistic, per-seed values, CI and verdict (rule claims)."""

from normscape.pipeline.runtime import script_main
from normscape.reporting.claims_markdown import write_claims


def main(smk):
    measures = {name: list(getattr(smk.input, name)) for name in smk.params.measures}
    write_claims(
        list(smk.input.summaries),
        list(smk.input.metrics),
        measures,
        smk.output.csv,
        smk.output.md,
        dict(smk.params.settings),
    )


script_main(snakemake, main)  # noqa: F821
