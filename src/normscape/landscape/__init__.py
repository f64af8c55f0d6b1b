"""Landscape stage: the loss of a trained head around its parameters.

planes      the geometry: filter-normalised directions, planes, lines, the trajectory's PCA plane
plane_eval  exact loss and accuracy at many points of a plane, one torch path for every norm
run_inputs  what every per-run measure reads: the trained head and a seeded subset of the feature cache
jobs        one run's landscape.h5 and sharpness.json, from files to files (the landscape and sharpness rules)
"""
