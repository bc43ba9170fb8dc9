"""`train(cfg)`: load data, fit the preprocessing on train, fit the model, test once, record in MLflow.

Hydra's entry point (seqlab.cli) wraps this; tests call it with composed configs. It returns
`cfg.optimized_metric` so that Hydra sweepers can optimise it.
"""

from __future__ import annotations

import sys
import time

import keras
import mlflow
import numpy as np
import tensorflow as tf
from omegaconf import DictConfig

from seqlab import tracking
from seqlab.config import validate
from seqlab.data import load_dataset
from seqlab.errors import ConfigError
from seqlab.evaluate import learning_curves_figure, test_metrics
from seqlab.models import build_model, loss_for
from seqlab.preprocess import InputSpec, make_preprocessor


def setup_runtime(trainer_cfg) -> str:
    """Choose the device, seed every generator and set precision. Returns 'cpu' or 'gpu'."""
    gpus = tf.config.list_physical_devices("GPU")
    if trainer_cfg.device == "gpu" and not gpus:
        raise ConfigError("trainer.device is 'gpu' but TensorFlow sees no GPU on this machine (is the CUDA build "
                          "installed: pip install -e '.[gpu]'?). Use trainer.device=auto or cpu.")
    if trainer_cfg.device == "cpu" and gpus:
        tf.config.set_visible_devices([], "GPU")
    device = "gpu" if gpus and trainer_cfg.device != "cpu" else "cpu"
    keras.backend.clear_session()  # sweeps run several jobs in one process
    keras.utils.set_random_seed(trainer_cfg.seed)
    deterministic = trainer_cfg.deterministic if trainer_cfg.deterministic is not None else device == "cpu"
    if deterministic:
        tf.config.experimental.enable_op_determinism()
    if trainer_cfg.mixed_precision:
        keras.mixed_precision.set_global_policy("mixed_float16" if device == "gpu" else "mixed_bfloat16")
    else:
        keras.mixed_precision.set_global_policy("float32")
    return device


def make_dataset(inputs, labels, batch_size: int, seed: int | None = None) -> tf.data.Dataset:
    """Batches of (inputs, labels); shuffled every epoch with `seed` when given (training data)."""
    dataset = tf.data.Dataset.from_tensor_slices((inputs, labels))
    if seed is not None:
        dataset = dataset.shuffle(len(labels), seed=seed, reshuffle_each_iteration=True)
    return dataset.batch(batch_size).prefetch(tf.data.AUTOTUNE)


def make_optimizer(trainer_cfg) -> keras.optimizers.Optimizer:
    options = {"learning_rate": trainer_cfg.learning_rate}
    if trainer_cfg.clipnorm is not None:
        options["clipnorm"] = trainer_cfg.clipnorm
    return keras.optimizers.get({"class_name": trainer_cfg.optimizer, "config": options})


class EpochLogger(mlflow.keras.MlflowCallback):
    """MLflow's Keras callback (optimizer params, model summary, per-epoch metrics) plus epoch_seconds."""

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch_started = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        metrics = {key: float(value) for key, value in (logs or {}).items()}
        metrics["epoch_seconds"] = time.perf_counter() - self._epoch_started
        mlflow.log_metrics(metrics, step=epoch)

    def on_test_end(self, logs=None):
        pass  # validation metrics already arrive as val_* at epoch end


def class_weights(labels: np.ndarray, num_classes: int) -> dict[int, float]:
    from sklearn.utils.class_weight import compute_class_weight

    present = np.unique(labels)
    weights = compute_class_weight("balanced", classes=present, y=labels)
    return {int(c): float(w) for c, w in zip(present, weights)} | {
        c: 1.0 for c in range(num_classes) if c not in present}


def train(cfg: DictConfig) -> float:
    validate(cfg)
    device = setup_runtime(cfg.trainer)
    experiment_id = tracking.configure(cfg)  # fails fast on a bad store, before any data work

    started = time.perf_counter()
    data = load_dataset(cfg)
    preprocessor = make_preprocessor(cfg.preprocess).fit(data.train.texts)
    x_train, x_val, x_test = (preprocessor.encode(split.texts) for split in (data.train, data.validation, data.test))
    prepare_seconds = time.perf_counter() - started
    print(f"seqlab: {data.name}: {len(data.train)} train / {len(data.validation)} validation / {len(data.test)} "
          f"test examples, {data.num_classes} classes, vocabulary {preprocessor.vocabulary_size} words, "
          f"inputs {x_train.shape[1:]} ({prepare_seconds:.1f} s)", flush=True)

    spec = InputSpec(vocab_size=cfg.preprocess.vocab_size, sequence_shape=preprocessor.sequence_shape,
                     num_classes=data.num_classes, mask_zero=preprocessor.mask_zero)
    tags = {"device": device}
    with tracking.tracked_run(cfg, experiment_id, tags) as run:
        print(f"seqlab: MLflow run {run.info.run_id} in experiment {tracking.experiment_name(cfg)!r} "
              f"at {cfg.tracking.uri}", flush=True)
        mlflow.log_metric("prepare_seconds", prepare_seconds)
        model = build_model(cfg.model, spec)
        model.compile(optimizer=make_optimizer(cfg.trainer), loss=loss_for(data.num_classes), metrics=["accuracy"],
                      jit_compile=cfg.trainer.jit_compile)
        history = fit(model, cfg, data, x_train, x_val)

        outputs = model.predict(make_dataset(x_test, data.test.labels, cfg.trainer.batch_size), verbose=0)
        metrics, report, confusion = test_metrics(data.test.labels, outputs, data.class_names)
        mlflow.log_metrics(metrics)
        mlflow.log_text(report, "classification_report.txt")
        mlflow.log_figure(confusion, "confusion_matrix.png")
        mlflow.log_figure(learning_curves_figure(history), "learning_curves.png")
        print(f"seqlab: test " + ", ".join(f"{k[5:]} {v:.4f}" for k, v in metrics.items()), flush=True)
        print(report, flush=True)
        if cfg.tracking.log_model:
            log_model(model, preprocessor, data)
    return objective(cfg, metrics, history)


def fit(model: keras.Model, cfg: DictConfig, data, x_train, x_val) -> dict[str, list[float]]:
    t = cfg.trainer
    callbacks = [EpochLogger()]
    if t.early_stopping is not None:
        callbacks.append(keras.callbacks.EarlyStopping(monitor="val_loss", patience=t.early_stopping,
                                                       restore_best_weights=True, verbose=1))
    weights = class_weights(data.train.labels, data.num_classes) if t.class_weight == "balanced" else None
    train_set = make_dataset(x_train, data.train.labels, t.batch_size, seed=t.seed)
    val_set = make_dataset(x_val, data.validation.labels, t.batch_size)
    verbose = 1 if t.progress and sys.stdout.isatty() else 2
    started = time.perf_counter()
    history = model.fit(train_set, validation_data=val_set, epochs=t.epochs, callbacks=callbacks,
                        class_weight=weights, shuffle=False, verbose=verbose)  # the dataset shuffles itself
    seconds = time.perf_counter() - started
    epochs = len(history.history.get("loss", []))
    mlflow.log_metrics({"train_seconds": seconds, "epochs": epochs})
    return history.history


def log_model(model: keras.Model, preprocessor, data) -> None:
    """Log the network with the preprocessing in front of it, so the logged model takes raw strings."""
    text = keras.Input(shape=(), dtype="string", name="text")
    end_to_end = keras.Model(text, model(preprocessor.apply(text)), name=f"{model.name}_on_text")
    requirements = [f"tensorflow=={tf.__version__}", f"keras=={keras.__version__}", f"mlflow=={mlflow.__version__}"]
    examples = np.asarray(data.test.texts[:2], dtype=str)
    signature = mlflow.models.infer_signature(examples, end_to_end.predict(examples.astype(object), verbose=0))
    mlflow.keras.log_model(end_to_end, name="model", pip_requirements=requirements, signature=signature,
                           metadata={"class_names": list(data.class_names), "dataset": data.name,
                                     "metadata_columns": list(data.metadata_names)})


def objective(cfg: DictConfig, metrics: dict[str, float], history: dict[str, list[float]]) -> float:
    name = cfg.optimized_metric
    if name in metrics:
        return metrics[name]
    values = history[name]
    return float(max(values) if name.endswith("accuracy") else min(values))
