"""Input pipelines: padded or length-bucketed `tf.data` batches (the cache of encoded splits: seqlab.features.cache).

Bucketing (`trainer.bucketing`): reviews are post-padded and masked, and each training batch holds reviews
of similar length, cut to the longest of them, so the recurrent layers run over far fewer padding steps.
Every epoch still sees each training example exactly once, in batches of `batch_size` (the last one may
be smaller), as the padded run does; only which examples share a batch, and its width, differ.
"""

from __future__ import annotations

import logging

import keras
import numpy as np
import tensorflow as tf

log = logging.getLogger(__name__)

TOKENS = "tokens"  # the word-id input of every flat model; with several inputs, the dict key that is bucketed
NUM_BUCKETS = 16  # derived boundaries: length quantiles (the padding left is about 6% of the steps on IMDB)


def bucket_boundaries(features, train_inputs) -> list[int] | None:
    """The run's bucket boundaries (`features`: the plan's FeaturePlan): None without bucketing, else the given ones
    (trainer.bucket_boundaries) or length quantiles of the training inputs."""
    if not features.bucketing:
        return None
    if features.bucket_boundaries is not None:
        return [int(b) for b in features.bucket_boundaries]
    return derive_boundaries(token_lengths(train_inputs), features.preprocess.max_length)


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
                         "the run plan sets preprocess.padding=post with buckets.")
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


# --- GPU kernels ------------------------------------------------------------------------------------


