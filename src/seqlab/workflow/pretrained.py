"""Pretrained word vectors for a training run (the plan's pretrained part): run or reuse the chained pretraining,
read the vectors, initialise the model's embedding (and LSTM) from them, and record coverage and lineage."""

from __future__ import annotations

import logging

import keras
import mlflow
from mlflow.entities import LoggedModelInput
from mlflow.utils.mlflow_tags import MLFLOW_RUN_NOTE

from seqlab.config.plan import RunPlan
from seqlab.pretraining import vectors as pretrained_vectors
from seqlab.pretraining.pretrain import pretrain
from seqlab.record.failures import named_failure

log = logging.getLogger(__name__)


def load_pretrained(plan: RunPlan, data):
    """The vectors `model.pretrained` names (None without): `pretrain` runs the run's pretrain group first (a run of
    its own), or reuses the finished pretraining with the same corpus and settings."""
    part = plan.pretrained
    if not part.source:
        return None
    source = part.source
    if part.chained:
        source = f"runs:/{pretrain(plan, data)}"
        keras.utils.set_random_seed(plan.runtime.seed)  # the model's initial weights as without a pretraining now
    vectors = pretrained_vectors.resolve(source, plan.record.uri)
    vectors.source = source
    return vectors


def initialise_pretrained(model: keras.Model, part, model_name: str, preprocessor, vectors) -> list:
    """Set the model's embedding (and LSTM) from `vectors`, record coverage and lineage; returns the variables set
    when a fine-tuning schedule applies (`part`: frozen epochs or a learning-rate multiplier), else []."""
    report = pretrained_vectors.initialise(model, preprocessor.vectorizer.get_vocabulary(), vectors, model_name)
    log.info(f"pretrained {vectors.source}: {report.found} of {report.vocabulary} vocabulary words have a vector "
             f"({report.coverage:.1%}); LSTM: {report.lstm}")
    mlflow.log_params({"derived.pretrained": vectors.source if not vectors.run_id else f"runs:/{vectors.run_id}",
                       "derived.pretrained_lstm": report.lstm})
    mlflow.log_metric("pretrained/coverage", report.coverage)
    if vectors.run_id:
        mlflow.set_tag("pretrained.run_id", vectors.run_id)
    run_id = mlflow.active_run().info.run_id
    note = mlflow.MlflowClient().get_run(run_id).data.tags.get(MLFLOW_RUN_NOTE, "")
    source = f"pretraining run {vectors.run_id}" if vectors.run_id else f"`{vectors.source}`"
    if "Fine-tuned from" not in note:  # a resumed run has it already
        mlflow.set_tag(MLFLOW_RUN_NOTE, f"{note}\n\nFine-tuned from {source}: {report.coverage:.1%} of the "
                       f"vocabulary has a pretrained vector; LSTM: {report.lstm}.".strip())
    if vectors.model_id:  # MLflow lineage: the pretraining's logged model is an input of this run
        with named_failure("record the pretrained model as an input of the MLflow run"):
            mlflow.MlflowClient().log_inputs(run_id, models=[LoggedModelInput(vectors.model_id)])
    return report.variables if part.frozen_epochs or part.lr_multiplier != 1.0 else []
