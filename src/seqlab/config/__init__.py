"""The composed config, checked and resolved: Hydra's schemas (compose.py), the one check of every key before
anything runs (validate.py), and the immutable run plan that every stage receives its part of (plan.py)."""
