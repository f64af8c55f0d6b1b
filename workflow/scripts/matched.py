"""Curvature of one run at the experiment's common training-loss level and at its final point (rule matched)."""

from normscape.curvature.matched_loss import compute_matched
from normscape.pipeline.runtime import script_main


def main(smk):
    compute_matched(
        smk.input.model_final,
        smk.input.trajectory,
        smk.input.features,
        list(smk.input.metrics),
        list(smk.input.summaries),
        smk.output[0],
        dict(smk.params.settings),
    )


script_main(snakemake, main, torch_job=True)  # noqa: F821  (subnormals flushed: normscape.pipeline.runtime)
