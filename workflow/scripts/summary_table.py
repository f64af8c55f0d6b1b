"""The summary table of every run: CSV + Markdown (rule summary_table)."""

from normscape.runtime import script_main
from normscape.tables import write_summary_table


def main(smk):
    write_summary_table(
        list(smk.input.summaries),
        list(smk.input.sharpness),
        smk.output.csv,
        smk.output.md,
        list(smk.input.metrics),
        smk.params.plateau_fraction,
    )


script_main(snakemake, main)  # noqa: F821
