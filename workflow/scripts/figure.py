"""Render one figure of the study to PDF + PNG (rules figure_*)."""

import logging

from normscape.figures.registry import INPUT_KINDS, draw
from normscape.figures.style import save
from normscape.pipeline.runtime import script_main


def main(smk):
    inputs = {kind: list(getattr(smk.input, kind)) for kind in INPUT_KINDS if hasattr(smk.input, kind)}
    fig = draw(smk.params.figure, inputs, dict(smk.params.settings))
    logging.getLogger("normscape").info("figure %s: %s", smk.params.figure, fig.get_suptitle() or "(no title)")
    save(fig, smk.output.pdf, smk.output.png)


script_main(snakemake, main)  # noqa: F821
