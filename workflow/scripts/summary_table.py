"""The summary table of every run: CSV + Markdown, and as a wandb.Table in one W&B run (rule summary_table)."""

from normscape.pipeline.runtime import script_main
from normscape.reporting.summary_table import write_summary_table
from normscape.training.wandb_tracking import log_summary_table


def main(smk):
    write_summary_table(
        list(smk.input.summaries),
        list(smk.input.sharpness),
        smk.output.csv,
        smk.output.md,
        list(smk.input.metrics),
        smk.params.plateau_fraction,
    )
    wandb_settings = smk.config["tracking"]["wandb"]  # not a param (see the rule)
    log_summary_table(dict(wandb_settings), smk.params.wandb_dir, smk.output.csv)  # never fails the rule


script_main(snakemake, main)  # noqa: F821
