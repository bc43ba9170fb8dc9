"""Models: the registry (registry.py), the family modules that register their builders, and the catalog that
lists them all (catalog.py). Shared Keras layers are in layers.py."""
