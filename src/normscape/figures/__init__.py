"""Figures: the registry of every figure the workflow draws, and their drawing.

registry     FIGURES (name -> FigureSpec: inputs, head subsets, category, drawing) and draw/render
style        what every figure shares: lazy pyplot, palette, saving, log axes, legends, titles from the config
curves       curve figures (convergence, batch size, learning-rate sweeps, clipping)
axes         axis limits that fit the heads that learn, round ticks
gradients    gradient-histogram heatmaps
landscape    loss-landscape surfaces, contours, PCA trajectory, 1D cuts
diagnostics  smoothness, Hessian spectral density, adaptive sharpness
stability    edge-of-stability figures (preconditioned sharpness, stability map)
"""
