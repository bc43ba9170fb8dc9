"""What a Keras mask costs per LSTM step on CPU, and what was tried to get it back (docs/speed.md).

Trains the tutorial LSTM (Embedding(5000, 32) -> LSTM(100) -> Dense) with `train_on_batch` on the same
length-bucketed IMDB batches (seqlab's pipeline, post padding), the variants in turn, batch by batch, in one
process, so that all see the same machine speed (this machine's single-thread speed drifts 2x within minutes):

- `masked`: what seqlab's buckets run (Keras' masked loop: a `tf.where` per output and state, per step);
- `unmasked`: the same batches without masks: the step cost without masks (its results are not the masked ones);
- `padded_500`: the same reviews padded to 500, no masks: the tutorial's padded run;
- `split_loop`: an exact alternative tried here: the loop runs unmasked over the steps every review in the batch
  has, then masked over the rest (outputs and gradients are checked equal to `masked`).

    SEQLAB_DATA_DIR=../shared/data .venv/bin/python scripts/bench_masks.py --batches 100 --buckets 16   # 1-2 min
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from bench_speed import plan_with_threads  # noqa: E402


class SplitMaskedLoop(keras.layers.RNN):
    """The RNN loop split in two: unmasked over the leading steps valid in every row, masked over the rest.

    Exact for any mask: when no step is valid in every row, the first part is one step long and rows that were
    padding there keep their initial state, as the masked loop would. Keras' cuDNN path (GPU) is untouched:
    `LSTM.inner_loop` only falls back to this generic loop where cuDNN does not apply.
    """

    def inner_loop(self, sequences, initial_state, mask, training=False):
        mask = mask[0] if isinstance(mask, (list, tuple)) else mask
        if mask is None or (self.return_sequences and not self.zero_output_for_mask):
            return super().inner_loop(sequences, initial_state, mask, training)
        mask = tf.cast(mask, tf.bool)
        initial_state = list(initial_state) if isinstance(initial_state, (list, tuple)) else [initial_state]
        # one padding step more, read last, so that the masked part is never empty
        sequences = tf.concat([sequences, tf.zeros_like(sequences[:, :1])], axis=1)
        mask = tf.concat([mask, tf.zeros_like(mask[:, :1])], axis=1)
        leading = tf.reduce_sum(tf.math.cumprod(tf.cast(tf.reduce_all(mask, axis=0), tf.int32)))
        first = tf.maximum(leading, 1)
        _, outputs_a, states = super().inner_loop(sequences[:, :first], initial_state, None, training)
        states = [tf.where(mask[:, :1], state, state0) for state, state0 in zip(states, initial_state)]
        _, outputs_b, states = super().inner_loop(sequences[:, first:], states, mask[:, first:], training)
        if self.return_sequences:
            outputs_a = tf.where(mask[:, :first, None], outputs_a, tf.zeros_like(outputs_a))
            return states[0], tf.concat([outputs_a, outputs_b], axis=1)[:, :-1], states
        return states[0], tf.expand_dims(states[0], 1), states


class SplitLoopLSTM(keras.layers.LSTM, SplitMaskedLoop):  # LSTM.inner_loop -> (no cuDNN) -> SplitMaskedLoop
    pass


def tutorial_lstm(lstm=keras.layers.LSTM, mask_zero: bool = True) -> keras.Model:
    model = keras.Sequential([keras.Input(shape=(None,), dtype="int32"),
                              keras.layers.Embedding(5000, 32, mask_zero=mask_zero), lstm(100),
                              keras.layers.Dense(1, activation="sigmoid")])
    model.compile(loss="binary_crossentropy", optimizer="adam")
    return model


def largest_difference(reference: keras.Model, other: keras.Model, tokens) -> tuple[float, float]:
    """Largest |difference| of outputs and of gradients, the two models holding the same weights."""
    other.set_weights(reference.get_weights())
    with tf.GradientTape(persistent=True) as tape:
        outputs = [model(tokens, training=True) for model in (reference, other)]
        losses = [tf.reduce_sum(output ** 2) for output in outputs]
    gradients = [tape.gradient(loss, model.trainable_weights) for loss, model in zip(losses, (reference, other))]
    output_difference = float(tf.reduce_max(tf.abs(outputs[0] - outputs[1])))
    gradient_difference = max(float(tf.reduce_max(tf.abs(tf.convert_to_tensor(a) - tf.convert_to_tensor(b))))
                              for a, b in zip(*gradients))
    return output_difference, gradient_difference


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batches", type=int, default=100, help="training batches per variant")
    parser.add_argument("--buckets", type=int, default=16, help="length quantiles (seqlab's default: 16)")
    parser.add_argument("--max-length", type=int, default=500)
    parser.add_argument("--seed", type=int, default=42)
    args = parser.parse_args()

    from seqlab.data import load_dataset
    from seqlab.features import pipeline
    from seqlab.features.cache import encode_splits

    # the plan of a CPU machine (gpus=0): seqlab's CPU setting for the LSTM, one thread per op
    plan, _ = plan_with_threads([f"preprocess.max_length={args.max_length}", "preprocess.padding=post", "model=lstm"])
    data = load_dataset(plan.data)
    _, (x_train, _, _), _ = encode_splits(plan.features, data)
    boundaries = pipeline.derive_boundaries(pipeline.token_lengths(x_train), args.max_length, args.buckets)
    dataset = pipeline.make_dataset(x_train, data.train.labels, 64, seed=args.seed, boundaries=boundaries)
    batches = list(dataset.take(args.batches))

    def padded(tokens):
        return tf.pad(tokens, [[0, 0], [0, args.max_length - int(tokens.shape[1])]])

    variants = {"masked": (tutorial_lstm(), lambda tokens: tokens),
                "unmasked": (tutorial_lstm(mask_zero=False), lambda tokens: tokens),
                f"padded_{args.max_length}": (tutorial_lstm(mask_zero=False), padded),
                "split_loop": (tutorial_lstm(SplitLoopLSTM), lambda tokens: tokens)}
    output_difference, gradient_difference = largest_difference(variants["masked"][0], variants["split_loop"][0],
                                                                batches[0][0])
    for model, feed in variants.values():
        for tokens, labels in batches[:3]:  # untimed: tracing
            model.train_on_batch(feed(tokens), labels)
    seconds = dict.fromkeys(variants, 0.0)
    names = list(variants)
    for index, (tokens, labels) in enumerate(batches):
        for name in names[index % len(names):] + names[:index % len(names)]:  # rotate who goes first
            model, feed = variants[name]
            fed = feed(tokens)
            started = time.perf_counter()
            model.train_on_batch(fed, labels)
            seconds[name] += time.perf_counter() - started

    width = float(np.mean([int(tokens.shape[1]) for tokens, _ in batches]))
    shortest = float(np.mean([int((tokens.numpy() != 0).sum(axis=1).min()) / int(tokens.shape[1])
                              for tokens, _ in batches]))
    padded_name = f"padded_{args.max_length}"
    print(f"{len(batches)} bucketed batches of 64 ({len(boundaries)} buckets), mean width {width:.0f}, "
          f"{args.max_length / width:.2f}x fewer steps than padding to {args.max_length}; the steps every review "
          f"of a batch has: {shortest:.0%} of its width")
    for name in names:
        steps = args.max_length if name == padded_name else width
        milliseconds = 1000 * seconds[name] / len(batches)
        print(f"  {name:12s} {milliseconds:6.1f} ms per batch, {milliseconds / steps:.3f} ms per step, "
              f"{padded_name} / this: {seconds[padded_name] / seconds[name]:.2f}x")
    print(f"  masks cost {seconds['masked'] / seconds['unmasked'] - 1:+.1%} per batch; split_loop against masked: "
          f"{seconds['split_loop'] / seconds['masked'] - 1:+.1%}, largest difference in outputs "
          f"{output_difference:.1e} and gradients {gradient_difference:.1e}")


if __name__ == "__main__":
    main()
