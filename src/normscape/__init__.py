"""normscape: how the normalisation layer of a transfer-learning head shapes optimisation.

The subpackages follow the workflow's DAG, in its order (docs/architecture.md has the module map and the renames):
  data        datasets in: the dataset registry, CIFAR-10/100 and ImageFolder readers, synthetic stand-ins for tests
  features    frozen backbone -> feature cache: backbone registry, extraction, the HDF5 store, shard merge, linear probe
  models      what is trained: the norm registry, FRN, the classifier head, a condition's seeds as one batched model
  training    the training stage: the trainer, a job's files and checkpoints, gradient histograms, W&B tracking
  landscape   loss landscapes of a trained head: directions, planes, lines, the trajectory's PCA plane
  curvature   Hessian measures: sharpness, spectrum, adaptive sharpness, smoothness, edge of stability, matched loss
  figures     the figure registry and every figure's drawing
  reporting   from run files to tables, claims, the landing page, docs/results.md and exports
  pipeline    what only the workflow needs: config schema, run paths, measures registry, runtime glue, errors,
              atomic writes, cache integrity, plugins, job statistics

The subpackages' ``__init__`` files import nothing: import the module you need (``normscape.models.norms``).
"""

__version__ = "0.1.0"
