"""seqlab: config-driven experiment runner for sequence classification."""

__version__ = "0.1.0"
