"""One run lifecycle for every command: start or join a run, tag it, end it FINISHED, FAILED with the error, or
KILLED on Ctrl-C or SIGTERM, waiting while the store is busy."""

from __future__ import annotations

import contextlib
import logging

import mlflow
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from mlflow.tracking.context.registry import resolve_tags

from seqlab.errors import SeqlabError, Terminated
from seqlab.jobs import current_job, request_stop, stop_requested
from seqlab.record.naming import source_tags
from seqlab.record.owner import OWNER_TAG, process_owner
from seqlab.record.signals import interrupts_deferred, interrupts_raised, raise_if_interrupted
from seqlab.record.store import store_busy, store_error_text, when_store_free
from seqlab.redaction import redact_uri

log = logging.getLogger(__name__)


def fail_pending_models(run_id: str) -> None:
    """A model that was being logged when the run stopped stays PENDING (and listed) in MLflow: mark it FAILED."""
    from mlflow.entities import LoggedModelStatus

    client = MlflowClient()
    run = client.get_run(run_id)
    for model in client.search_logged_models([run.info.experiment_id], f"source_run_id = '{run_id}'"):
        if model.status == LoggedModelStatus.PENDING:
            client.finalize_logged_model(model.model_id, LoggedModelStatus.FAILED)


def join_run(run_id: str, **start_run_args):
    """mlflow.start_run(run_id=...) of an existing run, whatever experiment the process has active.

    start_run refuses a run of another experiment than one left active by mlflow.set_experiment (a notebook's, an
    earlier job's); set_experiment to the run's own would stay active after it (and in MLFLOW_EXPERIMENT_ID for child
    processes), so the check is skipped for this call only: MLflow has no public way to unset it.
    """
    from mlflow.tracking import fluent

    active, fluent._active_experiment_id = fluent._active_experiment_id, None
    try:
        return mlflow.start_run(run_id=run_id, **start_run_args)
    finally:
        fluent._active_experiment_id = active


@contextlib.contextmanager
def run_lifecycle(experiment_id: str | None = None, *, run_name: str | None = None, join: str | None = None,
                  tags: dict[str, str] | None = None, command: str = "seqlab train", resumable: bool = True):
    """An MLflow run that always ends: FINISHED, FAILED (the error as its `error` tag) or KILLED (Ctrl-C, SIGTERM).

    Every command's runs go through here: a training run and each cross-validation fold and parent, a pretraining,
    an ensemble. A new run is created in `experiment_id` as `run_name` (always named: MLflow would draw a name from
    the seeded generator, the same one every run) with MLflow's context tags; `join` continues an existing run
    instead (trainer.resume). It gets the source tags of `command`, its owner (this process) and
    `tags`. `resumable`: a store that takes no more writes says `trainer.resume=<id>` continues the run.
    Yields the MLflow Run, active for MLflow's fluent API.
    """
    with interrupts_raised():
        if stop_requested():  # this worker of a sweep was told to stop while it loaded the job's data
            raise Terminated("SIGTERM")
        nested = mlflow.active_run() is not None  # a fold inside its cross-validation's run, a chained pretraining
        tags = {**source_tags(command), **(tags or {}), OWNER_TAG: process_owner()}
        if join is None:  # created, then joined: nested only where `tags` name a parent (mlflow.parentRunId)
            join = MlflowClient().create_run(experiment_id, run_name=run_name, tags={**resolve_tags(), **tags}).info.run_id
            tags = {}
        run = join_run(join, nested=nested, log_system_metrics=False)  # system metrics: after the first epoch
        try:
            if tags:  # a resumed run: tagged again, and the last interruption is over
                mlflow.set_tags(tags)
                with contextlib.suppress(MlflowException):
                    MlflowClient().delete_tag(join, "error")
            yield run
            raise_if_interrupted()  # a Ctrl-C that nothing raised still ends the run KILLED
        except KeyboardInterrupt as error:
            job = current_job()
            if job is not None and job.in_launcher_worker:
                request_stop()  # a launcher's worker (joblib) starts no further job of the sweep
            _end(run.info.run_id, "KILLED",
                 "interrupted by SIGTERM" if isinstance(error, Terminated) else "interrupted (Ctrl-C)")
            raise
        except BaseException as error:
            ours = isinstance(error, SeqlabError)  # its message is amended below; others' get a line of their own
            unrecorded = _end(run.info.run_id, "FAILED", f"{type(error).__name__}: {error}", quiet=ours,
                              resumable=resumable)
            if unrecorded and ours:  # its "marked FAILED" would not be true
                said = str(error).replace(" The run is marked FAILED;", "")
                error.args = (f"{said} The store took no more writes either ({unrecorded}): the run still "
                              "shows RUNNING there"
                              + (f"; trainer.resume={run.info.run_id} continues it once the store works again."
                                 if resumable else "."),)
            raise
        else:
            end_run(run.info.run_id, "FINISHED")


def _end(run_id: str, status: str, message: str, quiet: bool = False, resumable: bool = True) -> str | None:
    """End the run `status` with `message` as its error tag, and fail a model it was logging (left PENDING).
    A second Ctrl-C or SIGTERM (a process group's, a launcher's) waits until the run is ended. A store that takes no
    more writes (a full disk): returns what it said (logged too unless `quiet`), not a second traceback."""
    with interrupts_deferred():
        with contextlib.suppress(Exception):
            mlflow.set_tag("error", redact_uri(message)[:5000])
        with contextlib.suppress(Exception):
            fail_pending_models(run_id)
        try:
            end_run(run_id, status)
        except Exception as error:
            cause = store_error_text(error)
            if not quiet:
                log.error(f"Could not mark run {run_id} {status} in the MLflow store ({cause}); it shows RUNNING "
                          "there" + (f"; trainer.resume={run_id} continues it." if resumable else "."))
            return cause
    return None


def end_run(run_id: str, status: str) -> None:
    """mlflow.end_run, whose run leaves the active stack even when the store refuses the write; the status write
    is then retried while the store is busy (seqlab.record.store.when_store_free)."""
    try:
        mlflow.end_run(status)
    except Exception as error:
        if not store_busy(error):
            raise
        when_store_free(MlflowClient().set_terminated, run_id, status, what=f"end run {run_id} {status}")


def start_system_metrics(run_id: str, resume: bool = False) -> None:
    """MLflow's system metrics for run `run_id` from now on, ended by mlflow.end_run. Started once the first epoch's
    metrics are logged: the MLflow UI's compare page plots a run's first-logged metric by default, which should be
    `accuracy/val`, not `system/cpu_utilization_percentage` or a data-loading time."""
    from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor
    from mlflow.tracking import fluent

    if run_id in fluent.run_id_to_system_metrics_monitor:
        return
    monitor = SystemMetricsMonitor(run_id, resume_logging=resume)
    fluent.run_id_to_system_metrics_monitor[run_id] = monitor  # where mlflow.end_run finds and stops it
    monitor.start()
