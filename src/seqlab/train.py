"""`train(cfg)`: load data, fit the preprocessing on train, fit the model, test once, record in MLflow.

Hydra's entry point (seqlab.cli) wraps this; tests call it with composed configs. It returns
`cfg.optimized_metric` so that Hydra sweepers can optimise it.
"""

from __future__ import annotations

import copy
import hashlib
import logging
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import keras
import mlflow
import numpy as np
import tensorflow as tf
from omegaconf import DictConfig

from seqlab import pipeline, tracking
from seqlab.callbacks import EpochLogger, OptunaPruning, PretrainedSchedule, named_failure
from seqlab.config import validate
from seqlab.data import load_dataset
from seqlab.errors import ConfigError, DataError
from seqlab.metrics import canonical, higher_is_better, keras_name, to_keras
from seqlab.evaluate import close_figures, learning_curves_figure, test_metrics
from seqlab.models import build_model
from seqlab.optimizers import OPTIMIZERS, learning_rate_schedule, make_loss, scale_learning_rate
from seqlab.pipeline import make_dataset  # noqa: F401 (its home was here)
from seqlab.preprocess import InputSpec, MetadataPreprocessor
from seqlab.significance import PREDICTIONS_ARTIFACT, log_predictions

log = logging.getLogger(__name__)


def expected_retracing(record: logging.LogRecord) -> bool:
    """A logging filter: TensorFlow's "triggered tf.function retracing" warning is expected, not a problem, when a
    sweep builds a new model per job in one process or buckets give batches of several widths."""
    return "triggered tf.function retracing" not in record.getMessage()


def setup_runtime(trainer_cfg, model_name: str) -> str:
    """Choose the device and CPU threads, seed every generator and set precision. Returns 'cpu' or 'gpu'.

    Sets `trainer_cfg.intra_op_threads` to the value in force, so that the logged param says what ran.
    """
    gpus = tf.config.list_physical_devices("GPU")
    if trainer_cfg.device == "gpu" and not gpus:
        raise ConfigError("trainer.device is 'gpu' but TensorFlow sees no GPU on this machine (is the CUDA build "
                          "installed? .venv/bin/pip uninstall -y tensorflow-cpu && .venv/bin/pip install -e '.[gpu]'). Use "
                          "trainer.device=auto or cpu.")
    if trainer_cfg.device == "cpu" and gpus:
        try:
            tf.config.set_visible_devices([], "GPU")
        except RuntimeError:  # TensorFlow already started in this process (an earlier job of a sweep)
            if tf.config.get_visible_devices("GPU"):
                raise ConfigError("trainer.device=cpu cannot hide the GPU once TensorFlow has started in this process "
                                  "(an earlier job of this sweep used it); run the CPU jobs in a sweep of their own, "
                                  "or with CUDA_VISIBLE_DEVICES= in the environment.") from None
    device = "gpu" if gpus and trainer_cfg.device != "cpu" else "cpu"
    set_intra_op_threads(trainer_cfg, model_name, device)  # like hiding a GPU: only before TensorFlow starts
    if expected_retracing not in tf.get_logger().filters:
        tf.get_logger().addFilter(expected_retracing)
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


def set_intra_op_threads(trainer_cfg, model_name: str, device: str) -> None:
    """One thread per op by default for recurrent models on CPU: a training step of the tutorial LSTM is a loop of
    hundreds of small ops, which two threads split at a loss (README, "Speed": 1.3-1.5x faster with one)."""
    from seqlab.models import model_info

    wanted = trainer_cfg.intra_op_threads
    if wanted is None:
        wanted = 1 if device == "cpu" and model_info(model_name).recurrent else 0
    current = tf.config.threading.get_intra_op_parallelism_threads()
    if wanted != current:
        try:
            tf.config.threading.set_intra_op_parallelism_threads(wanted)
        except RuntimeError:  # TensorFlow already started in this process (an earlier job of a sweep)
            if trainer_cfg.intra_op_threads is not None:
                log.warning(f"trainer.intra_op_threads={wanted} cannot take effect: TensorFlow already started in "
                      f"this process with {current}; this run uses {current}.")
            wanted = current
    trainer_cfg.intra_op_threads = int(wanted)


def make_optimizer(trainer_cfg, steps_per_epoch: int = 1) -> keras.optimizers.Optimizer:
    options = {"learning_rate": learning_rate_schedule(trainer_cfg, steps_per_epoch)}
    if trainer_cfg.clipnorm is not None:
        options["clipnorm"] = trainer_cfg.clipnorm
    if trainer_cfg.weight_decay is not None:  # Keras 3 decays decoupled (AdamW's way) in every optimizer
        options["weight_decay"] = trainer_cfg.weight_decay
    if trainer_cfg.optimizer in OPTIMIZERS:  # seqlab's own (lazy_adam)
        return OPTIMIZERS[trainer_cfg.optimizer](**options)
    return keras.optimizers.get({"class_name": trainer_cfg.optimizer, "config": options})


def class_weights(labels: np.ndarray, num_classes: int) -> dict[int, float]:
    from sklearn.utils.class_weight import compute_class_weight

    present = np.unique(labels)
    weights = compute_class_weight("balanced", classes=present, y=labels)
    return {int(c): float(w) for c, w in zip(present, weights)} | {
        c: 1.0 for c in range(num_classes) if c not in present}


@dataclass
class Outcome:
    objective: float  # the value of optimized_metric that train() returns to sweepers
    validation: dict[str, float]  # the validation metrics of the epoch whose weights the model kept (MLflow names)


def train(cfg: DictConfig) -> float:
    """Train and evaluate one model (or, with trainer.cv_folds, cross-validate it); returns optimized_metric."""
    validate(cfg)
    if cfg.trainer.cv_folds and cfg.trainer.cv_fold is None:
        return cross_validate(cfg)
    return train_run(cfg).objective


def cross_validate(cfg: DictConfig) -> float:
    """trainer.cv_folds runs, one per fold (trainer.cv_fold), nested under a parent run holding the mean and std of
    their validation metrics; no run touches the test split. Returns the folds' mean of optimized_metric (its
    validation side)."""
    folds = int(cfg.trainer.cv_folds)
    cfg.tracking.experiment = tracking.experiment_name(cfg)
    experiment_id = tracking.configure(cfg)
    with tracking.tracked_run(cfg, experiment_id, {"cv.role": "parent", "cv.folds": str(folds)}) as parent:
        log.info(f"{folds}-fold cross-validation under MLflow run {parent.info.run_id}")
        outcomes = []
        for fold in range(folds):
            fold_cfg = copy.deepcopy(cfg)
            fold_cfg.trainer.cv_fold = fold
            fold_cfg.tracking.run_name = f"{parent.info.run_name} fold {fold}"
            with tracking.cv_parent(parent.info.run_id, fold):
                outcomes.append(train_run(fold_cfg))
        summary = {}
        for key in sorted(set.intersection(*(set(o.validation) for o in outcomes))):
            values = np.array([o.validation[key] for o in outcomes])
            summary[key], summary[f"{key}_std"] = float(values.mean()), float(values.std(ddof=1))
        objective = float(np.mean([o.objective for o in outcomes]))
        with named_failure(f"record the cross-validation summary in MLflow run {parent.info.run_id}"):
            mlflow.log_metrics(summary)
            mlflow.set_tag("cv.objective", ", ".join(f"{o.objective:.4f}" for o in outcomes))
        shown = ", ".join(f"{key} {summary[key]:.4f} ± {summary[key + '_std']:.4f}" for key in summary
                          if not key.endswith("_std"))
        log.info(f"{folds}-fold cross-validation: {shown} (mean ± std over folds)")
    return objective


def train_run(cfg: DictConfig) -> Outcome:
    resumed = None
    if cfg.trainer.resume:  # continue that run, with the config it was started with
        resumed = tracking.resumable_run(cfg)
        cfg = tracking.resumed_config(cfg, resumed)
        validate(cfg)
    device = setup_runtime(cfg.trainer, cfg.model.name)  # first: the GPU can be hidden only before TensorFlow starts
    job = tracking.current_job()  # a sweep across models batches them alike (seqlab.sweep.like_for_like)
    cfg = pipeline.resolve_bucketing(cfg, default=job.bucketing if job else None)  # null -> what runs, logged
    # the logged params say what ran, not "null"
    cfg.trainer.deterministic = bool(cfg.trainer.deterministic if cfg.trainer.deterministic is not None
                                     else device == "cpu")
    cfg.trainer.weight_decay = float(make_optimizer(cfg.trainer).weight_decay or 0.0)  # null: adamw's 0.004, else 0
    cfg.tracking.experiment = tracking.experiment_name(cfg)
    started = time.perf_counter()
    tracking.check_reachable(cfg.tracking.uri)  # a server that does not answer: before any data is read or downloaded
    # Opening the store (a second with SQLite) overlaps reading the data; a bad store still stops the run
    # before anything is recorded or trained, and is reported before a data error (fix it first).
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="seqlab-store") as pool:
        store = None if resumed else pool.submit(tracking.configure, cfg)
        try:
            data = load_dataset(cfg)
            preprocessor, (x_train, x_val, x_test), cached = pipeline.encode_splits(cfg, data)
        except Exception:
            if store is not None and store.exception() is not None:
                raise store.exception() from None
            raise
        experiment_id = resumed.info.experiment_id if resumed else store.result()
    pretrained = load_pretrained(cfg, data)  # before the run: a chained pretraining is a run of its own
    prepare_seconds = time.perf_counter() - started
    log.info(f"{data.name}: {len(data.train)} train / {len(data.validation)} validation / {len(data.test)} "
          f"test examples, {data.num_classes} classes, vocabulary {preprocessor.vocabulary_size} words, "
          f"inputs {x_train.shape[1:]}{', tokenized data from the cache' if cached else ''} "
          f"({prepare_seconds:.1f} s)")
    metadata = None
    if cfg.model.metadata:  # a second input, imputed and scaled with train statistics only
        metadata = fit_metadata(cfg, data)
        splits = (data.train, data.validation, data.test)
        x_train, x_val, x_test = ({"tokens": x, "metadata": metadata.encode(split.metadata)}
                                  for x, split in zip((x_train, x_val, x_test), splits))
    boundaries = pipeline.bucket_boundaries(cfg, x_train)
    if boundaries:
        log.info(f"length buckets (post padding, masked) with boundaries {boundaries}")

    # With buckets, batches are as wide as their longest example, not max_length.
    spec = InputSpec(vocab_size=cfg.preprocess.vocab_size,
                     sequence_shape=(None,) if boundaries else preprocessor.sequence_shape,
                     num_classes=data.num_classes, mask_zero=preprocessor.mask_zero,
                     metadata_dim=metadata.dim if metadata else 0, max_length=preprocessor.sequence_shape[-1])
    tags = {"device": device, "data_fingerprint": data_fingerprint(x_train, data.train.labels, x_val,
                                                                   data.validation.labels, x_test, data.test.labels)}
    if resumed and resumed.data.tags.get("data_fingerprint") != tags["data_fingerprint"]:
        raise DataError(f"trainer.resume={resumed.info.run_id}: the encoded data differ from those the run started "
                        "with (the data files, the sampling or the fitted vocabulary changed); resuming would mix "
                        "two experiments. Start a new run instead.")
    resume_run_id = resumed.info.run_id if resumed else None
    with tracking.tracked_run(cfg, experiment_id, tags, resume_run_id) as run:
        log.info(f"MLflow run {run.info.run_id} in experiment {tracking.experiment_name(cfg)!r} "
              f"at {tracking.redact_uri(cfg.tracking.uri)}; in the UI: "
              f"{tracking.run_link(cfg.tracking.uri, experiment_id, run.info.run_id)}"
              f"{' (make ui)' if not cfg.tracking.uri.startswith('http') else ''}")
        if not resumed:
            with named_failure(f"record the dataset inputs of MLflow run {run.info.run_id}"):
                tracking.log_dataset(data)
        model = build_model(cfg.model, spec)
        scheduled = initialise_pretrained(model, cfg, preprocessor, pretrained) if pretrained else []
        mlflow.log_params(derived_params(model, preprocessor, boundaries))
        mlflow.set_tag("lstm_kernel", pipeline.recurrent_kernels(model, device))  # cudnn | generic | cpu
        steps_per_epoch = -(-len(data.train) // cfg.trainer.batch_size)  # as pipeline.make_dataset batches
        optimizer, callbacks = make_optimizer(cfg.trainer, steps_per_epoch), []
        if scheduled:  # the pretrained layers' own learning rate: frozen epochs, then a multiplier
            scale = scale_learning_rate(optimizer, scheduled, cfg.model.pretrained_lr_multiplier)
            callbacks = [PretrainedSchedule(scale, cfg.model.pretrained_frozen_epochs,
                                            cfg.model.pretrained_lr_multiplier)]
        model.compile(optimizer=optimizer, loss=make_loss(data.num_classes, cfg.trainer.label_smoothing),
                      metrics=["accuracy"],
                      jit_compile=cfg.trainer.jit_compile)
        pruning = search_pruning(cfg)  # a search's trial: report each epoch, stop where the pruner says
        history, kept = fit(model, cfg, data, x_train, x_val, run.info.run_id, resume=resumed is not None,
                            callbacks=[*callbacks, *([pruning] if pruning else [])])

        if pruning is not None and pruning.pruned_at is not None:  # the search stopped it: no test, no model
            tracking.mark_pruned(run, pruning.pruned_at + 1, pruning.monitor_name)
            curves = learning_curves_figure(history, f"{run.info.run_name} (pruned)", kept)
            with named_failure(f"record learning_curves.png in MLflow run {run.info.run_id}"):
                mlflow.log_figure(curves, "learning_curves.png")
            close_figures(curves)
            tracking.delete_checkpoint(run.info.run_id)
            return Outcome(pruning.last_value, kept_validation(history, kept))
        if cfg.trainer.cv_fold is not None:  # a cross-validation fold: judged on its held-out fold only
            tracking.delete_checkpoint(run.info.run_id)
            return Outcome(objective(cfg, {}, history, kept), kept_validation(history, kept))
        metrics = evaluate_and_log(model, cfg, data, run, x_test, boundaries, history, kept, prepare_seconds)
        if cfg.tracking.log_model:
            model_info = log_model(model, preprocessor, data, metadata, step=kept, model_name=cfg.model.name)
            if cfg.tracking.registered_model:  # inside the run: a failed registration ends it FAILED
                tracking.register_model(cfg, run, model_info.model_uri, metrics)
    tracking.delete_checkpoint(run.info.run_id)  # FINISHED: nothing left to resume
    return Outcome(objective(cfg, metrics, history, kept), kept_validation(history, kept))


def kept_validation(history: dict[str, list[float]], kept: int) -> dict[str, float]:
    return {keras_name(key): float(values[kept]) for key, values in history.items()
            if key.startswith("val_") and kept < len(values)}


def evaluate_and_log(model: keras.Model, cfg: DictConfig, data, run, x_test, boundaries, history, kept: int,
                     prepare_seconds: float) -> dict[str, float]:
    """The test split, touched once by the model as kept: metrics, predictions, report and figures into the run."""
    outputs = pipeline.predict(model, x_test, cfg.trainer.batch_size, boundaries)
    title = f"{run.info.run_name} ({cfg.model.name} on {data.name})"
    metrics, report, confusion = test_metrics(data.test.labels, outputs, data.class_names, title=title)
    curves = learning_curves_figure(history, title, kept)
    try:
        # at the step of the epoch whose weights were tested: the logged model links that step's metrics
        with named_failure(f"record the test metrics in MLflow run {run.info.run_id}"):
            mlflow.log_metrics({**metrics, keras_name("prepare_seconds"): prepare_seconds}, step=kept)
        with named_failure(f"record {PREDICTIONS_ARTIFACT} in MLflow run {run.info.run_id}"):
            log_predictions(data.test.labels, outputs, data.class_names, data.test.ids)
        with named_failure(f"record classification_report.txt in MLflow run {run.info.run_id}"):
            mlflow.log_text(report, "classification_report.txt")
        for figure, name in ((confusion, "confusion_matrix.png"), (curves, "learning_curves.png")):
            with named_failure(f"record {name} in MLflow run {run.info.run_id}"):
                mlflow.log_figure(figure, name)
    finally:
        close_figures(confusion, curves)  # a failed job of a sweep leaves no figure behind either
    log.info("test " + ", ".join(f"{k.split('/')[0]} {v:.4f}" for k, v in metrics.items()))
    log.info(f"classification report on the test split:\n{report}")
    return metrics


def search_pruning(cfg: DictConfig) -> OptunaPruning | None:
    """In a search's job (seqlab.search), a callback reporting the validation side of optimized_metric to its trial."""
    link = tracking.current_trial()
    if link is None or cfg.trainer.cv_fold is not None:  # folds would report the same epochs k times
        return None
    from seqlab.search import job_trial

    monitor = canonical(cfg.optimized_metric).replace("/test", "/val")
    return OptunaPruning(job_trial(link), monitor, to_keras(monitor))


def fit(model: keras.Model, cfg: DictConfig, data, x_train, x_val, run_id: str,
        resume: bool = False, callbacks: list | None = None) -> tuple[dict[str, list[float]], int]:
    """Train, checkpointing into run `run_id` each epoch; with `resume`, from its last checkpoint on.

    Returns the history of every epoch of the run (Keras' names), including those before a resume, and the index
    of the epoch whose weights the model now holds (early stopping restores its best epoch's).
    """
    with tempfile.TemporaryDirectory(prefix="seqlab-") as scratch:  # one backup folder per run, never shared
        backup_dir = Path(scratch) / tracking.CHECKPOINT_PATH if cfg.trainer.checkpoint else None
        initial_epoch = tracking.download_checkpoint(run_id, Path(scratch)) if resume and backup_dir else 0
        if resume:
            log.info(f"resuming run {run_id} after epoch {initial_epoch} of {cfg.trainer.epochs}")
            mlflow.set_tag("resumed_after_epoch", initial_epoch)
        started = time.perf_counter()
        history = _fit(model, cfg, data, x_train, x_val, callbacks=[*(callbacks or []), EpochLogger(
            run_id, backup_dir, cfg.tracking.system_metrics, resume)])
        seconds = time.perf_counter() - started
    if initial_epoch:
        epoch_seconds = keras_name("epoch_seconds")
        seconds += sum(tracking.metric_history(run_id, [epoch_seconds]).get(epoch_seconds, [])[:initial_epoch])
        logged = tracking.metric_history(run_id, [keras_name(key) for key in {"loss", "accuracy", "val_loss",
                                                                               "val_accuracy", *history}])
        history = {to_keras(key): values for key, values in logged.items()}
    epochs = len(history.get("loss", []))
    kept = kept_epoch(history, cfg.trainer, initial_epoch)
    with named_failure(f"record train_seconds and epochs in MLflow run {run_id}"):
        mlflow.log_metrics({keras_name("train_seconds"): seconds, keras_name("epochs"): epochs}, step=kept)
    return history, kept


def kept_epoch(history: dict[str, list[float]], t: DictConfig, initial_epoch: int = 0) -> int:
    """The epoch whose weights the model holds after fit(): the last, or with early stopping the first best of
    those this process trained (Keras' EarlyStopping restores it at the end of training)."""
    epochs = len(history.get("loss", []))
    values = history.get(to_keras(t.monitor), [])[initial_epoch:]
    if t.early_stopping is None or not values:
        return max(epochs - 1, 0)
    best = np.argmin(values) if not higher_is_better(t.monitor) else np.argmax(values)  # the first of equal bests
    return initial_epoch + int(best)


def _fit(model: keras.Model, cfg: DictConfig, data, x_train, x_val, callbacks: list) -> dict[str, list[float]]:
    t = cfg.trainer
    if t.early_stopping is not None:
        callbacks.append(early_stopping(t))
    weights = class_weights(data.train.labels, data.num_classes) if t.class_weight == "balanced" else None
    boundaries = pipeline.bucket_boundaries(cfg, x_train)  # None: padded to max_length
    train_set = make_dataset(x_train, data.train.labels, t.batch_size, seed=t.seed, boundaries=boundaries,
                             pad_to_boundaries=t.jit_compile)  # XLA compiles once per shape
    val_set = make_dataset(x_val, data.validation.labels, t.batch_size, boundaries=boundaries,
                           pad_to_boundaries=t.jit_compile)
    verbose = 1 if t.progress and sys.stdout.isatty() else 2
    history = model.fit(train_set, validation_data=val_set, epochs=t.epochs, callbacks=callbacks,
                        class_weight=weights, shuffle=False, verbose=verbose)  # the dataset shuffles itself
    return history.history


def early_stopping(t: DictConfig) -> keras.callbacks.EarlyStopping:
    """Stops after `t.early_stopping` epochs without a better `t.monitor` and restores the best epoch's weights
    (mode from the name: loss lower, accuracy higher)."""
    return keras.callbacks.EarlyStopping(monitor=to_keras(t.monitor), mode="max" if higher_is_better(t.monitor) else "min",
                                         patience=t.early_stopping, restore_best_weights=True, verbose=1)


def data_fingerprint(*arrays) -> str:
    """SHA-256 (16 hex digits) of the encoded splits and labels: a resumed run must see the very same inputs."""
    digest = hashlib.sha256()

    def add(value):
        if isinstance(value, dict):  # several model inputs
            for key in sorted(value):
                digest.update(str(key).encode())
                add(value[key])
        elif isinstance(value, (list, tuple)):
            for item in value:
                add(item)
        else:
            array = np.ascontiguousarray(value)
            digest.update(f"{array.dtype}{array.shape}".encode())
            digest.update(array.tobytes())

    for array in arrays:
        add(array)
    return digest.hexdigest()[:16]


def fit_metadata(cfg: DictConfig, data) -> MetadataPreprocessor:
    if data.train.metadata is None or not data.metadata_names:
        raise ConfigError(f"Config key 'model.metadata' is true, but dataset {data.name!r} gives no numeric metadata "
                          f"(dataset.metadata_columns={list(cfg.dataset.metadata_columns or [])}); set "
                          "model.metadata=false or use a dataset with metadata columns.")
    return MetadataPreprocessor(data.metadata_names).fit(data.train.metadata)


def log_model(model: keras.Model, preprocessor, data, metadata: MetadataPreprocessor | None = None,
              step: int = 0, model_name: str | None = None):
    """Log the network with the preprocessing in front of it as an MLflow pyfunc model (seqlab.serving), which
    takes a DataFrame of raw strings (and, with metadata, raw numbers: the imputation and scaling fitted on train
    are layers of the model too). MLflow links the run's metrics at `step` (the epoch whose weights the model
    holds) to the logged model. Returns its ModelInfo (model_id, model_uri), e.g. to register it."""
    from seqlab import serving

    text = keras.Input(shape=(), dtype="string", name="text")
    if metadata is None:
        inputs, network_inputs = text, preprocessor.apply(text)
    else:
        numbers = keras.Input(shape=(metadata.dim,), dtype="float32", name="metadata")
        inputs = {"text": text, "metadata": numbers}
        network_inputs = {"tokens": preprocessor.apply(text), "metadata": metadata.apply(numbers)}
    end_to_end = keras.Model(inputs, model(network_inputs), name=f"{model.name}_on_text")
    classifier = serving.TextClassifier(data.class_names, metadata.names if metadata else [],
                                        getattr(preprocessor.cfg, "speaker_tokens", False))
    return log_end_to_end(end_to_end, classifier, data, step, model_name or model.name)


def log_end_to_end(end_to_end: keras.Model, classifier, data, step: int, model_name: str):
    """Log `end_to_end` (raw strings, and metadata numbers, in; probabilities out) as the run's pyfunc model."""
    import pandas as pd
    from mlflow.models import ModelSignature
    from mlflow.types.schema import AnyType, ColSpec, ParamSchema, ParamSpec, Schema

    from seqlab import serving

    columns = classifier.metadata_columns
    example = pd.DataFrame({serving.TEXT_COLUMN: list(data.test.texts[:2])})
    if columns:
        example = example.join(pd.DataFrame(np.asarray(data.test.metadata[:2], np.float64), columns=columns))
    # text or messages (a thread), both optional in the schema: MLflow drops the columns a signature lacks
    signature = ModelSignature(
        inputs=Schema([ColSpec("string", serving.TEXT_COLUMN, required=False),
                       ColSpec(AnyType(), serving.THREAD_COLUMN, required=False),
                       *(ColSpec("double", column) for column in columns)]),
        outputs=Schema([ColSpec("string", "label"),
                        *(ColSpec("double", name) for name in classifier.output_columns[1:])]),
        params=ParamSchema([ParamSpec("batch_size", "long", serving.DEFAULT_BATCH_SIZE)]))
    requirements = [f"tensorflow=={tf.__version__}", f"keras=={keras.__version__}", f"mlflow=={mlflow.__version__}"]
    # the description MLflow's UI shows on the logged model's page is this tag (Markdown)
    tags = {"mlflow.note.content": serving.description(model_name, data.name, classifier)}
    with tempfile.TemporaryDirectory(prefix="seqlab-model-") as scratch, \
            named_failure("record the model (artifact 'model') in the MLflow run"):
        # MLflow's custom-flavor path: the folder (model.keras and classifier.json) is copied into the model and
        # seqlab.serving._load_pyfunc reads it back; nothing is pickled
        folder = serving.write_model_data(Path(scratch) / serving.DATA_FOLDER, classifier, end_to_end)
        return mlflow.pyfunc.log_model(
            name="model", loader_module=serving.LOADER_MODULE, data_path=str(folder),
            signature=signature, input_example=example, pip_requirements=requirements,
            metadata=serving.model_metadata(classifier, data.name), tags=tags, step=step)


def load_pretrained(cfg: DictConfig, data):
    """The vectors `model.pretrained` names (None without): `pretrain` runs the run's pretrain group, or reuses the
    finished pretraining with the same corpus and settings. A pretrain group the model does not use is dropped, so
    that the run's params do not claim it."""
    from seqlab import pretrained
    from seqlab.pretrain import pretrain

    m = cfg.model
    if not m.pretrained:
        if cfg.get("pretrain") is not None:
            log.info(f"pretrain={cfg.pretrain.name} is not used: model.pretrained is null")
            cfg.pretrain = None
        if m.pretrained_frozen_epochs is not None or m.pretrained_lr_multiplier is not None:
            log.info("model.pretrained_frozen_epochs and model.pretrained_lr_multiplier do not apply: "
                     "model.pretrained is null")
        m.pretrained_frozen_epochs = m.pretrained_lr_multiplier = None
        return None
    # the logged params say what ran
    m.pretrained_frozen_epochs = m.pretrained_frozen_epochs or 0
    m.pretrained_lr_multiplier = 1.0 if m.pretrained_lr_multiplier is None else m.pretrained_lr_multiplier
    source = m.pretrained
    if pretrained.is_pretrain_reference(source):
        source = f"runs:/{pretrain(cfg, data)}"
        keras.utils.set_random_seed(cfg.trainer.seed)  # the model's initial weights as without a pretraining now
    else:
        cfg.pretrain = None  # the vectors come from elsewhere; the group would only mislead the params
    vectors = pretrained.resolve(source, cfg.tracking.uri)
    vectors.source = source
    return vectors


def initialise_pretrained(model: keras.Model, cfg: DictConfig, preprocessor, vectors) -> list:
    """Set the model's embedding (and LSTM) from `vectors`, record coverage and lineage; returns the variables set
    when a fine-tuning schedule applies (frozen epochs or a learning-rate multiplier), else []."""
    from mlflow.entities import LoggedModelInput

    from seqlab.pretrained import initialise

    report = initialise(model, preprocessor.vectorizer.get_vocabulary(), vectors, cfg.model.name)
    log.info(f"pretrained {vectors.source}: {report.found} of {report.vocabulary} vocabulary words have a vector "
             f"({report.coverage:.1%}); LSTM: {report.lstm}")
    mlflow.log_params({"derived.pretrained": vectors.source if not vectors.run_id else f"runs:/{vectors.run_id}",
                       "derived.pretrained_lstm": report.lstm})
    mlflow.log_metric("pretrained/coverage", report.coverage)
    if vectors.run_id:
        mlflow.set_tag("pretrained.run_id", vectors.run_id)
    run_id = mlflow.active_run().info.run_id
    note = mlflow.MlflowClient().get_run(run_id).data.tags.get(tracking.MLFLOW_RUN_NOTE, "")
    source = f"pretraining run {vectors.run_id}" if vectors.run_id else f"`{vectors.source}`"
    if "Fine-tuned from" not in note:  # a resumed run has it already
        mlflow.set_tag(tracking.MLFLOW_RUN_NOTE, f"{note}\n\nFine-tuned from {source}: {report.coverage:.1%} of the "
                       f"vocabulary has a pretrained vector; LSTM: {report.lstm}.".strip())
    if vectors.model_id:  # MLflow lineage: the pretraining's logged model is an input of this run
        with named_failure("record the pretrained model as an input of the MLflow run"):
            mlflow.MlflowClient().log_inputs(run_id, models=[LoggedModelInput(vectors.model_id)])
    m = cfg.model
    return report.variables if m.pretrained_frozen_epochs or m.pretrained_lr_multiplier != 1.0 else []


def derived_params(model: keras.Model, preprocessor, boundaries: list[int] | None) -> dict[str, str]:
    """What makes runs comparable beyond their keys: the network's size and what it actually reads."""
    shape = preprocessor.sequence_shape
    if boundaries:
        batching = f"length buckets ({len(boundaries)}), post padding, masked"
    else:
        batching = f"padded to {' x '.join(map(str, shape))} ({preprocessor.cfg.padding})"
    trainable = sum(int(np.prod(weight.shape)) for weight in model.trainable_weights)
    return {"derived.trainable_params": str(trainable),
            "derived.input_length": " x ".join(map(str, shape)) + (" (units x words)" if len(shape) > 1 else " words"),
            "derived.vocabulary": str(preprocessor.vocabulary_size), "derived.batching": batching}


def objective(cfg: DictConfig, metrics: dict[str, float], history: dict[str, list[float]], kept: int) -> float:
    """The value of `optimized_metric` for the model as kept: a test metric, or the kept epoch's validation one (also
    for a test metric where the run has none: a cross-validation fold)."""
    name = canonical(cfg.optimized_metric)
    if name not in metrics:
        name = name.replace("/test", "/val")
    return float(metrics[name]) if name in metrics else float(history[to_keras(name)][kept])
