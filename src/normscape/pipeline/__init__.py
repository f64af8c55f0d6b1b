"""What only the workflow needs: configuration, file layout, job glue.

config     config validation (JSON schema + defaults) and the run matrix (python -m normscape.pipeline.config FILE)
paths      the run-path layout, stated once
measures   the registry of per-run measures: file, rule, directory, which runs
runtime    glue for every workflow script: environment, logging, threads, clean errors
errors     user-facing error types
atomic     atomic file writes (temp file + rename)
integrity  cached HDF5 files checked when the workflow starts
plugins    loading plugin files that register norms, backbones, datasets
jobstats   where a study's time went, per stage (python -m normscape.pipeline.jobstats results/logs)
"""
