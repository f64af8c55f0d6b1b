"""Sharpness numbers of one trained run: Hessian eigenvalue, trace, loss increase at radius (rule sharpness)."""

from normscape.landscape.jobs import compute_sharpness
from normscape.pipeline.runtime import script_main


def main(smk):
    compute_sharpness(
        smk.input.model_final, smk.input.features, smk.input.landscape, smk.output[0], dict(smk.params.hessian)
    )


script_main(snakemake, main, torch_job=True)  # noqa: F821  (subnormals flushed: normscape.pipeline.runtime)
