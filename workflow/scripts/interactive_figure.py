"""A 3D figure as one self-contained, rotatable HTML file, and a light page with its static image for a
single-file report (rules interactive_*)."""

from normscape.pipeline.runtime import script_main
from normscape.reporting.export import write_landscape_surfaces_html


def main(smk):
    o = smk.output
    write_landscape_surfaces_html(list(smk.input.landscapes), o.html, smk.params.title, o.preview, smk.input.png)


script_main(snakemake, main)  # noqa: F821
