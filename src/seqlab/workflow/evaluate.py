"""The test split, touched once by the model as kept: metrics, predictions, report and figures into the run; and the
value a sweeper optimises."""

from __future__ import annotations

import logging

import keras
import mlflow

from seqlab.analysis.evaluate import close_figures, learning_curves_figure, test_metrics
from seqlab.analysis.significance import PREDICTIONS_ARTIFACT, log_predictions
from seqlab.features import pipeline
from seqlab.metrics import canonical, keras_name, to_keras
from seqlab.record.failures import named_failure

log = logging.getLogger(__name__)


def evaluate_and_log(model: keras.Model, model_name: str, batch_size: int, data, run, x_test, boundaries, history, kept: int,
                     prepare_seconds: float) -> dict[str, float]:
    """The test split, touched once by the model as kept: metrics, predictions, report and figures into the run."""
    outputs = pipeline.predict(model, x_test, batch_size, boundaries)
    title = f"{run.info.run_name} ({model_name} on {data.name})"
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


def objective(optimized_metric: str, metrics: dict[str, float], history: dict[str, list[float]], kept: int) -> float:
    """The value of `optimized_metric` for the model as kept: a test metric, or the kept epoch's validation one (also
    for a test metric where the run has none: a cross-validation fold)."""
    name = canonical(optimized_metric)
    if name not in metrics:
        name = name.replace("/test", "/val")
    return float(metrics[name]) if name in metrics else float(history[to_keras(name)][kept])
