"""normscape: how the normalisation layer of a transfer-learning head shapes optimisation.

Modules (one concept each):
  config      config validation (JSON schema + defaults) and the study's run matrix
  errors      user-facing error types
  atomic      atomic file writes (temp file + rename) so a killed job never leaves half a file
  runtime     the glue every workflow script uses (logging, threads, error reporting)
  norms       the norm registry: builder, label and colour of every head norm
  heads       classifier heads (Linear -> norm -> ReLU -> Dropout -> Linear); frn: Filter Response Normalization
  backbone    the backbone registry: any torchvision classifier as a frozen penultimate-feature extractor
  datasets    the dataset registry (cifar10, cifar100, imagefolder) and the prepared-data format
  paths       the run-path layout, stated once
"""

__version__ = "0.1.0"
