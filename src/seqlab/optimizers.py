"""`trainer.optimizer=lazy_adam`: Adam whose sparse gradients update only the rows they touch.

Keras 3's Adam turns an embedding's sparse gradient (`tf.IndexedSlices`) into a dense update of the whole
table and both its moment tables. For fasttext_bigram's 1M-row bigram table that is about 0.2 GB of
memory traffic per step, most of an epoch's time on a CPU. Lazy Adam (as TF Addons' LazyAdam did, which
has no Keras 3 version) updates the moments and weights of the rows in the batch only; dense gradients
get Keras' own Adam step, unchanged. The difference from Adam: a row's moments do not decay in steps
where the row is absent, the usual trade for sparse embeddings.
"""

from __future__ import annotations

import keras
import tensorflow as tf


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
