# Report-only outputs beside the figures: rotatable HTML versions of the 3D figures, a VTK export (ParaView) of
# every landscape surface, and every table as an HTML table (the report shows HTML inline; Markdown would only be
# offered as a download). Registered for `snakemake --report` with labels and captions (workflow/report/).

# 3D figures that also get a self-contained, rotatable plotly HTML version: figure name -> title.
INTERACTIVE_FIGURES = {"fig5_landscape_surface": "Loss landscape per head (rotate: drag; zoom: scroll)"}


# Tables shown in the report: table name (results/tables/<name>.md) -> label.
REPORT_TABLES = {"summary": "Summary of all runs", "claims": "Claims of the study with verdicts"}


for fig_name in [name for name in INTERACTIVE_FIGURES if name in FIGURES]:

    rule:
        name:
            f"interactive_{fig_name}"
        input:
            landscapes=FIGURES[fig_name]["landscapes"],
            png=f"{RESULTS}/figures/{fig_name}.png",
        output:
            # the same file name in two folders: the captions' link `<name>.html`_ finds whichever is registered
            html=interactive_entry(f"{RESULTS}/figures/{fig_name}.html", fig_name, report_is_zip()),
            preview=interactive_entry(f"{RESULTS}/figures/preview/{fig_name}.html", fig_name, not report_is_zip()),
        log:
            f"{RESULTS}/logs/figures/{fig_name}.html.log",
        conda:
            ENV
        threads: 1
        resources:
            mem_mb=2000,
            runtime=15,
        params:
            title=INTERACTIVE_FIGURES[fig_name],
        script:
            "../scripts/interactive_figure.py"


rule landscape_vtk:
    input:
        landscape=rules.landscape.output.landscape,
    output:
        plane=f"{LANDSCAPE_DIR}/vtk/plane.vts",
        pca=f"{LANDSCAPE_DIR}/vtk/pca_plane.vts",
        trajectory=f"{LANDSCAPE_DIR}/vtk/trajectory.vtp",
    log:
        f"{RESULTS}/logs/landscape_vtk/{paths.RUN_LAYOUT}.log",
    priority: LANDSCAPE_PRIORITY
    conda:
        ENV
    threads: 1
    resources:
        mem_mb=1000,
        runtime=10,
    script:
        "../scripts/landscape_vtk.py"


for table_name, table_label in REPORT_TABLES.items():

    rule:
        name:
            f"table_html_{table_name}"
        input:
            md=f"{RESULTS}/tables/{table_name}.md",
        output:
            html=report(
                f"{RESULTS}/tables/{table_name}.html",
                caption=f"../report/{table_name}_table.rst",
                category="tables",
                labels={"table": table_label},
            ),
        log:
            f"{RESULTS}/logs/tables/{table_name}.html.log",
        conda:
            ENV
        threads: 1
        resources:
            mem_mb=500,
            runtime=5,
        params:
            title=table_label,
        script:
            "../scripts/table_html.py"


# The landing page (workflow/report/workflow.rst includes the fragment): the study on one screen, generated from
# the tables; the same page as a report entry, so `snakemake --report` refuses to run before it exists.
REPORT_CATEGORIES = list(dict.fromkeys([FIGURE_SPECS[name].category for name in FIGURES] + ["tables"]))


rule overview:
    input:
        summary=f"{RESULTS}/tables/summary.csv",
        claims=f"{RESULTS}/tables/claims.csv",
    output:
        fragment=f"{RESULTS}/report/overview.html",
        page=report(
            f"{RESULTS}/tables/overview.html",
            caption="../report/overview.rst",
            category="tables",
            labels={"table": "The study at a glance"},
        ),
    log:
        f"{RESULTS}/logs/tables/overview.log",
    conda:
        ENV
    threads: 1
    resources:
        mem_mb=500,
        runtime=5,
    params:
        config=canonical(config),
        categories=canonical(REPORT_CATEGORIES),
    script:
        "../scripts/overview.py"


STAGE_TARGETS["report"] = (
    [f"{RESULTS}/figures/{d}{name}.html" for name in INTERACTIVE_FIGURES if name in FIGURES for d in ("", "preview/")]
    + [f"{RESULTS}/tables/{name}.html" for name in REPORT_TABLES]
    + [f"{RESULTS}/report/overview.html", f"{RESULTS}/tables/overview.html"]
    + [
        f"{landscape_dir(run)}/vtk/{name}"
        for run in enumerate_runs(config, config["landscape"]["experiments"])
        for name in ("plane.vts", "pca_plane.vts", "trajectory.vtp")
    ]
)


# docs/results.md (normscape.reporting.results_doc): the finished study's tables with the inputs they were computed from and
# the command that reproduces them. Not part of `all`: it writes into docs/ of the working directory, on request.


rule results_doc:
    input:
        summary=f"{RESULTS}/tables/summary.md",
        claims=f"{RESULTS}/tables/claims.md",
        features=FEATURES,
    output:
        "docs/results.md",
    log:
        f"{RESULTS}/logs/tables/results_doc.log",
    conda:
        ENV
    threads: 1
    resources:
        mem_mb=500,
        runtime=5,
    params:
        config=canonical(config),
    script:
        "../scripts/results_doc.py"
