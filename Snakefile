# normscape: how the normalisation layer of a transfer-learning head shapes optimisation.
# Run the whole study:   snakemake --cores all all
# One figure only:       snakemake --cores 2 results/figures/<name>.pdf
# On SLURM:              snakemake --profile profiles/slurm all
import sys
from pathlib import Path

from snakemake.utils import min_version

# The lowest Snakemake CI runs the tiny workflow and the report with (.ci/run, step 5); pyproject.toml states the
# same bound. 8.x lacks --replace-workflow-config, which the README and the tests use.
min_version("9.0.0")


# Our own syntax check first: Snakemake's parser reports a broken YAML file without its line and column, and
# takes a key given twice silently (the last wins). --configfile files are parsed by Snakemake's CLI before
# this runs (a syntax error there gets its message), but their duplicate keys are caught here.
sys.path.insert(0, str(Path(workflow.basedir) / "src"))
from normscape.pipeline.config import check_config_syntax  # noqa: E402

for config_path in ["config.yaml", *workflow.overwrite_configfiles]:
    check_config_syntax(config_path)


configfile: "config.yaml"


report: "workflow/report/workflow.rst"


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/features.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/landscape.smk"
include: "workflow/rules/figures.smk"
include: "workflow/rules/report.smk"


# A truncated or corrupt cache is reported now, before any job starts (and before Snakemake deletes anything).
check_cached_files({"prepared dataset": rules.prepare_data.output[0], "feature file": FEATURES})
check_checksum_of_cached_features()
# A requested file of a run the config does not define: one message naming what the experiment has.
check_requested_runs(sys.argv[1:])


onstart:
    check_inputs_before_jobs()


rule all:
    default_target: True
    input:
        all_targets(),


onsuccess:
    from normscape.reporting.overview import study_overview

    if overview := study_overview(RESULTS, written_since=WORKFLOW_STARTED, argv=sys.argv):
        print(overview)
