"""Model registry: `model.name` -> builder. Each family lives in its own module and registers itself.

A builder takes the `model` config and an `InputSpec` and returns an uncompiled Functional model whose
input is word ids (named `tokens`, plus `metadata` where asked) and whose output is class probabilities.
"""

from __future__ import annotations

from typing import Callable

import keras

MODEL_BUILDERS: dict[str, Callable] = {}


def register(name: str):
    def decorator(builder):
        MODEL_BUILDERS[name] = builder
        return builder

    return decorator


def classifier_head(features, num_classes: int):
    """Sigmoid unit for two classes, softmax above; float32 so mixed precision keeps a stable loss."""
    if num_classes == 2:
        return keras.layers.Dense(1, activation="sigmoid", dtype="float32", name="probability")(features)
    return keras.layers.Dense(num_classes, activation="softmax", dtype="float32", name="probabilities")(features)


def loss_for(num_classes: int) -> str:
    return "binary_crossentropy" if num_classes == 2 else "sparse_categorical_crossentropy"


def build_model(model_cfg, spec) -> keras.Model:
    return MODEL_BUILDERS[model_cfg.name](model_cfg, spec)


# Importing the family modules fills the registry.
from seqlab.models import recurrent  # noqa: E402,F401
