"""Ctrl-C and SIGTERM during a run: raised as KeyboardInterrupt / Terminated (remembered, in case TensorFlow
swallows them), or held while an epoch is written."""

from __future__ import annotations

import contextlib
import signal
import threading

from seqlab.errors import Terminated


def _main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()  # only there can Python handle signals


_interrupted: list[int] = []  # signals received during the run, kept in case their exception was swallowed


def _raise_interrupt(signum: int, frame=None):
    if signum not in _interrupted:
        _interrupted.append(signum)
    raise Terminated("SIGTERM") if signum == signal.SIGTERM else KeyboardInterrupt


@contextlib.contextmanager
def _interrupt_handlers(handler):
    """`handler` for SIGINT and SIGTERM during the block, the previous ones after it (main thread only)."""
    if not _main_thread():
        yield
        return
    previous = {number: signal.signal(number, handler) for number in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for number, old in previous.items():
            signal.signal(number, old if old is not None else signal.SIG_DFL)


@contextlib.contextmanager
def interrupts_raised():
    """Ctrl-C raises KeyboardInterrupt and SIGTERM raises Terminated (one too) instead of killing the process on
    the spot, and both are remembered: TensorFlow's C++ fast path calls back into Python and drops what that
    raises (seen: Ctrl-C landing in TensorShape.__len__ while an epoch's iterator is made), so the trainer asks
    `raise_if_interrupted()` again at every batch."""
    _interrupted.clear()
    try:
        with _interrupt_handlers(_raise_interrupt):
            yield
    finally:
        _interrupted.clear()


def raise_if_interrupted() -> None:
    """Raise again a Ctrl-C or SIGTERM received during the run, in case something swallowed its exception."""
    if _interrupted:
        _raise_interrupt(_interrupted[0])


@contextlib.contextmanager
def interrupts_deferred():
    """Hold SIGINT and SIGTERM until the block ends, so that an epoch's metrics and checkpoint are written whole."""
    received: list[int] = []
    try:
        with _interrupt_handlers(lambda signum, frame: received.append(signum)):
            yield
    finally:
        if received:
            signal.raise_signal(received[0])  # delivered now, to the usual handler (KeyboardInterrupt/Terminated)
