"""TF_CPP_MIN_LOG_LEVEL for the lines TensorFlow writes while its libraries load.

TensorFlow 2.21 writes a few C++ log lines from static initializers, before it reads TF_CPP_MIN_LOG_LEVEL
(absl's "All log messages before absl::InitializeLog() ..." note, "I0000 ... port.cc] oneDNN custom operations
are on"), so the variable alone cannot hide them. `import tensorflow` therefore runs with stderr captured, and
what it wrote comes back without the log lines below that level; anything else (Python warnings, FATAL lines)
comes back unchanged.
"""

from __future__ import annotations

import contextlib
import importlib.abc
import importlib.util
import os
import re
import sys
import tempfile

SEVERITIES = "IWEF"  # absl's line prefixes; TF_CPP_MIN_LOG_LEVEL=n hides the first n of them
LOG_LINE = re.compile(r"([IWEF])\d{4} [\d:.]+ +\d+ [^\s:]+:\d+\] ")
ABSL_PRE_INIT_NOTE = "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR"


def min_log_level() -> int:
    try:
        return int(os.environ.get("TF_CPP_MIN_LOG_LEVEL", "0"))
    except ValueError:  # TensorFlow treats what it cannot parse as 0
        return 0


def shown(text: str, level: int) -> str:
    """`text` without the C++ log lines that TF_CPP_MIN_LOG_LEVEL=`level` hides."""
    def hidden(line: str) -> bool:
        record = LOG_LINE.match(line)
        if record:
            return SEVERITIES.index(record.group(1)) < level
        return level > 0 and line.startswith(ABSL_PRE_INIT_NOTE)

    return "".join(line for line in text.splitlines(keepends=True) if not hidden(line))


@contextlib.contextmanager
def stderr_filtered(level: int):
    """File descriptor 2 (C++ writes there, not to sys.stderr) captured, then written back through `shown`."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            sys.stderr.write(shown(captured.read().decode("utf-8", errors="replace"), level))
            sys.stderr.flush()


class _FilteredLoader(importlib.abc.Loader):
    """TensorFlow's own loader, its module executed inside `stderr_filtered`."""

    def __init__(self, loader, level: int):
        self.loader, self.level = loader, level

    def create_module(self, spec):
        return self.loader.create_module(spec)

    def exec_module(self, module) -> None:
        module.__spec__.loader = module.__loader__ = self.loader  # the module keeps TensorFlow's real loader
        with stderr_filtered(self.level):
            self.loader.exec_module(module)


class _TensorflowImportFinder(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name != "tensorflow":
            return None
        sys.meta_path.remove(self)  # once; the regular finders find it
        spec = importlib.util.find_spec(name)
        level = min_log_level()
        if spec is not None and spec.loader is not None and level > 0:
            spec.loader = _FilteredLoader(spec.loader, level)
        return spec


def filter_tensorflow_import() -> None:
    """Before TensorFlow is imported: its load-time log lines obey TF_CPP_MIN_LOG_LEVEL as its later ones do."""
    if "tensorflow" in sys.modules or any(isinstance(f, _TensorflowImportFinder) for f in sys.meta_path):
        return
    sys.meta_path.insert(0, _TensorflowImportFinder())
