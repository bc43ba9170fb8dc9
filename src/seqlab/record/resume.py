"""trainer.resume: everything a resumed run needs lives in its own MLflow record (config.yaml, the
data_fingerprint tag, the checkpoint/ artifacts), so a run can be resumed from any machine that sees the store."""

from __future__ import annotations

import contextlib
import json
import logging
from pathlib import Path

import mlflow
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from omegaconf import DictConfig, OmegaConf

from seqlab.config.compose import structured, to_flat_dict
from seqlab.errors import ConfigError, RecordingError
from seqlab.record.owner import OWNER_TAG, owner_parts, owner_state, process_owner
from seqlab.record.store import check_no_inherited_run, check_reachable
from seqlab.redaction import REDACTED, redact_uri

log = logging.getLogger(__name__)


RESUME_OVERRIDABLE = ("trainer.resume", "trainer.takeover", "trainer.progress", "tracking.uri", "data_dir",
                      "cache_dir")


CHECKPOINT_PATH = "checkpoint"  # run artifact folder holding Keras' BackupAndRestore files


def check_not_trained_elsewhere(run, takeover: bool) -> None:
    """A RUNNING run may be resumed only when the process that trained it is gone: two processes writing into one
    run would duplicate its epochs, test metrics and model. Raises ConfigError."""
    run_id, owner = run.info.run_id, run.data.tags.get(OWNER_TAG)
    if owner is None:  # a run of an earlier seqlab: no owner recorded
        log.warning(f"run {run_id} is marked {run.info.status}: its process died without ending it, or is still "
                    "running (then stop it first).")
        return
    if owner == process_owner():  # this process, whose earlier attempt could not end the run (a full disk)
        return
    host, pid, _ = owner_parts(owner)
    state = owner_state(owner)
    if state == "alive":
        raise ConfigError(f"Config key 'trainer.resume' is {run_id!r}, a run that process {pid} on this host is still "
                          f"training. Stop it first (kill -TERM {pid} ends the run KILLED, resumable from its last "
                          "epoch) or wait for it to end.")
    if state == "elsewhere" and not takeover:
        raise ConfigError(f"Config key 'trainer.resume' is {run_id!r}, a run marked {run.info.status} by process {pid} "
                          f"on host {host!r}, which cannot be checked from here. If that process is gone (its machine "
                          "or job was killed), add trainer.takeover=true to continue the run here; if it still trains, "
                          "stop it first: two processes writing into one run duplicate its epochs.")
    log.info(f"run {run_id} is marked {run.info.status} but its process ({pid} on {host}) is gone: continuing it here")


def resumable_run(run_id: str, uri: str, takeover: bool = False):
    """The run `run_id` (trainer.resume) in the store `uri`, checked to be one that can continue (`takeover`: one
    marked RUNNING by a process on another host). Raises ConfigError."""
    check_no_inherited_run()
    check_reachable(uri)
    mlflow.set_tracking_uri(uri)
    try:
        run = MlflowClient().get_run(run_id)
    except MlflowException as error:
        if error.error_code != "RESOURCE_DOES_NOT_EXIST" and "not found" not in str(error).lower():
            raise ConfigError(f"Cannot read run {run_id!r} from the MLflow store tracking.uri={redact_uri(uri)!r}: "
                              f"{redact_uri(str(error).splitlines()[0])}") from None
        raise ConfigError(f"Config key 'trainer.resume' is {run_id!r}, but the MLflow store at {redact_uri(uri)} "
                          "(tracking.uri) has no run with that id. Use the id 'seqlab train' printed "
                          "('seqlab: MLflow run <id> ...') or the one shown in the MLflow UI.") from None
    if run.info.lifecycle_stage == "deleted":
        raise ConfigError(f"Config key 'trainer.resume' is {run_id!r}, a deleted run; restore it in the MLflow UI "
                          "first.")
    if run.info.status == "FINISHED":
        raise ConfigError(f"Config key 'trainer.resume' is {run_id!r}, a run that already FINISHED: there is "
                          "nothing to resume. Start a new run instead (without trainer.resume).")
    if run.info.status in ("RUNNING", "SCHEDULED"):
        check_not_trained_elsewhere(run, takeover)
    return run


def resumed_config(cfg: DictConfig, run) -> DictConfig:
    """The config the run started with (its config.yaml), with where-things-are keys taken from `cfg`."""
    run_id = run.info.run_id
    _refuse_other_overrides(run_id)
    try:
        text = mlflow.artifacts.load_text(f"{run.info.artifact_uri}/config.yaml")
    except Exception:  # MLflow raises several types for a missing artifact
        raise ConfigError(f"Config key 'trainer.resume' is {run_id!r}, a run without config.yaml: it was not "
                          "started by 'seqlab train' and cannot be resumed.") from None
    try:
        stored = structured(OmegaConf.to_container(OmegaConf.create(text)))
    except Exception as error:  # OmegaConf's errors for keys or types that this version does not know
        raise ConfigError(f"Run {run_id}'s config.yaml does not fit this seqlab version's config schema "
                          f"({str(error).splitlines()[0]}); resume it with the version that started it "
                          f"(tag seqlab_version {run.data.tags.get('seqlab_version', '?')}).") from None
    for key, value in to_flat_dict(stored).items():
        if value == REDACTED or key in RESUME_OVERRIDABLE:
            OmegaConf.update(stored, key, OmegaConf.select(cfg, key), merge=False)
    return stored


def _refuse_other_overrides(run_id: str) -> None:
    """On the command line, only where things are may change: the run continues with its own config."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return
    keys = [override.split("=", 1)[0].lstrip("+~") for override in HydraConfig.get().overrides.task]
    others = [key for key in keys if key not in RESUME_OVERRIDABLE]
    if others:
        raise ConfigError(f"trainer.resume={run_id} continues that run with the config it was started with; drop "
                          f"the other overrides ({', '.join(others)}). Only {', '.join(RESUME_OVERRIDABLE)} may "
                          "be given with it.")


def download_checkpoint(run_id: str, destination: Path) -> int:
    """Copy the run's last checkpoint into `destination`/checkpoint; returns its number of finished epochs."""
    try:
        if not MlflowClient().list_artifacts(run_id, CHECKPOINT_PATH):
            return 0  # killed in its first epoch: nothing was backed up yet
        mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=CHECKPOINT_PATH, dst_path=str(destination))
        return int(json.loads((destination / CHECKPOINT_PATH / "training_metadata.json").read_text())["epoch"])
    except (MlflowException, OSError, ValueError, KeyError) as error:  # restarting from epoch 0 would hide it
        raise RecordingError(f"Could not read the checkpoint of run {run_id} (its {CHECKPOINT_PATH}/ artifacts): "
                             f"{type(error).__name__}: {redact_uri(str(error))}. Resume again once the store is "
                             "readable, or start a new run.") from None


def delete_checkpoint(run_id: str) -> None:
    """A FINISHED run cannot be resumed: its checkpoint would only take space. Best effort."""
    from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

    with contextlib.suppress(Exception):  # some artifact stores cannot delete
        get_artifact_repository(MlflowClient().get_run(run_id).info.artifact_uri).delete_artifacts(CHECKPOINT_PATH)


def metric_history(run_id: str, keys) -> dict[str, list[float]]:
    """{metric: values by step} as logged in the run (the last value where a step was logged twice)."""
    client = MlflowClient()
    history = {}
    for key in keys:
        by_step = {m.step: m.value for m in sorted(client.get_metric_history(run_id, key),
                                                   key=lambda m: (m.step, m.timestamp))}
        if by_step:
            history[key] = [by_step[step] for step in sorted(by_step)]
    return history
