"""Errors a user can fix. The CLI prints their message, with no traceback, and exits 2."""


class RnnbenchError(Exception):
    """Base class of every error caused by user input (config, data files, servers)."""

    exit_code = 2


class ConfigError(RnnbenchError):
    """A config key or value that is unknown, out of range, or not allowed together."""


class DataError(RnnbenchError):
    """A data file or folder that is missing, empty, corrupt or of the wrong shape."""


class TrackingError(RnnbenchError):
    """The MLflow tracking store cannot be reached or written."""


class HardwareError(RnnbenchError):
    """The asked-for device, precision or backend is not available here."""


class RunFailed(RnnbenchError):
    """A run that started but could not finish (NaN loss or gradient). Recorded FAILED."""

    exit_code = 1
