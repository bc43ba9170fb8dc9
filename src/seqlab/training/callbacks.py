"""`EpochLogger`: the Keras callback that records each epoch of a run in MLflow and checkpoints it.

Written on `keras.callbacks.Callback`, not on `mlflow.keras.MlflowCallback`: that one's metaclass turns any
exception of any of its methods (subclasses' too) into a warning, so a failed metric write or checkpoint upload
let training go on and the run end FINISHED with a hole in its record. Here a failure raises a RecordingError
naming what failed, and `seqlab.record.lifecycle.run_lifecycle` ends the run FAILED with that message as its `error` tag.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from pathlib import Path

import keras
from mlflow.entities import Metric
from mlflow.tracking import MlflowClient

from seqlab.errors import DivergedError, RecordingError
from seqlab.jobs import PRUNED_AT
from seqlab.metrics import keras_name
from seqlab.record.failures import named_failure
from seqlab.record.lifecycle import start_system_metrics
from seqlab.record.naming import mark_pruned
from seqlab.record.resume import CHECKPOINT_PATH
from seqlab.record.signals import interrupts_deferred, interrupts_raised, raise_if_interrupted
from seqlab.record.store import when_store_free

log = logging.getLogger(__name__)

SUMMARY_FILE = "model_summary.txt"
LEARNING_RATE = "optimizer/learning_rate"  # after each epoch: what trainer.schedule has made of trainer.learning_rate


class EpochLogger(keras.callbacks.Callback):
    """Records the model summary and every epoch's metrics (loss/train, loss/val, accuracy/*, time/epoch_seconds:
    seqlab.metrics names, at step = epoch index, as MLflow's step axis counts from 0) in run `run_id`; with `backup_dir`, Keras' BackupAndRestore too, its backup copied into the run
    after every epoch.

    It writes with an MlflowClient and the run's id rather than MLflow's fluent calls: the callback records the
    run it was made for, whichever run is active when Keras calls it. An epoch's metrics and its checkpoint are
    written as one step that Ctrl-C cannot split, so a resumed run neither repeats nor skips an epoch.
    """

    def __init__(self, run_id: str, backup_dir: Path | None = None, system_metrics: bool = False,
                 resume: bool = False):
        super().__init__()
        self.run_id = run_id
        self.system_metrics = system_metrics  # MLflow's, started after the first epoch's metrics (seqlab.record.lifecycle.start_system_metrics)
        self.resume = resume
        self.client = MlflowClient()
        self.backup = keras.callbacks.BackupAndRestore(str(backup_dir)) if backup_dir else None
        self.epoch_started = 0.0
        self.epoch = 0

    def set_model(self, model):
        super().set_model(model)
        if self.backup:
            self.backup.set_model(model)

    def on_train_begin(self, logs=None):
        if self.backup:  # restores weights, optimizer state and the epoch to start at (none on a new run)
            with named_failure(f"restore the checkpoint of run {self.run_id}",
                               "Its checkpoint/ artifacts may be damaged; start a new run instead."):
                self.backup.on_train_begin(logs)
        lines = []
        self.model.summary(print_fn=lambda line, *args, **kwargs: lines.append(line))
        with named_failure(f"record {SUMMARY_FILE} in MLflow run {self.run_id}"):
            self.client.log_text(self.run_id, "\n".join(lines), SUMMARY_FILE)

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch_started = time.perf_counter()
        self.epoch = epoch

    def on_train_batch_begin(self, batch, logs=None):
        raise_if_interrupted()  # TensorFlow may have swallowed Ctrl-C (see interrupts_raised)

    def on_train_batch_end(self, batch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(float(loss)):  # every later step would be NaN too
            optimizer = self.model.optimizer
            raise DivergedError(
                f"Training diverged: the training loss became {float(loss)} in epoch {self.epoch + 1}, batch "
                f"{batch + 1}. Lower trainer.learning_rate (the optimizer's is now "
                f"{float(keras.ops.convert_to_numpy(optimizer.learning_rate)):g}), or bound the updates with "
                "trainer.clipnorm; the run is marked FAILED with the epochs before this one recorded.")

    def on_test_batch_begin(self, batch, logs=None):
        raise_if_interrupted()

    def on_epoch_end(self, epoch, logs=None):
        raise_if_interrupted()  # before this epoch's metrics: an interrupted epoch is not logged
        # validation first: the UI's compare page plots a run's first-logged metric by default
        keys = sorted(logs or {}, key=lambda key: not key.startswith("val_"))
        values = {keras_name(key): float(logs[key]) for key in keys if key != "learning_rate"}
        values[keras_name("epoch_seconds")] = time.perf_counter() - self.epoch_started
        values[LEARNING_RATE] = float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate))  # at the next step
        now = int(time.time() * 1000)
        metrics = [Metric(key, value, now, epoch) for key, value in values.items()]
        number = epoch + 1  # as Keras prints it: "Epoch 3/5"
        resume = (f"The run is marked FAILED; trainer.resume={self.run_id} continues it from its last uploaded "
                  "checkpoint once the cause is fixed." if self.backup else "")
        with interrupts_deferred():
            with named_failure(f"record epoch {number}'s metrics in MLflow run {self.run_id}", resume):
                when_store_free(self.client.log_batch, self.run_id, metrics=metrics, synchronous=True,
                                         what=f"record epoch {number}'s metrics")
            if self.backup:
                with named_failure(f"save the epoch {number} checkpoint in {self.backup.backup_dir}", resume):
                    self.backup.on_epoch_end(epoch, logs)
                with named_failure(f"upload the epoch {number} checkpoint to MLflow run {self.run_id}", resume):
                    self.client.log_artifacts(self.run_id, self.backup.backup_dir, CHECKPOINT_PATH)
        if self.system_metrics:
            start_system_metrics(self.run_id, self.resume)


class PretrainedSchedule(keras.callbacks.Callback):
    """`model.pretrained_frozen_epochs`, then `model.pretrained_lr_multiplier`: the pretrained layers' learning-rate
    scale (seqlab.training.optimizers.scale_learning_rate) is 0 in the first `frozen_epochs` epochs, the multiplier after."""

    def __init__(self, scale, frozen_epochs: int, multiplier: float):
        super().__init__()
        self.scale, self.frozen_epochs, self.multiplier = scale, frozen_epochs, multiplier

    def on_epoch_begin(self, epoch, logs=None):
        frozen = epoch < self.frozen_epochs
        self.scale.assign(0.0 if frozen else self.multiplier)
        if epoch == self.frozen_epochs and epoch > 0:
            log.info(f"epoch {epoch + 1}: the pretrained layers are fine-tuned from now on "
                     f"(learning rate x {self.multiplier:g})")


class OptunaPruning(keras.callbacks.Callback):
    """Reports the validation metric after each epoch to a search's Optuna trial and stops training when the study's
    pruner says so. Not optuna-integration's KerasPruningCallback: it raises TrialPruned out of fit(), which would
    end the MLflow run as failed; here training stops, and the run is recorded as pruned (mark_pruned)."""

    def __init__(self, trial, monitor_name: str, keras_key: str):
        super().__init__()
        self.trial, self.monitor_name, self.keras_key = trial, monitor_name, keras_key
        self.pruned_at: int | None = None  # the 0-based epoch after which the pruner stopped the trial
        self.last_value = float("nan")

    def on_epoch_end(self, epoch, logs=None):
        if (logs or {}).get(self.keras_key) is None:
            return
        self.last_value = float(logs[self.keras_key])
        self.trial.report(self.last_value, step=epoch)
        if self.trial.should_prune():
            self.pruned_at = epoch
            self.trial.set_user_attr(PRUNED_AT, epoch + 1)  # the worker tells the study PRUNED (seqlab.search.study)
            log.info(f"Optuna's pruner stops this trial after epoch {epoch + 1}: {self.monitor_name} "
                     f"{self.last_value:.4f} is behind the study's other trials at that epoch")
            self.model.stop_training = True
