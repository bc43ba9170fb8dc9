"""One training run of a resolved plan: load the data, fit the preprocessing on train, fit the model, test it once
and record everything in MLflow. Each stage receives its part of the plan (seqlab.config.plan)."""

from __future__ import annotations

import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Optional

import keras
import mlflow
import numpy as np

from seqlab.config.plan import RunPlan
from seqlab.data import load_dataset
from seqlab.errors import ConfigError, DataError
from seqlab.features import pipeline
from seqlab.features.cache import encode_splits
from seqlab.features.fingerprint import data_fingerprint
from seqlab.features.kernels import recurrent_kernels
from seqlab.features.preprocess import InputSpec, MetadataPreprocessor
from seqlab.metrics import EPOCH_METRICS
from seqlab.models.catalog import build_model
from seqlab.record.datasets import log_dataset
from seqlab.record.failures import named_failure
from seqlab.record.lifecycle import run_lifecycle
from seqlab.record.naming import log_identity, mark_pruned, run_name, run_tags
from seqlab.record.registry import register_model
from seqlab.record.resume import delete_checkpoint
from seqlab.record.store import check_reachable, configure, run_link
from seqlab.redaction import redact_uri
from seqlab.search.pruning import search_pruning
from seqlab.serving.export import log_model
from seqlab.training.callbacks import PretrainedSchedule
from seqlab.training.fit import fit, kept_validation
from seqlab.training.optimizers import make_loss, make_optimizer, scale_learning_rate
from seqlab.training.runtime import setup_runtime
from seqlab.workflow.evaluate import evaluate_and_log, objective
from seqlab.workflow.pretrained import initialise_pretrained, load_pretrained

log = logging.getLogger(__name__)


@dataclass
class Outcome:
    objective: float  # the value of optimized_metric that train() returns to sweepers
    validation: dict[str, float]  # the validation metrics of the epoch whose weights the model kept (MLflow names)


@dataclass
class Prepared:
    """What a run has before it starts recording: the data, encoded, and where the run goes."""

    data: Any
    preprocessor: Any
    inputs: tuple  # train, validation, test model inputs
    metadata: Optional[MetadataPreprocessor]
    boundaries: Optional[list[int]]
    spec: InputSpec
    tags: dict[str, str]
    experiment_id: str
    vectors: Any  # pretrained vectors, or None
    seconds: float


def train_run(plan: RunPlan, resumed=None, cv_parent: str | None = None) -> Outcome:
    """One training run of `plan` (a fold of cross-validation `cv_parent` where given); `resumed`: the run that
    trainer.resume continues."""
    threads = setup_runtime(plan.runtime)  # first: the GPU can be hidden only before TensorFlow starts
    if threads != plan.runtime.intra_op_threads:  # TensorFlow had started: the record says what runs
        plan = plan.replaced(**{"trainer.intra_op_threads": threads})
    prepared = prepare(plan, resumed)
    record = plan.record
    name = None if resumed else run_name(record, prepared.experiment_id)
    with run_lifecycle(prepared.experiment_id, run_name=name, join=resumed.info.run_id if resumed else None,
                       tags=prepared.tags) as run:
        log.info(f"MLflow run {run.info.run_id} in experiment {record.experiment!r} at {redact_uri(record.uri)}; in "
                 f"the UI: {run_link(record.uri, prepared.experiment_id, run.info.run_id)}"
                 f"{' (make ui)' if not record.uri.startswith('http') else ''}")
        if not resumed:
            log_identity(record)
            mlflow.set_tags(run_tags(record, cv_parent, plan.trainer.cv_fold))
            with named_failure(f"record the dataset inputs of MLflow run {run.info.run_id}"):
                log_dataset(prepared.data)
        outcome = fit_and_test(plan, prepared, run, resumed is not None)
    delete_checkpoint(run.info.run_id)  # ended: nothing left to resume
    return outcome


def prepare(plan: RunPlan, resumed) -> Prepared:
    """Read and encode the data (the store opens meanwhile), fit the metadata input, load pretrained vectors."""
    started = time.perf_counter()
    check_reachable(plan.record.uri)  # a server that does not answer: before any data is read or downloaded
    # Opening the store (a second with SQLite) overlaps reading the data; a bad store still stops the run
    # before anything is recorded or trained, and is reported before a data error (fix it first).
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="seqlab-store") as pool:
        store = None if resumed else pool.submit(configure, plan.record.uri, plan.record.experiment,
                                                 plan.record.dataset)
        try:
            data = load_dataset(plan.data)
            preprocessor, inputs, cached = encode_splits(plan.features, data)
        except Exception:
            if store is not None and store.exception() is not None:
                raise store.exception() from None
            raise
        experiment_id = resumed.info.experiment_id if resumed else store.result()
    vectors = load_pretrained(plan, data)  # before the run: a chained pretraining is a run of its own
    seconds = time.perf_counter() - started
    log.info(f"{data.name}: {len(data.train)} train / {len(data.validation)} validation / {len(data.test)} "
             f"test examples, {data.num_classes} classes, vocabulary {preprocessor.vocabulary_size} words, "
             f"inputs {inputs[0].shape[1:]}{', tokenized data from the cache' if cached else ''} ({seconds:.1f} s)")
    metadata = None
    if plan.features.metadata:  # a second input, imputed and scaled with train statistics only
        metadata = fit_metadata(data, plan.data.dataset.get("metadata_columns"))
        splits = (data.train, data.validation, data.test)
        inputs = [{"tokens": x, "metadata": metadata.encode(split.metadata)} for x, split in zip(inputs, splits)]
    boundaries = pipeline.bucket_boundaries(plan.features, inputs[0])
    if boundaries:
        log.info(f"length buckets (post padding, masked) with boundaries {boundaries}")
    # With buckets, batches are as wide as their longest example, not max_length.
    spec = InputSpec(vocab_size=plan.features.preprocess.vocab_size,
                     sequence_shape=(None,) if boundaries else preprocessor.sequence_shape,
                     num_classes=data.num_classes, mask_zero=preprocessor.mask_zero,
                     metadata_dim=metadata.dim if metadata else 0, max_length=preprocessor.sequence_shape[-1])
    tags = {"device": plan.device, "data_fingerprint": data_fingerprint(
        inputs[0], data.train.labels, inputs[1], data.validation.labels, inputs[2], data.test.labels)}
    if resumed and resumed.data.tags.get("data_fingerprint") != tags["data_fingerprint"]:
        raise DataError(f"trainer.resume={resumed.info.run_id}: the encoded data differ from those the run started "
                        "with (the data files, the sampling or the fitted vocabulary changed); resuming would mix "
                        "two experiments. Start a new run instead.")
    return Prepared(data, preprocessor, tuple(inputs), metadata, boundaries, spec, tags, experiment_id, vectors,
                    seconds)


def fit_and_test(plan: RunPlan, prepared: Prepared, run, resume: bool) -> Outcome:
    """Build and fit the model inside the run; then test it once, log it and register it (not a fold, not pruned)."""
    data, trainer, (x_train, x_val, x_test) = prepared.data, plan.trainer, prepared.inputs
    model = build_model(plan.model, prepared.spec)
    scheduled = []  # the pretrained variables that get a fine-tuning schedule
    if prepared.vectors is not None:
        scheduled = initialise_pretrained(model, plan.pretrained, plan.record.model, prepared.preprocessor,
                                          prepared.vectors)
    mlflow.log_params(derived_params(model, prepared.preprocessor, prepared.boundaries))
    mlflow.set_tag("lstm_kernel", recurrent_kernels(model, plan.device))  # cudnn | generic | cpu
    steps_per_epoch = -(-len(data.train) // trainer.batch_size)  # as pipeline.make_dataset batches
    optimizer, callbacks = make_optimizer(trainer, steps_per_epoch), []
    if scheduled:  # the pretrained layers' own learning rate: frozen epochs, then a multiplier
        scale = scale_learning_rate(optimizer, scheduled, plan.pretrained.lr_multiplier)
        callbacks = [PretrainedSchedule(scale, plan.pretrained.frozen_epochs, plan.pretrained.lr_multiplier)]
    model.compile(optimizer=optimizer, loss=make_loss(data.num_classes, trainer.label_smoothing),
                  metrics=list(EPOCH_METRICS), jit_compile=trainer.jit_compile)
    pruning = search_pruning(plan.optimized_metric, is_fold=trainer.cv_fold is not None)
    history, kept = fit(model, trainer, data, x_train, x_val, run.info.run_id, prepared.boundaries,
                        plan.features.pad_to_boundaries, plan.record.system_metrics, resume,
                        callbacks=[*callbacks, *([pruning] if pruning else [])])
    if pruning is not None and pruning.pruned_at is not None:  # the search stopped it: no test, no model
        record_pruned(run, history, kept, pruning)
        return Outcome(pruning.last_value, kept_validation(history, kept))
    if trainer.cv_fold is not None:  # a cross-validation fold: judged on its held-out fold only
        return Outcome(objective(plan.optimized_metric, {}, history, kept), kept_validation(history, kept))
    metrics = evaluate_and_log(model, plan.record.model, trainer.batch_size, data, run, x_test, prepared.boundaries,
                               history, kept, prepared.seconds)
    if plan.record.log_model:
        model_info = log_model(model, prepared.preprocessor, data, prepared.metadata, step=kept,
                               model_name=plan.record.model)
        if plan.record.registered_model:  # inside the run: a failed registration ends it FAILED
            register_model(plan.record, run, model_info.model_uri, metrics)
    return Outcome(objective(plan.optimized_metric, metrics, history, kept), kept_validation(history, kept))


def record_pruned(run, history: dict[str, list[float]], kept: int, pruning) -> None:
    """A pruned trial's run: its curves and the pruned marks, no test and no model."""
    from seqlab.analysis.evaluate import close_figures, learning_curves_figure

    mark_pruned(run, pruning.pruned_at + 1, pruning.monitor_name)
    curves = learning_curves_figure(history, f"{run.info.run_name} (pruned)", kept)
    with named_failure(f"record learning_curves.png in MLflow run {run.info.run_id}"):
        mlflow.log_figure(curves, "learning_curves.png")
    close_figures(curves)


def fit_metadata(data, columns) -> MetadataPreprocessor:
    if data.train.metadata is None or not data.metadata_names:
        raise ConfigError(f"Config key 'model.metadata' is true, but dataset {data.name!r} gives no numeric metadata "
                          f"(dataset.metadata_columns={list(columns or [])}); set model.metadata=false or use a "
                          "dataset with metadata columns.")
    return MetadataPreprocessor(data.metadata_names).fit(data.train.metadata)


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
