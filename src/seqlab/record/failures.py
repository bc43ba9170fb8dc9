"""A failed write into the run's record, said as what could not be recorded (the run then ends FAILED with it)."""

from __future__ import annotations

import contextlib

from seqlab.errors import RecordingError


@contextlib.contextmanager
def named_failure(action: str, hint: str = ""):
    """Any exception in the block becomes a RecordingError "Could not `action`: <type>: <message>. `hint`"."""
    try:
        yield
    except Exception as error:  # whatever the store or the file system raises; Ctrl-C passes through
        raise RecordingError(f"Could not {action}: {type(error).__name__}: {error}"
                             + (f". {hint}" if hint else "")) from error
