"""Exception types. A `GlidekitError` is a user-facing problem: the CLI prints its message as one
line and exits non-zero, without a traceback."""


class GlidekitError(Exception):
    """Base class for errors caused by user input or the environment (bad file, no network...)."""


class ConfigError(GlidekitError, ValueError):
    """An invalid or unknown configuration value."""


class CheckpointError(GlidekitError):
    """A checkpoint that cannot be read, is truncated, or is of the wrong model type."""


class DownloadError(GlidekitError):
    """A download that failed (no network, HTTP error, checksum mismatch)."""
