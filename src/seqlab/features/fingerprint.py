"""The fingerprint of a run's encoded inputs: a resumed run must see the very same data."""

from __future__ import annotations

import hashlib

import numpy as np


def data_fingerprint(*arrays) -> str:
    """SHA-256 (16 hex digits) of the encoded splits and labels (arrays, or dicts and lists of them)."""
    digest = hashlib.sha256()

    def add(value):
        if isinstance(value, dict):  # several model inputs
            for key in sorted(value):
                digest.update(str(key).encode())
                add(value[key])
        elif isinstance(value, (list, tuple)):
            for item in value:
                add(item)
        else:
            array = np.ascontiguousarray(value)
            digest.update(f"{array.dtype}{array.shape}".encode())
            digest.update(array.tobytes())

    for array in arrays:
        add(array)
    return digest.hexdigest()[:16]
