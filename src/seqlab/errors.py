"""User-facing errors: one paragraph, no traceback, a distinct exit code."""

from seqlab.redaction import REDACTED, URI_CREDENTIALS, redact_uri  # noqa: F401 (messages are redacted too)


class SeqlabError(Exception):
    """An error caused by the user's input (config or data), reported without a traceback."""

    exit_code = 1


class ConfigError(SeqlabError):
    """A config key holds a value that is not allowed. Raised before any work starts."""

    exit_code = 2


class DataError(SeqlabError):
    """A data file or folder is missing, unreadable or not in the expected layout."""

    exit_code = 3


class Terminated(KeyboardInterrupt):
    """SIGTERM during a run, raised like Ctrl-C's KeyboardInterrupt so that the run ends KILLED, not RUNNING."""


class RecordingError(SeqlabError):
    """Part of a run's record (an epoch's metrics, its checkpoint, an artifact) could not be written to MLflow or
    read back from it; the run ends FAILED rather than FINISHED with a hole in its record."""

    exit_code = 4
