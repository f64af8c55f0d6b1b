"""Reporting: from run files to tables, claims and documents.

run_files        loading one run's output files (runs identified from their paths)
summary_table    the comparison table: one row per experiment x norm x variant, mean +- std over seeds
run_table        one row per run with every number of every measure: what the claims are tested on
claims           the study's claims: each a set of paired rows over the run table
claims_stats     the statistics of a row: exact sign-flip test, bootstrap interval, TOST, the verdict
claims_evaluation  testing every row on the run table: the table of verdicts
claims_markdown  the claims table written as Markdown and CSV
claims_stability the edge-of-stability claims
critical_lr      the critical learning rate of a learning-rate sweep
landing_page     the report's landing page
overview         what a finished `snakemake all` prints last
results_doc      docs/results.md, generated from a finished study's tables
export           plotly HTML surfaces, VTK files, HTML tables
"""
