"""User-facing errors: each message says what is wrong, where (file, line or config key) and how to fix it."""


class GmptlError(Exception):
    """Base class of every error the workflow reports as one sentence instead of a traceback."""


class ConfigError(GmptlError):
    """A config value is missing, unknown or of the wrong type."""


class CorpusError(GmptlError):
    """The corpus tree or one of its label files is missing or malformed."""


class AudioError(GmptlError):
    """An audio file is missing, unreadable or has an unexpected format."""


class BackboneError(GmptlError):
    """A backbone model cannot be found or is of an unsupported kind."""


class FeatureError(GmptlError):
    """A feature or label HDF5 file is missing, corrupt or inconsistent."""


class KMeansError(GmptlError):
    """K-means cannot be fitted on the given frames."""


class TrainingError(GmptlError):
    """Training cannot start or cannot continue (bad labels, NaN loss, missing device)."""
