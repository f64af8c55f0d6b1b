"""Render one figure of the study to PDF + PNG (rules figure_*)."""

from normscape.plots import INPUT_KINDS, render
from normscape.runtime import script_main


def main(smk):
    inputs = {kind: list(getattr(smk.input, kind)) for kind in INPUT_KINDS if hasattr(smk.input, kind)}
    render(smk.params.figure, inputs, dict(smk.params.settings), smk.output.pdf, smk.output.png)


script_main(snakemake, main)  # noqa: F821
