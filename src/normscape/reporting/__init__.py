"""Reporting: from run files to tables, claims and documents.

run_files        loading one run's output files (runs identified from their paths)
summary_table    the comparison table: one row per experiment x norm x variant, mean +- std over seeds
run_table        one row per run with every number of every measure: what the claims are tested on
claims_stats     the statistics of a claim row: paired tests, bootstrap, TOST, the verdict
claims           the study's claims (rows over the run table) and the claims table
claims_markdown  the claims table rendered as Markdown
claims_stability the edge-of-stability claims
critical_lr      the critical learning rate of a learning-rate sweep
landing_page     the report's landing page
overview         what a finished `snakemake all` prints last
results_doc      docs/results.md, generated from a finished study's tables
export           plotly HTML surfaces, VTK files, HTML tables
"""
