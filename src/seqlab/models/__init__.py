"""Model registry: `model.name` -> builder. Each family lives in its own module and registers itself.

A builder takes the `model` config and an `InputSpec` and returns an uncompiled Functional model whose
input is word ids (named `tokens`, plus `metadata` where asked) and whose output is class probabilities.
"""

from __future__ import annotations

from typing import Callable

import keras

MODEL_BUILDERS: dict[str, Callable] = {}
# Models that read units x words (preprocess=hierarchical, which their conf/model/*.yaml select).
HIERARCHICAL_MODELS: set[str] = set()
# Models without recurrent layers (every other one runs an LSTM or GRU somewhere).
NON_RECURRENT_MODELS = {"fasttext_bigram"}


def register(name: str, hierarchical: bool = False):
    def decorator(builder):
        MODEL_BUILDERS[name] = builder
        if hierarchical:
            HIERARCHICAL_MODELS.add(name)
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
    model = MODEL_BUILDERS[model_cfg.name](model_cfg, spec)
    return with_metadata(model, spec) if spec.metadata_dim else model


def with_metadata(model: keras.Model, spec) -> keras.Model:
    """`model.metadata=true` for any builder: a second input `metadata` (imputed, scaled numbers) concatenated
    with the features that the builder's classifier head reads, and a new head on both."""
    head = model.outputs[0]._keras_history.operation  # every builder ends in classifier_head
    metadata = keras.Input(shape=(spec.metadata_dim,), dtype="float32", name="metadata")
    features = keras.layers.Concatenate(name="text_and_metadata")([head.input, metadata])
    return keras.Model({"tokens": model.inputs[0], "metadata": metadata}, classifier_head(features, spec.num_classes),
                       name=model.name)


# Importing the family modules fills the registry.
from seqlab.models import recurrent  # noqa: E402,F401
from seqlab.models import attention, convolutional, fasttext  # noqa: E402,F401
from seqlab.models import hierarchical  # noqa: E402,F401
from seqlab import optimizers  # noqa: E402,F401  a model compiled with lazy_adam names it in its saved file
