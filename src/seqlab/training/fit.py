"""Fitting: `model.fit` on tf.data batches with early stopping and class weights, each epoch recorded and
checkpointed into the run (seqlab.training.callbacks.EpochLogger), resumable from the run's last checkpoint."""

from __future__ import annotations

import logging
import sys
import tempfile
import time
from pathlib import Path

import keras
import mlflow
import numpy as np

from seqlab.features.pipeline import make_dataset
from seqlab.metrics import higher_is_better, keras_name, to_keras
from seqlab.record.failures import named_failure
from seqlab.record.resume import CHECKPOINT_PATH, download_checkpoint, metric_history
from seqlab.training.callbacks import EpochLogger

log = logging.getLogger(__name__)


def fit(model: keras.Model, trainer, data, x_train, x_val, run_id: str, boundaries: list[int] | None = None,
        pad_to_boundaries: bool = False, system_metrics: bool = True, resume: bool = False,
        callbacks: list | None = None) -> tuple[dict[str, list[float]], int]:
    """Train with the trainer part of the plan, checkpointing into run `run_id` each epoch; with `resume`, from its
    last checkpoint on.

    Returns the history of every epoch of the run (Keras' names), including those before a resume, and the index
    of the epoch whose weights the model now holds (early stopping restores its best epoch's).
    """
    with tempfile.TemporaryDirectory(prefix="seqlab-") as scratch:  # one backup folder per run, never shared
        backup_dir = Path(scratch) / CHECKPOINT_PATH if trainer.checkpoint else None
        initial_epoch = download_checkpoint(run_id, Path(scratch)) if resume and backup_dir else 0
        if resume:
            log.info(f"resuming run {run_id} after epoch {initial_epoch} of {trainer.epochs}")
            mlflow.set_tag("resumed_after_epoch", initial_epoch)
        started = time.perf_counter()
        logger = EpochLogger(run_id, backup_dir, system_metrics, resume)
        history = fit_batches(model, trainer, data, x_train, x_val, boundaries, pad_to_boundaries,
                              callbacks=[*(callbacks or []), logger])
        seconds = time.perf_counter() - started
    if initial_epoch:
        epoch_seconds = keras_name("epoch_seconds")
        seconds += sum(metric_history(run_id, [epoch_seconds]).get(epoch_seconds, [])[:initial_epoch])
        logged = metric_history(run_id, [keras_name(key) for key in {"loss", "accuracy", "val_loss",
                                                                      "val_accuracy", *history}])
        history = {to_keras(key): values for key, values in logged.items()}
    epochs = len(history.get("loss", []))
    kept = kept_epoch(history, trainer, initial_epoch)
    with named_failure(f"record train_seconds and epochs in MLflow run {run_id}"):
        mlflow.log_metrics({keras_name("train_seconds"): seconds, keras_name("epochs"): epochs}, step=kept)
    return history, kept


def fit_batches(model: keras.Model, trainer, data, x_train, x_val, boundaries: list[int] | None,
                pad_to_boundaries: bool, callbacks: list) -> dict[str, list[float]]:
    """model.fit over the training batches (shuffled each epoch with trainer.seed), validated each epoch."""
    if trainer.early_stopping is not None:
        callbacks.append(early_stopping(trainer))
    weights = class_weights(data.train.labels, data.num_classes) if trainer.class_weight == "balanced" else None
    train_set = make_dataset(x_train, data.train.labels, trainer.batch_size, seed=trainer.seed, boundaries=boundaries,
                             pad_to_boundaries=pad_to_boundaries)  # XLA compiles once per shape
    val_set = make_dataset(x_val, data.validation.labels, trainer.batch_size, boundaries=boundaries,
                           pad_to_boundaries=pad_to_boundaries)
    verbose = 1 if trainer.progress and sys.stdout.isatty() else 2
    history = model.fit(train_set, validation_data=val_set, epochs=trainer.epochs, callbacks=callbacks,
                        class_weight=weights, shuffle=False, verbose=verbose)  # the dataset shuffles itself
    return history.history


def kept_epoch(history: dict[str, list[float]], trainer, initial_epoch: int = 0) -> int:
    """The epoch whose weights the model holds after fit(): the last, or with early stopping the first best of
    those this process trained (Keras' EarlyStopping restores it at the end of training)."""
    epochs = len(history.get("loss", []))
    values = history.get(to_keras(trainer.monitor), [])[initial_epoch:]
    if trainer.early_stopping is None or not values:
        return max(epochs - 1, 0)
    best = np.argmin(values) if not higher_is_better(trainer.monitor) else np.argmax(values)  # first of equal bests
    return initial_epoch + int(best)


def kept_validation(history: dict[str, list[float]], kept: int) -> dict[str, float]:
    """The validation metrics (MLflow names) of the epoch whose weights the model holds."""
    return {keras_name(key): float(values[kept]) for key, values in history.items()
            if key.startswith("val_") and kept < len(values)}


def early_stopping(trainer) -> keras.callbacks.EarlyStopping:
    """Stops after `trainer.early_stopping` epochs without a better `trainer.monitor` and restores the best epoch's
    weights (mode from the name: loss lower, accuracy higher)."""
    return keras.callbacks.EarlyStopping(monitor=to_keras(trainer.monitor),
                                         mode="max" if higher_is_better(trainer.monitor) else "min",
                                         patience=trainer.early_stopping, restore_best_weights=True, verbose=1)


def class_weights(labels: np.ndarray, num_classes: int) -> dict[int, float]:
    """trainer.class_weight=balanced: each present class weighted inversely to its frequency; absent ones 1."""
    from sklearn.utils.class_weight import compute_class_weight

    present = np.unique(labels)
    weights = compute_class_weight("balanced", classes=present, y=labels)
    return {int(c): float(w) for c, w in zip(present, weights)} | {
        c: 1.0 for c in range(num_classes) if c not in present}
