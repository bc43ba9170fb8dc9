"""MLflow glue: the store, the experiment, one run's lifecycle, tags and artifacts."""

from __future__ import annotations

import contextlib
import re
import subprocess
from pathlib import Path

import mlflow
from mlflow.exceptions import MlflowException
from omegaconf import DictConfig, OmegaConf

import seqlab
from seqlab.config import to_flat_dict
from seqlab.errors import ConfigError

MAX_PARAM_LENGTH = 6000  # MLflow's limit on one param value


def artifact_root_for(uri: str) -> str | None:
    """For a SQLite store, artifacts go beside the database (else MLflow uses ./mlruns of the cwd)."""
    if uri.startswith("sqlite:///"):
        database = Path(uri[len("sqlite:///"):]).expanduser()
        return (database.resolve().parent / "mlartifacts").as_uri()
    return None


def experiment_name(cfg: DictConfig) -> str:
    return cfg.tracking.experiment or cfg.dataset.name


def configure(cfg: DictConfig) -> str:
    """Point MLflow at the store and return the experiment's id, creating the experiment if needed."""
    uri = cfg.tracking.uri
    mlflow.set_tracking_uri(uri)
    name = experiment_name(cfg)
    try:
        experiment = mlflow.get_experiment_by_name(name)
        if experiment is not None:
            if experiment.lifecycle_stage == "deleted":
                raise ConfigError(f"MLflow experiment {name!r} at {uri} is deleted; restore it in the UI or pick "
                                  "another tracking.experiment.")
            return experiment.experiment_id
        root = artifact_root_for(uri)
        location = f"{root}/{re.sub(r'[^A-Za-z0-9_.-]+', '_', name)}" if root else None
        try:
            return mlflow.create_experiment(name, artifact_location=location)
        except MlflowException:  # a parallel job created it first
            return mlflow.get_experiment_by_name(name).experiment_id
    except MlflowException as error:
        raise ConfigError(f"Cannot use the MLflow store tracking.uri={uri!r}: {str(error).splitlines()[0]}") from None


def git_commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(seqlab.__file__).parent, text=True,
                              capture_output=True, timeout=5, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"


@contextlib.contextmanager
def tracked_run(cfg: DictConfig, experiment_id: str, tags: dict[str, str]):
    """An MLflow run that always ends: FINISHED, FAILED (error message as a tag) or KILLED (Ctrl-C)."""
    run = mlflow.start_run(experiment_id=experiment_id, run_name=cfg.tracking.run_name,
                           nested=mlflow.active_run() is not None)
    try:
        mlflow.set_tags({"dataset": cfg.dataset.name, "model": cfg.model.name, "git_commit": git_commit(),
                         "seqlab_version": seqlab.__version__, **tags})
        log_config(cfg)
        yield run
    except KeyboardInterrupt:
        _end(run, "KILLED", "interrupted (KeyboardInterrupt or SIGTERM)")
        raise
    except BaseException as error:
        _end(run, "FAILED", f"{type(error).__name__}: {error}")
        raise
    else:
        mlflow.end_run("FINISHED")


def _end(run, status: str, message: str) -> None:
    with contextlib.suppress(Exception):
        mlflow.set_tag("error", message[:5000])
    mlflow.end_run(status)


def log_config(cfg: DictConfig) -> None:
    params = {key: _param_text(value) for key, value in to_flat_dict(cfg).items()}
    mlflow.log_params(params)
    mlflow.log_text(OmegaConf.to_yaml(cfg, resolve=True), "config.yaml")


def _param_text(value) -> str:
    text = "null" if value is None else str(value)
    return text if len(text) <= MAX_PARAM_LENGTH else text[: MAX_PARAM_LENGTH - 3] + "..."
