"""Sweeps (`seqlab train --multirun`): one MLflow parent run per sweep, one nested child run per job.

Hydra calls `MlflowSweepCallback` (conf/config.yaml, `hydra.callbacks`) in the sweep's own process
(`on_multirun_*`) and in the process of each job (`on_job_*`). The joblib and submitit launchers
pickle the callback into their worker processes after `on_multirun_start`, so the parent's id travels
with it whatever the launcher; on the job's side it reaches `train` through environment variables
(`current_job()`), which the basic launcher's jobs, all in one process, read the same way.

A sweep's name is `tracking.sweep`, else taken from its output folder. Running a sweep again under the
same name continues it: its children join the same parent (and an Optuna search resumes its trials).
"""

from __future__ import annotations

import atexit
import hashlib
import json
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

SWEEP_ENV = "SEQLAB_SWEEP"  # JSON of SweepJob, set while a sweep's job runs
OVERRIDES_ENV = "SEQLAB_OVERRIDES"  # JSON list of the job's command-line overrides, set while any job runs
THREAD_ENV = ("TF_NUM_INTRAOP_THREADS", "TF_NUM_INTEROP_THREADS")  # read when TensorFlow starts computing
# Keys that say where things are, how a run is named or shown, not what was trained: left out of seed groups.
LOCATION_KEYS = ("tracking.", "data_dir", "cache_dir", "trainer.progress", "trainer.resume")


@dataclass
class SweepJob:
    name: str
    parent_run_id: str
    experiment_id: str
    job: int


def current_job() -> SweepJob | None:
    """The sweep job this process is running, as the callback announced it; None outside sweeps."""
    value = os.environ.get(SWEEP_ENV)
    return SweepJob(**json.loads(value)) if value else None


def job_overrides() -> list[str]:
    value = os.environ.get(OVERRIDES_ENV)
    return safe_overrides(json.loads(value)) if value else []


def safe_overrides(overrides) -> list[str]:
    """Overrides as MLflow may show them: secret-looking keys' values and URI credentials replaced."""
    from seqlab.tracking import REDACTED, SECRET_KEY, redact_uri

    safe = []
    for override in overrides:
        key, equals, value = str(override).partition("=")
        secret = equals and SECRET_KEY.search(key.lstrip("+~").rsplit(".", 1)[-1])
        safe.append(f"{key}={REDACTED}" if secret else redact_uri(str(override)))
    return safe


def seed_group(cfg: DictConfig) -> str:
    """Runs with the same config except `trainer.seed` share this id (MLflow UI: group by tag)."""
    from seqlab.config import to_flat_dict

    kept = {key: value for key, value in to_flat_dict(cfg).items()
            if key != "trainer.seed" and not key.startswith(LOCATION_KEYS)}
    return hashlib.sha1(json.dumps(kept, sort_keys=True, default=str).encode()).hexdigest()[:12]


def run_tags(cfg: DictConfig) -> dict[str, str]:
    """Tags of one training run: its seed group, its overrides, and its parent when in a sweep."""
    tags = {"seed_group": seed_group(cfg)}
    if job_overrides():
        tags["overrides"] = " ".join(job_overrides())
    job = current_job()
    if job is not None:
        tags.update({"mlflow.parentRunId": job.parent_run_id, "sweep": job.name, "sweep.role": "child",
                     "sweep.job": str(job.job)})
        if cfg.tracking.run_name is None:
            tags["mlflow.runName"] = f"{job.name}-{job.job}"
    return tags


def run_params() -> dict[str, str]:
    """The overrides that made the run, as a param too (the resolved values are params already)."""
    return {"overrides": " ".join(job_overrides())} if job_overrides() else {}


def sweep_name(config: DictConfig) -> str:
    """`tracking.sweep`, else the sweep folder's last two parts (multirun/DATE/TIME -> DATE_TIME)."""
    name = OmegaConf.select(config, "tracking.sweep")
    if name:
        return str(name)
    folder = Path(str(config.hydra.sweep.dir))
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", "_".join(folder.parts[-2:]))


def threads_per_job(config: DictConfig) -> int | None:
    """TensorFlow threads for one job of a launcher that runs jobs as parallel processes here: the cores
    shared out between the parallel jobs, so that they do not oversubscribe the machine. None: leave
    TensorFlow's default (every core), as for the basic launcher's one-at-a-time jobs and for clusters,
    whose schedulers pin each job to its own cores."""
    target = str(OmegaConf.select(config, "hydra.launcher._target_") or "")
    if target.endswith("JoblibLauncher"):
        from joblib import cpu_count  # counts the cores this process may use (affinity, container quotas)

        cores, n_jobs = cpu_count(), int(OmegaConf.select(config, "hydra.launcher.n_jobs") or -1)
        jobs = n_jobs if n_jobs > 0 else max(1, cores + 1 + n_jobs)  # joblib: -1 all cores, -2 all but one, ...
        return max(1, cores // min(jobs, cores))
    if target.endswith("LocalLauncher"):  # submitit_local: its cpus_per_task, when given
        cpus = OmegaConf.select(config, "hydra.launcher.cpus_per_task")
        return int(cpus) if cpus else None
    return None


def _quoted(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def find_parent(client, experiment_id: str, name: str):
    runs = client.search_runs([experiment_id], f"tags.sweep = {_quoted(name)} and tags.`sweep.role` = 'parent'",
                              order_by=["attributes.start_time DESC"], max_results=1)
    return runs[0] if runs else None


def sweep_children(client, parent_run_id: str, experiment_id: str, status: str | None = None):
    query = f"tags.`mlflow.parentRunId` = {_quoted(parent_run_id)}"
    if status:
        query += f" and attributes.status = {_quoted(status)}"
    return client.search_runs([experiment_id], query, max_results=10000)


def redact_credentials(record: logging.LogRecord) -> bool:
    """A logging filter: the user:password@ of any URI in a log line becomes <redacted>@."""
    from seqlab.errors import redact_uri

    message = record.getMessage()
    if "@" in message:
        record.msg, record.args = redact_uri(message), None
    return True


class MlflowSweepCallback(Callback):
    """Opens the sweep's parent run, hands it to every job, closes it with the sweep's outcome."""

    def __init__(self) -> None:
        self.sweep: SweepJob | None = None  # job is unused on the parent's side
        self.tracking_uri: str | None = None

    @property
    def parent_run_id(self) -> str | None:
        return self.sweep.parent_run_id if self.sweep else None

    def on_multirun_start(self, config: DictConfig, **kwargs) -> None:
        import seqlab
        from seqlab import tracking
        from seqlab.errors import report_error
        from seqlab.errors import SeqlabError

        for handler in logging.getLogger().handlers:  # Hydra logs each job's overrides: tracking.uri=user:pw@...
            handler.addFilter(redact_credentials)

        try:
            experiment_id = tracking.configure(config)
        except SeqlabError as error:
            # Hydra turns a callback's exceptions into warnings; an unusable store must stop the sweep.
            raise SystemExit(report_error(error)) from None
        from mlflow.tracking import MlflowClient

        name, uri = sweep_name(config), config.tracking.uri
        client = MlflowClient(uri)
        tags = {"sweep": name, "sweep.role": "parent", "sweep.dir": str(Path(str(config.hydra.sweep.dir)).resolve()),
                "sweep.overrides": " ".join(safe_overrides(config.hydra.overrides.task)),
                "sweep.sweeper": str(OmegaConf.select(config, "hydra.sweeper._target_")).rsplit(".", 1)[-1],
                "sweep.launcher": str(OmegaConf.select(config, "hydra.launcher._target_")).rsplit(".", 1)[-1],
                "seqlab_version": seqlab.__version__, "git_commit": tracking.git_commit()}
        parent = find_parent(client, experiment_id, name)
        if parent is None:
            run_id = client.create_run(experiment_id, run_name=name, tags=tags).info.run_id
            print(f"seqlab: sweep {name!r}: MLflow parent run {run_id} in experiment "
                  f"{tracking.experiment_name(config)!r} at {uri}", flush=True)
        else:  # the same name again: continue that sweep under its parent
            run_id = parent.info.run_id
            resumed = int(parent.data.tags.get("sweep.resumed", "0")) + 1
            client.update_run(run_id, status="RUNNING")
            for key, value in {**tags, "sweep.resumed": str(resumed)}.items():
                client.set_tag(run_id, key, value)
            print(f"seqlab: sweep {name!r} continues under its MLflow parent run {run_id} at {uri}", flush=True)
        self.sweep = SweepJob(name=name, parent_run_id=run_id, experiment_id=experiment_id, job=-1)
        self.tracking_uri = uri
        atexit.register(self._end_interrupted)

    def on_job_start(self, config: DictConfig, **kwargs) -> None:
        os.environ[OVERRIDES_ENV] = json.dumps(list(config.hydra.overrides.task))
        threads = threads_per_job(config)
        if threads is not None:  # before the job's TensorFlow starts its thread pools; explicit settings win
            for name in THREAD_ENV:
                os.environ.setdefault(name, str(threads))
        if self.sweep is not None:
            job = SweepJob(self.sweep.name, self.sweep.parent_run_id, self.sweep.experiment_id,
                           int(config.hydra.job.num))
            os.environ[SWEEP_ENV] = json.dumps(job.__dict__)
        _end_leaked_runs("FAILED")

    def on_job_end(self, config: DictConfig, job_return, **kwargs) -> None:
        from hydra.core.utils import JobStatus

        # The basic launcher runs every job in this process: no run may stay active into the next job.
        _end_leaked_runs("FINISHED" if job_return.status == JobStatus.COMPLETED else "FAILED")
        os.environ.pop(SWEEP_ENV, None)
        os.environ.pop(OVERRIDES_ENV, None)

    def on_multirun_end(self, config: DictConfig, **kwargs) -> None:
        if self.sweep is None:
            return
        atexit.unregister(self._end_interrupted)
        self._end("FINISHED")

    def tag_best_trial(self, trial) -> None:
        """Tag the parent with an Optuna search's best trial and the child run that made it."""
        if self.sweep is None:
            return
        from mlflow.tracking import MlflowClient

        client = MlflowClient(self.tracking_uri)
        runs = [run for run in sweep_children(client, self.sweep.parent_run_id, self.sweep.experiment_id, "FINISHED")
                if run.data.tags.get("sweep.job") == str(trial.number)]
        tags = {"best_trial": str(trial.number), "best_value": str(trial.value),
                "best_params": json.dumps(trial.params, sort_keys=True)}
        if runs:
            tags["best_run_id"] = runs[0].info.run_id
        for key, value in tags.items():
            client.set_tag(self.sweep.parent_run_id, key, value)

    def _end_interrupted(self) -> None:
        """At exit without on_multirun_end (a job failed, Ctrl-C): KILLED if a child was, else FAILED."""
        import sys

        from mlflow.tracking import MlflowClient

        try:
            killed = sweep_children(MlflowClient(self.tracking_uri), self.sweep.parent_run_id,
                                    self.sweep.experiment_id, status="KILLED")
            self._end("KILLED" if killed else "FAILED")
        except Exception as error:  # the store went away with the sweep: say so, without a traceback at exit
            print(f"seqlab: warning: could not end the sweep's parent run {self.sweep.parent_run_id}: "
                  f"{str(error).splitlines()[0] if str(error) else type(error).__name__}", file=sys.stderr)

    def _end(self, status: str) -> None:
        from mlflow.tracking import MlflowClient

        client = MlflowClient(self.tracking_uri)
        counts: dict[str, int] = {}
        for run in sweep_children(client, self.sweep.parent_run_id, self.sweep.experiment_id):
            counts[run.info.status] = counts.get(run.info.status, 0) + 1
        client.set_tag(self.sweep.parent_run_id, "sweep.children",
                       ", ".join(f"{n} {s}" for s, n in sorted(counts.items())) or "none")
        client.set_terminated(self.sweep.parent_run_id, status)


def _end_leaked_runs(status: str) -> None:
    import sys

    if "mlflow" not in sys.modules:
        return
    import mlflow

    while mlflow.active_run() is not None:
        mlflow.end_run(status)


def find_callback(callbacks) -> MlflowSweepCallback | None:
    """The sweep callback among Hydra's (`HydraContext.callbacks`), for sweepers to reach the parent run."""
    for callback in getattr(callbacks, "callbacks", []):
        if isinstance(callback, MlflowSweepCallback):
            return callback
    return None
