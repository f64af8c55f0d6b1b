"""normscape: how the normalisation layer of a transfer-learning head shapes optimisation.

Modules (one concept each):
  config      config validation (JSON schema + defaults) and the study's run matrix
  errors      user-facing error types
  atomic      atomic file writes (temp file + rename) so a killed job never leaves half a file
  runtime     the glue every workflow script uses (logging, threads, error reporting)
  heads       classifier heads and the normalisation layers (incl. Filter Response Normalization)
"""

__version__ = "0.1.0"
