"""User-facing errors: one paragraph, no traceback, a distinct exit code; and how they and status lines are shown."""

import logging
import os
import sys
import traceback

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


class DivergedError(SeqlabError):
    """Training produced a NaN or infinite loss: the run stops there instead of training on garbage."""

    exit_code = 5


class Terminated(KeyboardInterrupt):
    """SIGTERM during a run, raised like Ctrl-C's KeyboardInterrupt so that the run ends KILLED, not RUNNING."""


class RecordingError(SeqlabError):
    """Part of a run's record (an epoch's metrics, its checkpoint, an artifact) could not be written to MLflow or
    read back from it; the run ends FAILED rather than FINISHED with a hole in its record."""

    exit_code = 4


# --- presentation: what the user sees on stderr ------------------------------------------------------------

class StatusFormatter(logging.Formatter):
    """`seqlab: <message>`, `seqlab: warning: <message>`: seqlab's status lines on stderr (Hydra's job logging and
    `seqlab predict`/`compare` use it). Other libraries' records also name their logger."""

    def format(self, record: logging.LogRecord) -> str:
        level = "" if record.levelno < logging.WARNING else f"{record.levelname.lower()}: "
        source = "" if record.name == "seqlab" or record.name.startswith("seqlab.") else f"{record.name}: "
        return redact_uri(f"seqlab: {level}{source}{record.getMessage()}")


def report_error(error: BaseException, where: str = "") -> int:
    """One paragraph on stderr (the traceback too with SEQLAB_DEBUG=1); returns the exit code."""
    if os.environ.get("SEQLAB_DEBUG"):
        traceback.print_exception(error)
    if isinstance(error, SeqlabError):
        code, message = error.exit_code, str(error)
    else:  # a bug rather than bad input: still no traceback unless asked for
        code, message = 1, (f"unexpected {type(error).__name__}: {error}. Set SEQLAB_DEBUG=1 to see the traceback "
                            "(and please report it).")
    print(f"seqlab: {where}error: {redact_uri(message)}", file=sys.stderr, flush=True)
    return code


def report_interrupt(error: KeyboardInterrupt, command: str = "train") -> int:
    """What Ctrl-C or SIGTERM did to `command`'s run, on stderr; returns the exit code a shell would show."""
    terminated = isinstance(error, Terminated)
    after = " and continues with trainer.resume=<run_id>" if command == "train" else ""
    print(f"seqlab: {'terminated (SIGTERM)' if terminated else 'interrupted (Ctrl-C)'}; a started run is marked "
          f"KILLED{after}.", file=sys.stderr, flush=True)
    return 143 if terminated else 130  # 128 + the signal's number, as shells report it
