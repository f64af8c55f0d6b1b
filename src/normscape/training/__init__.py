"""Training stage: the seeds of one condition trained together from cached features.

trainer          the Trainer: one batched epoch loop for every run of a group
run_records      what the trainer keeps per run (RunRecord, RunView, ProbeSet) and its resume state
evaluation       loss/accuracy of a head, the divergence rule, a run's summary
job              a training job's files: features in, each run's outputs out, checkpoints resumed per run
checkpoint       resume checkpoints, read back only when they match the run's identity
grad_histograms  gradient-magnitude histograms accumulated per parameter and epoch
wandb_tracking   Weights & Biases tracking that never fails or hangs a run
wandb_payload    what a run sends to W&B: input provenance, tags, histograms in W&B's form
wandb_reader     reading an offline W&B run file back without a server
"""
