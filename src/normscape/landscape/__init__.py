"""Landscape stage: the loss of a trained head around its parameters.

planes      directions, planes, lines, the init -> final interpolation and the trajectory's PCA plane
plane_eval  exact loss and accuracy at many points of a plane, one torch path for every norm
"""
