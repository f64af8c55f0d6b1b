"""A 3D figure as one self-contained, rotatable HTML file (rules interactive_*)."""

from normscape.export import write_landscape_surfaces_html
from normscape.runtime import script_main


def main(smk):
    write_landscape_surfaces_html(list(smk.input.landscapes), smk.output.html, smk.params.title)


script_main(snakemake, main)  # noqa: F821
