# Figures and tables: one rule per figure, each reading exactly the run files it shows, so
# `snakemake results/figures/<name>.pdf` runs only what that figure needs. A figure whose experiment is not in
# the config is not defined. Outputs are registered for `snakemake --report`.

FIGURES = {name: inputs for name in FIGURE_SPECS if (inputs := figure_inputs(name)) is not None}


# A documented figure the config cannot make: name what is missing instead of Snakemake's "No rule to produce".
for fig_name in FIGURE_SPECS.keys() - FIGURES.keys():
    fig_targets = {os.path.abspath(f"{RESULTS}/figures/{fig_name}.{ext}") for ext in ("pdf", "png")}
    if any(os.path.abspath(a) in fig_targets or a == f"figure_{fig_name}" for a in sys.argv[1:]):
        sys.exit(f"normscape: figure {fig_name} needs {missing_for_figure(fig_name)}, which this config lacks.")

for fig_name, fig_inputs in FIGURES.items():

    rule:
        name:
            f"figure_{fig_name}"
        input:
            **fig_inputs,
        output:
            pdf=f"{RESULTS}/figures/{fig_name}.pdf",
            png=report(
                f"{RESULTS}/figures/{fig_name}.png",
                caption=f"../report/{fig_name}.rst",
                category=FIGURE_SPECS[fig_name].category,
                labels={"figure": fig_name, "format": "PNG (PDF beside it)"},
            ),
        log:
            f"{RESULTS}/logs/figures/{fig_name}.log",
        conda:
            ENV
        threads: 1
        resources:
            mem_mb=2000,
            runtime=15,
        params:
            figure=fig_name,
            settings=canonical(figure_settings(fig_name)),
        script:
            "../scripts/figure.py"


rule summary_table:
    input:
        summaries=[f"{run_dir(r)}/summary.json" for r in enumerate_runs(config)],
        sharpness=[
            f"{landscape_dir(r)}/sharpness.json" for r in enumerate_runs(config, config["landscape"]["experiments"])
        ],
        metrics=[f"{run_dir(r)}/metrics.csv" for r in enumerate_runs(config)],
    output:
        csv=f"{RESULTS}/tables/summary.csv",
        md=f"{RESULTS}/tables/summary.md",  # shown in the report as HTML (rule table_html_summary, report.smk)
    log:
        f"{RESULTS}/logs/tables/summary.log",
    conda:
        ENV
    threads: 1
    resources:
        mem_mb=1000,
        runtime=10,
    params:
        plateau_fraction=config["claims"]["plateau_fraction"],
        # the table is also logged to W&B, as a wandb.Table in one run named "summary" (tracking.wandb is read from
        # the config by the script: a changed param would rerun the rule for a setting that changes no number)
        wandb_dir=f"{RESULTS}/wandb",
    script:
        "../scripts/summary_table.py"


rule claims:
    input:
        **claims_measure_files(),
        summaries=[f"{run_dir(r)}/summary.json" for r in enumerate_runs(config)],
        metrics=[f"{run_dir(r)}/metrics.csv" for r in enumerate_runs(config)],
    output:
        csv=f"{RESULTS}/tables/claims.csv",
        md=f"{RESULTS}/tables/claims.md",  # shown in the report as HTML (rule table_html_claims, report.smk)
    log:
        f"{RESULTS}/logs/tables/claims.log",
    conda:
        ENV
    threads: 1
    resources:
        mem_mb=1000,
        runtime=10,
    params:
        settings=canonical(config["claims"]),
        measures=list(claims_measure_files()),
    script:
        "../scripts/claims.py"


STAGE_TARGETS["figures"] = [f"{RESULTS}/figures/{name}.{ext}" for name in FIGURES for ext in ("pdf", "png")]
STAGE_TARGETS["tables"] = rules.summary_table.output + rules.claims.output
