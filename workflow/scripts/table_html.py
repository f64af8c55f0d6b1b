"""A Markdown table as a standalone HTML table, shown inline in the Snakemake report (rules table_html_*)."""

from normscape.export import write_table_html
from normscape.runtime import script_main


def main(smk):
    write_table_html(smk.input.md, smk.output.html, smk.params.title)


script_main(snakemake, main)  # noqa: F821
