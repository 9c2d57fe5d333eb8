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


class ProcessSpent(HardwareError):
    """This process cannot safely take another run (it is near the kernel's limit on
    memory mappings): a multirun it launched stops here instead of refusing each later
    job in turn, and the same command goes on in a fresh process."""

    reason = "the kernel's memory-map limit (vm.max_map_count)"


class RunFailed(RnnbenchError):
    """A run that started but could not finish (NaN loss or gradient). Recorded FAILED."""

    exit_code = 1
