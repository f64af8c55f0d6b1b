"""Loss landscapes of one trained run (rule landscape)."""

from normscape.landscape.jobs import compute_landscape
from normscape.pipeline.runtime import script_main


def main(smk):
    compute_landscape(
        smk.input.model_final,
        smk.input.model_init,
        smk.input.trajectory,
        smk.input.features,
        smk.output.landscape,
        dict(smk.params.settings),
    )


script_main(snakemake, main, torch_job=True)  # noqa: F821  (subnormals flushed: normscape.pipeline.runtime)
