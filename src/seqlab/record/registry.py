"""The model registry: a version of tracking.registered_model for a run's logged model."""

from __future__ import annotations

import logging

import mlflow
from mlflow.tracking import MlflowClient

from seqlab.config.plan import RecordPlan
from seqlab.jobs import current_job
from seqlab.record.failures import named_failure

log = logging.getLogger(__name__)


def register_model(record: RecordPlan, run, model_uri: str | None, metrics: dict[str, float]) -> None:
    """A new version of the registered model `tracking.registered_model` from the run's logged model, tagged with
    the run, model and dataset. A failure raises RecordingError (the run ends FAILED)."""
    name, run_id, run_name = record.registered_model, run.info.run_id, run.info.run_name
    tags = {"run_name": run_name, "model": record.model, "dataset": record.dataset}
    job = current_job()
    if job is not None:
        tags["sweep"] = job.name
    scores = ", ".join(f"{key} {value:.4f}" for key, value in metrics.items() if key.endswith("/test"))
    with named_failure(f"register the model of MLflow run {run_id} as {name!r} in the model registry",
                       "The registry needs a database store (sqlite:///, postgresql://) or a tracking server."):
        version = mlflow.register_model(model_uri or f"runs:/{run_id}/model", name, tags=tags)
        client = MlflowClient()
        client.update_model_version(name, version.version, description=(
            f"`{run_name}`: {record.model} trained on {record.dataset} by run `{run_id}`"
            + (f" in sweep `{job.name}`" if job else "") + f" ({scores or 'no test metrics'}). Takes raw text: "
            f"`seqlab predict models:/{name}/{version.version} --text \"...\"`."))
        if not client.get_registered_model(name).description:
            client.update_registered_model(name, description=(
                f"Text classifiers trained by seqlab (`seqlab train tracking.registered_model={name}`), one version "
                "per run: the network with its text preprocessing, so it predicts from raw strings (class names in "
                "its metadata). Alias `champion`: the best child of the latest sweep that registered here, chosen "
                f"on the validation metric. `seqlab predict models:/{name}@champion --text \"...\"`."))
    log.info(f"registered model {name!r} version {version.version} (run {run_name!r})")
