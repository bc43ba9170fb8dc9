"""Every Keras object a saved seqlab model may name (layers, the text standardization, word pieces, optimizers,
schedules, losses): importing this module registers them all, so that `keras.saving.load_model` finds them."""

from __future__ import annotations

from seqlab.features import preprocess, wordpiece  # noqa: F401
from seqlab.models import layers  # noqa: F401
from seqlab.training import optimizers  # noqa: F401
