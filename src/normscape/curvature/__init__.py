"""Curvature measures of a trained head (rules sharpness, curvature, matched) and along training.

head_loss           the training loss of a head as a function of one flat parameter vector (HVPs)
sharpness           lambda_max, lambda_min (Lanczos) and the trace of the Hessian
hessian_diagonal    the exact Hessian diagonal (and trace) for any registered norm
spectrum            top-k eigenvalues, spectral density (SLQ), per-layer blocks
adaptive_sharpness  scale-invariant sharpness (Kwon et al. 2021)
smoothness          smoothness along the training trajectory (Santurkar et al. 2018), measured by the trainer
edge_of_stability   Adam's preconditioned sharpness along training (Cohen et al. 2022), measured by the trainer
matched_loss        curvature where each run first reaches a training loss every learning head reaches
jobs                per-run entry points from files to files (what the curvature rule's script calls)
"""
