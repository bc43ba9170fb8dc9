"""What a training run is called and what it says of itself: its params (the resolved keys of the run plan), seed
group, name, tags, source tags and description. Reads the plan's record part only (seqlab.config.plan.RecordPlan)."""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
from pathlib import Path

import mlflow
from mlflow.tracking import MlflowClient
from mlflow.utils.mlflow_tags import MLFLOW_RUN_NOTE
from omegaconf import DictConfig, OmegaConf

import seqlab
from seqlab.config.compose import to_flat_dict
from seqlab.config.plan import RecordPlan
from seqlab.jobs import child_description, current_job, current_trial, job_overrides
from seqlab.record.failures import named_failure
from seqlab.redaction import redacted, safe_overrides
from seqlab.schema.root import is_location_key

MAX_PARAM_LENGTH = 6000  # MLflow's limit on one param value
PRUNED_TAG = "optuna.state"  # PRUNED on a search's run that the pruner stopped; compare leaves those out


# Overrides a default run name leaves out: the model leads the name; presets and searches say nothing of what differs.
UNNAMED_OVERRIDES = ("model", "experiment", "hparams_search")


def compared_params(config: DictConfig) -> dict[str, object]:
    """The params that make a run what it is: every resolved key the run used, none of where things are, no nulls."""
    return {key: value for key, value in to_flat_dict(redacted(config)).items()
            if value is not None and not is_location_key(key)}


def seed_group(config: DictConfig) -> str:
    """Runs with the same config except `trainer.seed` share this id (MLflow UI: group by tag)."""
    kept = {key: value for key, value in compared_params(config).items() if key != "trainer.seed"}
    return hashlib.sha1(json.dumps(kept, sort_keys=True, default=str).encode()).hexdigest()[:12]


def default_run_name(model: str, overrides: list[str], swept: list[str] | None = None) -> str:
    """The model and the overrides that differ from its defaults: 'cnn_lstm dropout=0.2', 'hier_lstm metadata=true'
    (the last part of each key; where-things-are keys, presets and the model override left out). A sweep's child
    names only the keys its sweep varies (`swept`): what the rest say is the same for every child."""
    parts = [str(model)]
    for override in overrides:
        key, _, value = override.partition("=")
        key = key.lstrip("+~")
        if swept is not None and key not in swept:
            continue
        if key in UNNAMED_OVERRIDES or key.startswith("hydra") or is_location_key(key) or key.endswith("path"):
            continue  # files are where the data are (the dataset.* params say which), too long for a name
        parts.append(f"{key.rsplit('.', 1)[-1]}={_short(value)}")
    return re.sub(r"['\"\\]", "", " ".join(parts))[:250]  # quotes would need escaping in MLflow's search filters


def _short(value: str) -> str:
    """A sampled float as 4 significant digits (0.18727005942368125 -> 0.1873): a name to read; params keep it all."""
    if re.fullmatch(r"-?\d+\.\d{5,}(e-?\d+)?", value):
        return f"{float(value):.4g}"
    return value


def unique_run_name(experiment_id: str, name: str) -> str:
    """`name`, or `name (2)`, `name (3)`, ... where the experiment already has runs of that name."""
    taken = {run.info.run_name for run in MlflowClient().search_runs(
        [experiment_id], f"attributes.run_name LIKE '{name}%'", max_results=10000)}
    number = 1
    while (candidate := name if number == 1 else f"{name} ({number})") in taken:
        number += 1
    return candidate


def _git(*args: str) -> str | None:
    try:
        return subprocess.run(["git", *args], cwd=Path(seqlab.__file__).parent, text=True, capture_output=True,
                              timeout=5, check=True).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def source_tags(command: str = "seqlab train") -> dict[str, str]:
    """MLflow's standard source tags (the UI's Source and Version columns): the command, and the commit of seqlab's
    own checkout where it is one (MLflow would look at the script that started Python: pytest, hydra's launcher)."""
    tags = {"mlflow.source.name": command, "mlflow.source.type": "LOCAL", "seqlab_version": seqlab.__version__}
    commit = _git("rev-parse", "HEAD")
    if commit:
        tags["mlflow.source.git.commit"] = commit
        tags["mlflow.source.git.branch"] = _git("rev-parse", "--abbrev-ref", "HEAD") or ""
        tags["mlflow.source.git.repoURL"] = _git("config", "--get", "remote.origin.url") or ""
        if _git("status", "--porcelain", "--untracked-files=no"):
            tags["git_dirty"] = "true"  # the commit alone does not say what ran
    return {key: value for key, value in tags.items() if value}


def run_name(record: RecordPlan, experiment_id: str) -> str:
    """run_name, else the model and the overrides that differ, made unique in the experiment."""
    if record.run_name:
        return record.run_name
    job = current_job()
    return unique_run_name(experiment_id, default_run_name(record.model, job_overrides(), job.swept if job else None))


def description(record: RecordPlan, overrides: list[str]) -> str:
    """The run's description (`mlflow.note.content`, markdown in the UI): what ran, and how it was asked for."""
    command = " ".join(["seqlab train", *overrides])
    lines = [f"**{record.model}** on **{record.dataset}**, seed {record.seed}: `{command}`"]
    job = current_job()
    if job is not None:
        lines.append(child_description(job, overrides))
    lines.append("Params: what this run used (its options' keys and `derived.*` facts); the whole config is "
                 "`config.yaml`. Metrics: `<quantity>/<split>` per epoch (step = epoch index), test metrics once, at "
                 "the step of the epoch whose weights were tested.")
    return "\n\n".join(lines)


def run_tags(record: RecordPlan, cv_parent: str | None = None, fold: int | None = None) -> dict[str, str]:
    """Tags of one training run: its seed group and overrides, and its parent: the cross-validation run `cv_parent`
    of fold `fold`, else the sweep's parent when in a sweep; a search's trial."""
    tags = {"dataset": record.dataset, "model": record.model, "seed_group": seed_group(record.config)}
    overrides = [o for o in job_overrides() if not is_location_key(o.partition("=")[0].lstrip("+~"))]
    if overrides:
        tags["overrides"] = " ".join(overrides)
    job = current_job()
    if cv_parent is not None:  # a cross-validation fold: nested under its cross-validation run, not the sweep's parent
        tags.update({"mlflow.parentRunId": cv_parent, "cv.role": "fold", "cv.fold": str(fold)})
    elif job is not None:
        tags.update({"mlflow.parentRunId": job.parent_run_id, "sweep": job.name, "sweep.role": "child",
                     "sweep.job": str(job.job)})
    trial = current_trial()
    if trial is not None:  # a search's trial: its study and number (seqlab.search.study)
        tags.update({"optuna.study": trial.study, "optuna.trial": str(trial.number)})
    return tags


def log_identity(record: RecordPlan) -> None:
    """A new run's params (what it used, from the plan), its config.yaml and its description."""
    mlflow.log_params({key: param_text(value) for key, value in compared_params(record.config).items()})
    mlflow.log_text(OmegaConf.to_yaml(redacted(record.config)), "config.yaml")
    mlflow.set_tag(MLFLOW_RUN_NOTE, description(record, safe_overrides(job_overrides())))


def param_text(value) -> str:
    text = "null" if value is None else str(value)
    return text if len(text) <= MAX_PARAM_LENGTH else text[: MAX_PARAM_LENGTH - 3] + "..."


def mark_pruned(run, epochs: int, monitor: str) -> None:
    """A pruned trial's run ends FINISHED with its curves, and says at a glance that it was pruned: the state tag,
    a name starting "(pruned)", and a line in its description."""
    note = MlflowClient().get_run(run.info.run_id).data.tags.get(MLFLOW_RUN_NOTE, "")
    with named_failure(f"record that MLflow run {run.info.run_id} was pruned"):
        mlflow.set_tags({PRUNED_TAG: "PRUNED", "pruned_at_epoch": str(epochs),
                         "mlflow.runName": f"(pruned) {run.info.run_name}",  # first: names are cut in the UI
                         MLFLOW_RUN_NOTE: f"**Pruned** by the search's Optuna pruner after epoch {epochs}: its "
                                          f"`{monitor}` was behind the other trials' at that epoch. It has no test "
                                          f"metrics and no model; `seqlab compare --pruned` lists it.\n\n{note}"})
