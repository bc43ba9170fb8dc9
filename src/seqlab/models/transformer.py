"""Transformer encoders trained from scratch: over the words (`transformer`) or over a thread's messages
(`hier_transformer`, messages encoded as in hier_lstm).

Pre-norm blocks (LayerNorm -> MultiHeadAttention -> residual, LayerNorm -> feed-forward -> residual) as in
keras-io's text classification Transformer, with padding masked everywhere: attention never reads a padded
key, positions count from the first word (pre or post padding give the same positions) and pooling averages
the real positions only. So adding padding never changes a prediction (tests/test_models.py checks it).
"""

from __future__ import annotations

from dataclasses import dataclass

from seqlab.models.hierarchical import HierarchicalConfig
from seqlab.models.registry import ModelConfig, register
from seqlab.schema.rules import positive, rate, rule


@dataclass
class EncoderConfig:
    """The keys of the Transformer blocks, shared by both models."""

    layers: int = positive(2)  # encoder blocks
    heads: int = positive(4)  # attention heads per block
    ff_dim: int = positive(128)  # the feed-forward layer's width in each block
    pooling: str = rule("mean", choices=['mean', 'cls'])  # mean (over the real positions) | cls (a learned first vector, [CLS]-style)
    # learned position vectors: this many, or the longest input (max_length, max_units) where that is more
    max_positions: int = positive(512)


@dataclass
class TransformerConfig(ModelConfig, EncoderConfig):
    embedding_dim: int = positive(64)  # the model width: word vectors, positions and every block
    dropout: float = rate(0.1)  # after the embeddings, inside every block and before the classifier


@dataclass
class HierTransformerConfig(HierarchicalConfig, EncoderConfig):
    """Messages encoded by the word-level BiLSTM (2 x model.message_units wide), then Transformer blocks."""


def encoder(x, mask, cfg, max_positions: int):
    """Positions, `cfg.layers` blocks, final LayerNorm and pooling -> (batch, width) features."""
    from seqlab.models.layers import ClassToken, EncoderBlock, MaskedAverage, PositionEmbedding, layers

    if x.shape[-1] % cfg.heads:
        from seqlab.errors import ConfigError

        width = "2 x model.message_units" if "message_units" in cfg else "model.embedding_dim"
        raise ConfigError(f"Config key 'model.heads' is {cfg.heads}, which does not divide the model width "
                          f"{x.shape[-1]} ({width}); each head reads width / heads features.")
    x = PositionEmbedding(max_positions, name="positions")(x, mask)
    if cfg.pooling == "cls":
        x, mask = ClassToken(name="class_token")(x, mask)
    if cfg.dropout > 0:
        x = layers.Dropout(cfg.dropout, name="embedding_dropout")(x)
    for index in range(cfg.layers):
        x = EncoderBlock(cfg.heads, cfg.ff_dim, cfg.dropout, name=f"encoder_{index + 1}")(x, mask)
    x = layers.LayerNormalization(epsilon=1e-6, name="final_norm")(x)
    if cfg.pooling == "cls":
        x = x[:, 0, :]
    else:
        x = MaskedAverage(name="mean_over_positions")(x, mask=mask)
    if cfg.dropout > 0:
        x = layers.Dropout(cfg.dropout, name="dropout")(x)
    return x


@register("transformer", TransformerConfig, recurrent=False, bucketed=True, masks_padding=True)
def build_transformer(cfg, spec):
    """Word + position embeddings -> N pre-norm encoder blocks -> masked mean (or [CLS]) -> Dense."""
    from seqlab.models.layers import classifier_head, keras, layers, padding_mask, token_input

    tokens = token_input(spec)
    x = layers.Embedding(spec.vocab_size, cfg.embedding_dim, name="embedding")(tokens)
    x = encoder(x, padding_mask(tokens), cfg, max(cfg.max_positions, spec.max_length))
    return keras.Model(tokens, classifier_head(x, spec.num_classes), name=cfg.name)


@register("hier_transformer", HierTransformerConfig, hierarchical=True, masks_padding=True)
def build_hier_transformer(cfg, spec):
    """Message encoder (as hier_lstm) -> message positions -> N encoder blocks over the messages -> Dense."""
    from seqlab.models.hierarchical import encode_messages
    from seqlab.models.layers import classifier_head, keras, slot_mask, thread_input

    tokens = thread_input(spec)
    messages = encode_messages(tokens, cfg, spec)
    x = encoder(messages, slot_mask(tokens), cfg, max(cfg.max_positions, spec.sequence_shape[0]))
    return keras.Model(tokens, classifier_head(x, spec.num_classes), name=cfg.name)
