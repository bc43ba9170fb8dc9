"""Which process trains a run (the seqlab.owner tag: host, pid, start time), and whether it is still alive."""

from __future__ import annotations

OWNER_TAG = "seqlab.owner"  # host:pid:start time of the process that trains the run (resume refuses a live one)


def process_owner(pid: int | None = None) -> str:
    """This process as a run's owner: its start time tells a live owner from a later process given the same pid."""
    import socket

    import psutil

    process = psutil.Process(pid)
    return f"{socket.gethostname()}:{process.pid}:{int(process.create_time())}"


def owner_parts(owner: str) -> tuple[str, str, str]:
    """host, pid and start time of a `process_owner` value ('' for what a malformed one lacks)."""
    host, pid, started = (owner.rsplit(":", 2) + ["", ""])[:3]
    return host, pid, started


def owner_state(owner: str) -> str:
    """'alive' or 'gone' for an owner on this host, 'elsewhere' for one on another host (unknowable from here)."""
    import socket

    import psutil

    host, pid, started = owner_parts(owner)
    if host != socket.gethostname():
        return "elsewhere"
    try:
        alive = int(psutil.Process(int(pid)).create_time()) == int(started)
    except (psutil.Error, ValueError):  # no such process (any more)
        alive = False
    return "alive" if alive else "gone"
