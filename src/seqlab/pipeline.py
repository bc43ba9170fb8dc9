"""Input pipelines: padded or length-bucketed `tf.data` batches, and the tokenized-data cache.

Bucketing (`trainer.bucketing`): reviews are post-padded and masked, and each training batch holds reviews
of similar length, cut to the longest of them, so the recurrent layers run over far fewer padding steps.
Every epoch still sees each training example exactly once, in batches of `batch_size` (the last one may
be smaller), as the padded run does; only which examples share a batch, and its width, differ.

The cache: tokenizing 50,000 reviews takes seconds, so the encoded splits and the fitted vocabulary are
kept on disk under the cache dir, keyed by what the encoding depends on, and a sweep's later runs load
them instead.
"""

from __future__ import annotations

import logging
import copy
import hashlib
import json
import os
import tempfile
import zipfile
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf
from omegaconf import DictConfig, OmegaConf

import seqlab
from seqlab.data.common import cache_root
from seqlab.errors import ConfigError
from seqlab.preprocess import PREPROCESSORS, HierarchicalPreprocessor, make_preprocessor

log = logging.getLogger(__name__)

TOKENS = "tokens"  # the word-id input of every flat model; with several inputs, the dict key that is bucketed
NUM_BUCKETS = 16  # derived boundaries: length quantiles (the padding left is about 6% of the steps on IMDB)


# --- configuration ----------------------------------------------------------------------------------

def resolve_bucketing(cfg: DictConfig, default: bool | None = None) -> DictConfig:
    """The config with `trainer.bucketing` decided and, when on, `preprocess.padding=post`, so that the logged params
    say what ran. Raises ConfigError where it cannot apply.

    Null means `default` where given (a sweep across models keeps one batching for all), else the model's
    `bucketed` trait (seqlab.models.register): the tutorial LSTM, measured to keep its accuracy, and the models
    that mask their padding anyway, for which only the batches' make-up changes.
    """
    from seqlab.models import model_info

    t = cfg.trainer
    hierarchical = issubclass(PREPROCESSORS[cfg.preprocess.name], HierarchicalPreprocessor)  # no TF object yet
    if t.bucketing and hierarchical:
        raise ConfigError(f"trainer.bucketing=true needs one sequence of words per example, but preprocess="
                          f"{cfg.preprocess.name} gives units x words (hierarchical inputs are already short per "
                          "unit). Set trainer.bucketing=false or leave it null.")
    if t.bucketing is not None:
        bucketing = t.bucketing
    else:
        bucketing = (model_info(cfg.model.name).bucketed if default is None else default) and not hierarchical
    resolved = copy.deepcopy(cfg)
    resolved.trainer.bucketing = bool(bucketing)
    if bucketing and resolved.preprocess.padding != "post":
        resolved.preprocess.padding = "post"  # buckets pad at the end; masks hide it from the model
    return resolved


def bucket_boundaries(cfg: DictConfig, train_inputs) -> list[int] | None:
    """The run's bucket boundaries: None without bucketing, else `trainer.bucket_boundaries` or derived ones."""
    if not cfg.trainer.bucketing:
        return None
    if cfg.trainer.bucket_boundaries is not None:
        return [int(b) for b in cfg.trainer.bucket_boundaries]
    return derive_boundaries(token_lengths(train_inputs), cfg.preprocess.max_length)


def derive_boundaries(lengths: np.ndarray, max_length: int, num_buckets: int = NUM_BUCKETS) -> list[int]:
    """Length quantiles rounded up to multiples of 8, plus `max_length` so truncated examples share a bucket."""
    quantiles = np.quantile(lengths, np.arange(1, num_buckets) / num_buckets) if len(lengths) else []
    rounded = {int(np.ceil(q / 8) * 8) for q in quantiles}
    return sorted(b for b in rounded if 0 < b < max_length) + [int(max_length)]


# --- datasets ---------------------------------------------------------------------------------------

def token_lengths(inputs) -> np.ndarray:
    """Words per example of post-padded word ids (padding is id 0 and only at the end)."""
    tokens = np.asarray(inputs[TOKENS] if isinstance(inputs, dict) else inputs)
    words = tokens != 0
    lengths = words.sum(axis=1)
    if not np.array_equal(words, np.arange(tokens.shape[1]) < lengths[:, None]):
        raise ValueError("Length buckets need post-padded word ids (zeros only at the end); got pre padding. "
                         "resolve_bucketing() sets preprocess.padding=post.")
    return lengths


def make_dataset(inputs, labels, batch_size: int, seed: int | None = None,
                 boundaries: list[int] | None = None, pad_to_boundaries: bool = False) -> tf.data.Dataset:
    """Batches of (inputs, labels); shuffled every epoch with `seed` when given (training data).

    `inputs` is an array or a dict of arrays (several model inputs). With `boundaries`, the batches are
    length-bucketed and cut to their longest example (to the bucket's upper boundary with `pad_to_boundaries`,
    so that XLA sees a few shapes only); without `seed` they come in length order (evaluation: metrics do not
    depend on the order; `predict()` restores it).
    """
    if boundaries is None:
        dataset = tf.data.Dataset.from_tensor_slices((inputs, labels))
        if seed is not None:
            dataset = dataset.shuffle(len(labels), seed=seed, reshuffle_each_iteration=True)
        return dataset.batch(batch_size).prefetch(tf.data.AUTOTUNE)
    lengths = token_lengths(inputs)
    if seed is None:
        batches = tf.data.Dataset.from_tensor_slices(np.argsort(lengths, kind="stable")).batch(batch_size)
    else:
        batches = bucketed_batches(lengths, boundaries, batch_size, seed)
    # stateless, so op determinism keeps it parallel (tokenizing's stateful map would be made sequential)
    gather = _gatherer(inputs, labels, lengths, boundaries, pad_to_boundaries)
    return batches.map(gather, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True).prefetch(tf.data.AUTOTUNE)


def bucketed_batches(lengths: np.ndarray, boundaries: list[int], batch_size: int, seed: int) -> tf.data.Dataset:
    """Each epoch, the example indices of every batch: a seeded permutation, grouped by bucket; full batches
    within each bucket, then the buckets' remainders (in bucket order, so still of similar lengths); then the
    batches in a seeded random order.

    Unlike `tf.data`'s `bucket_by_sequence_length`, no bucket's part-filled batch is left to the end of the
    epoch: those gave the last updates of every epoch a handful of examples each.
    """
    count = len(lengths)
    bucket_of = tf.constant(np.searchsorted(boundaries, lengths, side="right"), tf.int32)
    num_buckets = len(boundaries) + 1

    def plan(permutation):
        permutation = tf.cast(permutation, tf.int32)
        buckets = tf.gather(bucket_of, permutation)
        grouped = tf.gather(permutation, tf.argsort(buckets, stable=True))  # by bucket, random within one
        sizes = tf.math.bincount(buckets, minlength=num_buckets, dtype=tf.int32)
        starts = tf.cumsum(sizes, exclusive=True)
        rank_in_bucket = tf.range(count) - tf.repeat(starts, sizes)
        in_full_batch = rank_in_bucket < tf.repeat(sizes // batch_size * batch_size, sizes)
        ordered = tf.concat([tf.boolean_mask(grouped, in_full_batch),
                             tf.boolean_mask(grouped, tf.logical_not(in_full_batch))], axis=0)
        row_lengths = tf.concat([tf.fill([count // batch_size], batch_size), [count % batch_size]], axis=0)
        row_lengths = tf.boolean_mask(row_lengths, row_lengths > 0)
        return tf.data.Dataset.from_tensor_slices(tf.RaggedTensor.from_row_lengths(ordered, row_lengths))

    permutations = tf.data.Dataset.range(count).shuffle(count, seed=seed, reshuffle_each_iteration=True).batch(count)
    num_batches = -(-count // batch_size)  # as many as padded batches; Keras then knows an epoch's steps
    batches = permutations.flat_map(plan).apply(tf.data.experimental.assert_cardinality(num_batches))
    return batches.shuffle(num_batches, seed=seed + 1, reshuffle_each_iteration=True)


def _gatherer(inputs, labels, lengths, boundaries, pad_to_boundaries):
    """A map from a batch's indices to its (inputs, labels), the word ids cut to the batch's width."""
    # Eager tensors are captured by reference by tf.data functions (numpy arrays would be copied into the graph).
    longest = int(np.max(lengths, initial=1))
    widths = tf.constant([b - 1 for b in boundaries if 0 < b - 1 < longest] + [longest], tf.int32)  # buckets' longest
    inputs = tf.nest.map_structure(tf.constant, inputs)
    labels, lengths = tf.constant(labels), tf.constant(lengths, tf.int32)

    def take(indices):
        width = tf.maximum(tf.reduce_max(tf.gather(lengths, indices)), 1)
        if pad_to_boundaries:
            width = tf.gather(widths, tf.searchsorted(widths, [width], side="left"))[0]

        def rows(key, array):
            batch = tf.gather(array, indices)
            return batch[:, :width] if key in (None, TOKENS) else batch

        if isinstance(inputs, dict):
            batch_inputs = {key: rows(key, array) for key, array in inputs.items()}
        else:
            batch_inputs = rows(None, inputs)
        return batch_inputs, tf.gather(labels, indices)

    return take


def predict(model: keras.Model, inputs, batch_size: int, boundaries: list[int] | None = None) -> np.ndarray:
    """`model.predict` in the inputs' order; with `boundaries`, over length-sorted batches (less padding)."""
    count = len(inputs[TOKENS] if isinstance(inputs, dict) else inputs)
    dataset = make_dataset(inputs, np.zeros(count, np.int32), batch_size, boundaries=boundaries)
    outputs = model.predict(dataset, verbose=0)
    if boundaries is None:
        return outputs
    restored = np.empty_like(outputs)
    restored[np.argsort(token_lengths(inputs), kind="stable")] = outputs
    return restored


# --- tokenized-data cache ---------------------------------------------------------------------------

def encode_splits(cfg: DictConfig, data) -> tuple[object, list[np.ndarray], bool]:
    """(fitted preprocessor, [train, validation, test] word ids, whether they came from the cache).

    The key covers everything the encoding depends on: the texts of every split (so the data files, the
    dataset options and the seed, through the sampling they select), the preprocess config and the
    seqlab/TensorFlow versions. The fitted vocabulary is cached too, so a cached run logs the same model.
    """
    preprocessor = make_preprocessor(cfg.preprocess)
    splits = (data.train, data.validation, data.test)
    if not hasattr(preprocessor, "vectorizer"):  # fitted state other than a vocabulary: not cacheable here
        preprocessor.fit(data.train.texts)
        return preprocessor, [preprocessor.encode(split.texts) for split in splits], False
    path = cache_root(cfg.cache_dir) / "tokens" / f"{cache_key(cfg.preprocess, splits)}.npz"
    cached = _read(path)
    if cached is not None:
        vocabulary, arrays = cached
        preprocessor.vectorizer.set_vocabulary(vocabulary)
        return preprocessor, arrays, True
    preprocessor.fit(data.train.texts)
    arrays = [preprocessor.encode(split.texts) for split in splits]
    _write(path, preprocessor.vectorizer.get_vocabulary(), arrays, cfg.preprocess.vocab_size)
    return preprocessor, arrays, False


def cache_key(preprocess_cfg, splits) -> str:
    digest = hashlib.sha256(json.dumps({
        "seqlab": seqlab.__version__, "tensorflow": tf.__version__, "keras": keras.__version__,
        "preprocess": OmegaConf.to_container(preprocess_cfg, resolve=True)}, sort_keys=True).encode())
    for split in splits:
        digest.update(f"|{len(split.texts)}|".encode())
        digest.update("\x00".join(split.texts).encode("utf-8", "surrogatepass"))
    return digest.hexdigest()[:24]


SPLITS = ("train", "validation", "test")


def _read(path: Path):
    """(vocabulary, arrays) from a cache file, or None when it is missing or unreadable (then rewritten)."""
    if not path.exists():
        return None
    try:
        with np.load(path) as stored:
            vocabulary = json.loads(stored["vocabulary"].tobytes().decode("utf-8"))
            return vocabulary, [stored[name].astype(np.int32) for name in SPLITS]
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
        return None


def _write(path: Path, vocabulary: list[str], arrays: list[np.ndarray], vocab_size: int) -> None:
    """Written to a temporary file and renamed: parallel sweep jobs never read half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    dtype = np.uint16 if vocab_size <= np.iinfo(np.uint16).max else np.int32  # halves the file for the usual sizes
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=".tokens-", suffix=".npz")
    try:
        with os.fdopen(handle, "wb") as file:
            np.savez(file, vocabulary=np.frombuffer(json.dumps(vocabulary).encode("utf-8"), np.uint8),
                     **{name: array.astype(dtype) for name, array in zip(SPLITS, arrays)})
        os.chmod(temporary, 0o644)  # mkstemp makes it private; the cache is as readable as its folder
        os.replace(temporary, path)
    except OSError as error:  # a full or read-only cache costs the next run time, never this run
        Path(temporary).unlink(missing_ok=True)
        log.warning(f"could not write the tokenized-data cache {path}: {error}")


# --- GPU kernels ------------------------------------------------------------------------------------

def recurrent_kernels(model: keras.Model, device: str) -> str:
    """Which kernel each LSTM/GRU layer runs: 'cudnn' or 'generic' on GPU, by Keras' own conditions (tanh and
    sigmoid activations, a bias, no unroll, no recurrent dropout, GRU reset_after); 'cpu' on CPU, 'none'
    without a recurrent layer. One word when all agree, else 'layer:kernel, ...'.
    """
    kernels = {}
    for layer in _flatten_layers(model):
        if not isinstance(layer, (keras.layers.LSTM, keras.layers.GRU)):
            continue
        if device != "gpu":
            kernels[layer.name] = "cpu"
            continue
        cell = layer.cell
        supported = (layer.use_cudnn in ("auto", True) and not cell.recurrent_dropout and not layer.unroll
                     and cell.use_bias and cell.activation is keras.activations.tanh
                     and cell.recurrent_activation is keras.activations.sigmoid
                     and (isinstance(layer, keras.layers.LSTM) or cell.reset_after))
        kernels[layer.name] = "cudnn" if supported else "generic"
    if not kernels:
        return "none"
    if len(set(kernels.values())) == 1:
        return next(iter(kernels.values()))
    return ", ".join(f"{name}:{kernel}" for name, kernel in kernels.items())


def _flatten_layers(layer):
    for inner in getattr(layer, "layers", []):  # a model's layers, nested models included
        if isinstance(inner, keras.layers.Bidirectional):
            yield from (inner.forward_layer, inner.backward_layer)
        else:
            yield inner
            yield from _flatten_layers(inner)
