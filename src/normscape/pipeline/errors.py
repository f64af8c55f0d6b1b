"""User-facing errors.

Every expected failure (bad config, missing or corrupt input, checksum mismatch, ...) raises a subclass of
:class:`NormscapeError` whose message says what is wrong, which file or key, and how to fix it. The workflow
scripts print that message without a traceback (see :func:`normscape.pipeline.runtime.script_main`).
"""


class NormscapeError(Exception):
    """An expected, user-fixable failure. The message is shown to the user as is."""


class ConfigError(NormscapeError):
    """The configuration is invalid."""


class DataError(NormscapeError):
    """An input data file (archive, HDF5, checkpoint) is missing, corrupt or of the wrong layout."""


class ChecksumError(DataError):
    """A file's checksum differs from the expected one."""


class DownloadError(DataError):
    """A download failed (no network, HTTP error, interrupted transfer)."""


class WeightsError(NormscapeError):
    """Backbone weights are missing or do not fit the model."""


class DiskFullError(NormscapeError):
    """The disk (or quota) filled up while a job wrote its outputs."""
