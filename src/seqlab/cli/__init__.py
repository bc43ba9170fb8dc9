"""The `seqlab` command (entry.py) and one module per command that is not Hydra's (predict, compare, ensemble)."""

from seqlab.cli.entry import main

__all__ = ["main"]
