"""A Markdown table as a standalone HTML table, shown inline in the Snakemake report (rules table_html_*)."""

from normscape.pipeline.runtime import script_main
from normscape.reporting.export import write_table_html


def main(smk):
    write_table_html(smk.input.md, smk.output.html, smk.params.title)


script_main(snakemake, main)  # noqa: F821
