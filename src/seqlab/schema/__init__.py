"""The config's schema: typed dataclasses with their rules on the fields (rules.py), the root groups (root.py) and
the one registry of group options (registry.py). Standard library and OmegaConf only: no Keras, no pandas."""
