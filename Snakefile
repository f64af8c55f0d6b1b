# normscape: how the normalisation layer of a transfer-learning head shapes optimisation.
# Run the whole study:   snakemake --cores 4 all
# One figure only:       snakemake --cores 2 results/figures/<name>.pdf
# On SLURM:              snakemake --profile profiles/slurm all
from snakemake.utils import min_version

# The lowest Snakemake CI runs the tiny workflow and the report with (.ci/run, step 5); pyproject.toml states the
# same bound. 8.x lacks --replace-workflow-config, which the README and the tests use.
min_version("9.0.0")


configfile: "config.yaml"


report: "workflow/report/workflow.rst"


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/features.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/landscape.smk"
include: "workflow/rules/figures.smk"
include: "workflow/rules/report.smk"


rule all:
    default_target: True
    input:
        all_targets(),
