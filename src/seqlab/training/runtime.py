"""How TensorFlow runs a job: the device, CPU threads per op, seeds, op determinism and precision (the run plan's
runtime part). Applied once per job, before the model is built."""

from __future__ import annotations

import logging

import keras
import tensorflow as tf

from seqlab.config.plan import RuntimePlan
from seqlab.errors import ConfigError

log = logging.getLogger(__name__)


def gpu_count() -> int:
    return len(tf.config.list_physical_devices("GPU"))


def expected_retracing(record: logging.LogRecord) -> bool:
    """A logging filter: TensorFlow's "triggered tf.function retracing" warning is expected, not a problem, when a
    sweep builds a new model per job in one process or buckets give batches of several widths."""
    return "triggered tf.function retracing" not in record.getMessage()


def setup_runtime(runtime: RuntimePlan) -> int:
    """Hide the GPU for a CPU run, set the CPU threads, seed every generator, set determinism and precision.
    Returns the CPU threads per op in force (TensorFlow keeps the first setting of a process)."""
    if runtime.device == "cpu" and tf.config.list_physical_devices("GPU"):
        try:
            tf.config.set_visible_devices([], "GPU")
        except RuntimeError:  # TensorFlow already started in this process (an earlier job of a sweep)
            if tf.config.get_visible_devices("GPU"):
                raise ConfigError("trainer.device=cpu cannot hide the GPU once TensorFlow has started in this process "
                                  "(an earlier job of this sweep used it); run the CPU jobs in a sweep of their own, "
                                  "or with CUDA_VISIBLE_DEVICES= in the environment.") from None
    threads = set_intra_op_threads(runtime.intra_op_threads, runtime.threads_asked)  # only before TensorFlow starts
    if expected_retracing not in tf.get_logger().filters:
        tf.get_logger().addFilter(expected_retracing)
    keras.backend.clear_session()  # sweeps run several jobs in one process
    keras.utils.set_random_seed(runtime.seed)
    if runtime.deterministic:
        tf.config.experimental.enable_op_determinism()
    if runtime.mixed_precision:
        keras.mixed_precision.set_global_policy("mixed_float16" if runtime.device == "gpu" else "mixed_bfloat16")
    else:
        keras.mixed_precision.set_global_policy("float32")
    return threads


def set_intra_op_threads(wanted: int, asked: bool) -> int:
    """One thread per op by default for recurrent models on CPU: a training step of the tutorial LSTM is a loop of
    hundreds of small ops, which two threads split at a loss (docs/speed.md: 1.3-1.5x faster with one)."""
    current = tf.config.threading.get_intra_op_parallelism_threads()
    if wanted != current:
        try:
            tf.config.threading.set_intra_op_parallelism_threads(wanted)
        except RuntimeError:  # TensorFlow already started in this process (an earlier job of a sweep)
            if asked:
                log.warning(f"trainer.intra_op_threads={wanted} cannot take effect: TensorFlow already started in "
                            f"this process with {current}; this run uses {current}.")
            return int(current)
    return int(wanted)
