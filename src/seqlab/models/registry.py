"""Model registry: `model.name` -> the model's config dataclass, its builder and its traits (filled by the
family modules, which seqlab.models.catalog imports).

A model registers itself where it is built (Ludwig's pattern), so adding one touches two places: its builder
with `@register(...)` in a module imported below, and `conf/model/<name>.yaml`. This package and the family
modules import no Keras at import time (builders import it), so config errors are reported in a second.

A builder takes the `model` config and an `InputSpec` and returns an uncompiled Functional model whose input is
word ids (named `tokens`, plus `metadata` where asked) and whose output is class probabilities.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

from omegaconf import MISSING

from seqlab.schema.registry import register_option
from seqlab.schema.rules import rule


@dataclass
class ModelConfig:
    """The keys every model has; each model's config adds its own (recurrent.RecurrentConfig, ...)."""

    name: str = MISSING
    metadata: bool = False  # a second input with the dataset's numeric metadata, next to the text features
    # Initial word vectors (and LSTM): pretrain (the run's pretrain group, trained or reused) | runs:/<id> of a
    # pretraining | models:/<name>/<version> | a GloVe/word2vec/fastText vectors file (seqlab.pretraining.vectors)
    pretrained: Optional[str] = None
    # With model.pretrained (null: 0 and 1.0, logged as such; without model.pretrained they do not apply):
    pretrained_frozen_epochs: Optional[int] = rule(None, low=0)  # the first N epochs leave the pretrained layers as they are
    pretrained_lr_multiplier: Optional[float] = rule(None, low=0)  # then they learn at this times trainer.learning_rate


@dataclass(frozen=True)
class ModelInfo:
    name: str
    config: type  # a ModelConfig subclass: exactly the keys this model reads
    build: Callable
    recurrent: bool  # runs LSTM/GRU steps (one thread per op on CPU, seqlab.config.plan and seqlab.training.runtime)
    hierarchical: bool  # reads units x words (preprocess=hierarchical, which its YAML selects)
    bucketed: bool  # trainer.bucketing=null turns length buckets on (measured to keep accuracy, or masks anyway)
    masks_padding: bool  # ignores padding whichever end it is on (pre or post padding give the same model)


MODELS: dict[str, ModelInfo] = {}


def register(name: str, config: type, *, recurrent: bool = True, hierarchical: bool = False, bucketed: bool = False,
             masks_padding: bool = False):
    """Register a builder under `name` with its config class and traits; the config's schema joins Hydra's."""
    if not issubclass(config, ModelConfig):
        raise TypeError(f"model {name!r}: its config {config.__name__} must subclass seqlab.models.ModelConfig")

    def decorator(build: Callable) -> Callable:
        register_option("model", name, config)
        MODELS[name] = ModelInfo(name, config, build, recurrent=recurrent, hierarchical=hierarchical,
                                 bucketed=bucketed, masks_padding=masks_padding)
        return build

    return decorator
