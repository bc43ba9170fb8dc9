"""The optimisation side of a run: `trainer.optimizer=lazy_adam`, `trainer.schedule`, `trainer.label_smoothing`.

`lazy_adam` is Adam whose sparse gradients update only the rows they touch.

Keras 3's Adam turns an embedding's sparse gradient (`tf.IndexedSlices`) into a dense update of the whole
table and both its moment tables. For fasttext_bigram's 1M-row bigram table that is about 0.2 GB of
memory traffic per step, most of an epoch's time on a CPU. Lazy Adam (as TF Addons' LazyAdam did, which
has no Keras 3 version) updates the moments and weights of the rows in the batch only; dense gradients
get Keras' own Adam step, unchanged. The difference from Adam: a row's moments do not decay in steps
where the row is absent, the usual trade for sparse embeddings.
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from seqlab.models.layers import loss_for


@keras.saving.register_keras_serializable(package="seqlab")
class LazyAdam(keras.optimizers.Adam):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if self.amsgrad:
            raise ValueError("LazyAdam does not implement amsgrad; use keras.optimizers.Adam(amsgrad=True).")

    def update_step(self, gradient, variable, learning_rate):
        if not isinstance(gradient, tf.IndexedSlices):
            return super().update_step(gradient, variable, learning_rate)
        dtype = variable.dtype
        rows, position = tf.unique(gradient.indices)  # a word seen twice in the batch: one summed update
        values = tf.math.unsorted_segment_sum(tf.cast(gradient.values, dtype), position, tf.shape(rows)[0])
        step = tf.cast(self.iterations + 1, dtype)
        beta_1, beta_2 = tf.cast(self.beta_1, dtype), tf.cast(self.beta_2, dtype)
        alpha = tf.cast(learning_rate, dtype) * tf.sqrt(1 - tf.pow(beta_2, step)) / (1 - tf.pow(beta_1, step))
        index = self._get_variable_index(variable)
        m, v = self._momentums[index], self._velocities[index]
        m_rows = beta_1 * tf.gather(m.value, rows) + (1 - beta_1) * values
        v_rows = beta_2 * tf.gather(v.value, rows) + (1 - beta_2) * tf.square(values)
        self.assign(m, tf.IndexedSlices(m_rows, rows))  # scatter_update in Keras' TensorFlow optimizer
        self.assign(v, tf.IndexedSlices(v_rows, rows))
        self.assign_sub(variable, tf.IndexedSlices(alpha * m_rows / (tf.sqrt(v_rows) + self.epsilon), rows))


OPTIMIZERS = {"lazy_adam": LazyAdam}


def scale_learning_rate(optimizer: keras.optimizers.Optimizer, variables: list, multiplier: float) -> tf.Variable:
    """Multiply the learning rate of `variables` (the pretrained layers) by a variable that starts at `multiplier`;
    returns it, so a callback can set it to 0 (frozen) and back. Keras has no per-variable learning rate, so the
    optimizer's `update_step` (which every Keras optimizer implements) is wrapped for this instance only."""
    scale = tf.Variable(float(multiplier), trainable=False, dtype="float32", name="pretrained_lr_scale")
    # the TensorFlow backend hands update_step the tf.Variable inside a Keras variable
    scaled = {id(getattr(variable, "_value", variable)) for variable in variables}
    update_step = optimizer.update_step

    def scaled_update_step(gradient, variable, learning_rate):
        if id(getattr(variable, "_value", variable)) in scaled:
            learning_rate = learning_rate * tf.cast(scale, learning_rate.dtype if hasattr(learning_rate, "dtype")
                                                    else "float32")
        return update_step(gradient, variable, learning_rate)

    optimizer.update_step = scaled_update_step
    return scale


@keras.saving.register_keras_serializable(package="seqlab")
class OneCycle(keras.optimizers.schedules.LearningRateSchedule):
    """`trainer.schedule=one_cycle` (Smith's 1cycle, as fastai's fit_one_cycle): a cosine rise from
    peak / div_factor to the peak over the first `warmup` share of the steps, then a cosine fall to
    peak / div_factor / final_div_factor at the last step. Keras ships warmup + cosine (CosineDecay), not this."""

    def __init__(self, peak: float, total_steps: int, warmup: float = 0.25, div_factor: float = 25.0,
                 final_div_factor: float = 1e4, name: str = "OneCycle"):
        self.peak, self.total_steps, self.warmup = float(peak), int(total_steps), float(warmup)
        self.div_factor, self.final_div_factor, self.name = float(div_factor), float(final_div_factor), name

    def __call__(self, step):
        step = tf.cast(step, tf.float32)
        rise = max(1.0, round(self.warmup * self.total_steps))
        fall = max(1.0, self.total_steps - 1 - rise)
        start = self.peak / self.div_factor
        end = start / self.final_div_factor

        def cosine(begin, finish, fraction):  # begin at fraction 0, finish at 1, along half a cosine
            fraction = tf.clip_by_value(fraction, 0.0, 1.0)
            return finish + (begin - finish) * (1.0 + tf.cos(np.pi * fraction)) / 2.0

        return tf.where(step < rise, cosine(start, self.peak, step / rise), cosine(self.peak, end, (step - rise) / fall))

    def get_config(self):
        return {"peak": self.peak, "total_steps": self.total_steps, "warmup": self.warmup,
                "div_factor": self.div_factor, "final_div_factor": self.final_div_factor, "name": self.name}


def learning_rate_schedule(trainer_cfg, steps_per_epoch: int):
    """`trainer.learning_rate` as `trainer.schedule` shapes it over `trainer.epochs` x `steps_per_epoch` steps:
    constant (a float), warmup_cosine (linear warmup to the peak, then cosine to 0: Keras' CosineDecay) or
    one_cycle (OneCycle)."""
    total = max(1, trainer_cfg.epochs * steps_per_epoch)
    peak, schedule = trainer_cfg.learning_rate, trainer_cfg.schedule
    if schedule == "constant":
        return peak
    if schedule == "warmup_cosine":
        warmup = int(round(trainer_cfg.warmup * total))
        return keras.optimizers.schedules.CosineDecay(0.0, max(1, total - warmup), alpha=0.0, warmup_target=peak,
                                                      warmup_steps=warmup)
    if schedule == "one_cycle":
        return OneCycle(peak, total, warmup=trainer_cfg.warmup)
    raise ValueError(f"unknown trainer.schedule {schedule!r}")  # config.validate names the choices first


@keras.saving.register_keras_serializable(package="seqlab")
class SmoothedSparseCrossentropy(keras.losses.Loss):
    """Sparse categorical cross-entropy against targets smoothed towards uniform: (1 - s) on the label plus s / k on
    every class. Keras' SparseCategoricalCrossentropy has no label_smoothing (its dense sibling needs one-hot labels)."""

    def __init__(self, label_smoothing: float = 0.0, name: str = "smoothed_sparse_crossentropy", **kwargs):
        super().__init__(name=name, **kwargs)
        self.label_smoothing = float(label_smoothing)

    def call(self, y_true, y_pred):
        classes = tf.shape(y_pred)[-1]
        labels = tf.one_hot(tf.cast(tf.reshape(y_true, [-1]), tf.int32), classes, dtype=y_pred.dtype)
        targets = labels * (1.0 - self.label_smoothing) + self.label_smoothing / tf.cast(classes, y_pred.dtype)
        return keras.losses.categorical_crossentropy(targets, y_pred)

    def get_config(self):
        return {**super().get_config(), "label_smoothing": self.label_smoothing}


def make_loss(num_classes: int, label_smoothing: float = 0.0):
    """Binary or sparse categorical cross-entropy on probabilities, with `trainer.label_smoothing`."""
    if not label_smoothing:
        return loss_for(num_classes)
    if num_classes == 2:
        return keras.losses.BinaryCrossentropy(label_smoothing=label_smoothing)
    return SmoothedSparseCrossentropy(label_smoothing)


def make_optimizer(trainer, steps_per_epoch: int = 1) -> keras.optimizers.Optimizer:
    """The optimizer of the trainer part: its learning-rate schedule, clipping and (decoupled) weight decay."""
    options = {"learning_rate": learning_rate_schedule(trainer, steps_per_epoch)}
    if trainer.clipnorm is not None:
        options["clipnorm"] = trainer.clipnorm
    if trainer.weight_decay is not None:  # Keras 3 decays decoupled (AdamW's way) in every optimizer
        options["weight_decay"] = trainer.weight_decay
    if trainer.optimizer in OPTIMIZERS:  # seqlab's own (lazy_adam)
        return OPTIMIZERS[trainer.optimizer](**options)
    return keras.optimizers.get({"class_name": trainer.optimizer, "config": options})
