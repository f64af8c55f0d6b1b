"""Hessian spectrum and adaptive sharpness of one trained run, eval and (BatchNorm) train mode (rule curvature)."""

from normscape.curvature.jobs import compute_curvature
from normscape.pipeline.runtime import script_main


def main(smk):
    p = smk.params
    compute_curvature(
        smk.input.model_final,
        smk.input.features,
        int(p.batch_size),
        dict(p.spectrum),
        dict(p.adaptive_sharpness),
        smk.output.spectrum_h5,
        smk.output.spectrum_json,
        smk.output.adaptive,
        seed=int(p.seed),
    )


script_main(snakemake, main, torch_job=True)  # noqa: F821  (subnormals flushed: normscape.pipeline.runtime)
