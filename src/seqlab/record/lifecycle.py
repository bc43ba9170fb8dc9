"""One run lifecycle for every command: start or join a run, tag it, end it FINISHED, FAILED with the error, or
KILLED on Ctrl-C or SIGTERM, waiting while the store is busy. RunLifecycle is the one implementation; run_lifecycle
is it as a `with` block (train, cross-validation, pretrain, ensemble), a sweep's parent calls its start() and end()
from two Hydra callbacks (seqlab.search.parent)."""

from __future__ import annotations

import contextlib
import logging
import signal

import mlflow
from mlflow.entities import RunTag
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


def fail_pending_models(run_id: str, client: MlflowClient | None = None) -> None:
    """A model that was being logged when the run stopped stays PENDING (and listed) in MLflow: mark it FAILED."""
    from mlflow.entities import LoggedModelStatus

    client = client or MlflowClient()
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


def interruption(cause: BaseException | int) -> str:
    """The `error` tag of a run that Ctrl-C or SIGTERM stopped: `cause` is the exception or the signal's number."""
    terminated = isinstance(cause, Terminated) or cause == signal.SIGTERM
    return "interrupted by SIGTERM" if terminated else "interrupted (Ctrl-C)"


class RunLifecycle:
    """The start and the end of one MLflow run: the one implementation behind run_lifecycle (a `with` block) and
    behind a run whose start and end are two calls (a sweep's parent run, opened and closed by two Hydra callbacks).

    start() creates the run in `experiment_id` as `run_name` (always named: MLflow would draw a name from the seeded
    generator, the same one every run) with MLflow's context tags, or joins the existing run `join` (trainer.resume,
    a continued sweep); either way it gets the source tags of `command`, its owner (this process) and `tags`. A run
    joined with `retag=False` is joined as it is (a sweep's parent that another worker runs). `active`: the run is
    MLflow's active run for its fluent API (nested in the one active before, if any); else it is only written to by
    id (a sweep's parent: the jobs the sweep's process runs itself must not nest in it). end() ends it FINISHED, or
    KILLED / FAILED with its `error` tag, waiting while the store is busy; fail() ends it for an exception.
    `resumable`: a store that takes no more writes says `trainer.resume=<id>` continues the run.
    """

    def __init__(self, experiment_id: str | None = None, *, run_name: str | None = None, join: str | None = None,
                 tags: dict[str, str] | None = None, command: str = "seqlab train", resumable: bool = True,
                 tracking_uri: str | None = None, active: bool = True, retag: bool = True):
        self.experiment_id, self.run_name, self.join, self.tags = experiment_id, run_name, join, dict(tags or {})
        self.command, self.resumable, self.tracking_uri = command, resumable, tracking_uri
        self.active, self.retag = active, retag
        self.run_id: str | None = None

    def client(self) -> MlflowClient:
        return MlflowClient(self.tracking_uri)  # None: the process's tracking URI

    def start(self):
        """Create or join the run and tag it; returns the MLflow Run (mlflow.ActiveRun where `active`). Ctrl-C or
        SIGTERM while the run is created and joined is held until it is, so that the run ends KILLED, never RUNNING
        unseen; that and any failure once the run exists end it (fail()) and are raised."""
        client = self.client()
        tags = {**source_tags(self.command), **self.tags, OWNER_TAG: process_owner()}
        try:
            with interrupts_deferred():
                run = self._create_or_join(client, tags)
            if self.join is not None and self.retag:  # a joined run: tagged again, and the last interruption is over
                client.log_batch(self.run_id, tags=[RunTag(key, str(value)) for key, value in tags.items()])
                with contextlib.suppress(MlflowException):
                    client.delete_tag(self.run_id, "error")
        except BaseException as error:
            if self.run_id is not None:
                self.fail(error)
            raise
        return run

    def _create_or_join(self, client: MlflowClient, tags: dict[str, str]):
        run_id = self.join
        if run_id is None:  # created, then joined: nested only where `tags` name a parent (mlflow.parentRunId)
            run_id = client.create_run(self.experiment_id, run_name=self.run_name,
                                       tags={**resolve_tags(), **tags}).info.run_id
        self.run_id = run_id
        if self.active:
            nested = mlflow.active_run() is not None  # a fold inside its cross-validation's run, a chained pretraining
            return join_run(run_id, nested=nested, log_system_metrics=False)  # system metrics: after the first epoch
        run = client.get_run(run_id)
        if run.info.status != "RUNNING":
            client.update_run(run_id, status="RUNNING")
        return run

    def fail(self, error: BaseException) -> None:
        """End the run for `error`, which the caller raises: KILLED for Ctrl-C or SIGTERM (Terminated), else FAILED with
        the error as its `error` tag. A SeqlabError's message is amended where the store took no more writes."""
        if isinstance(error, KeyboardInterrupt):
            job = current_job()
            if job is not None and job.in_launcher_worker:
                request_stop()  # a launcher's worker (joblib) starts no further job of the sweep
            self.end("KILLED", interruption(error))
            return
        ours = isinstance(error, SeqlabError)  # its message is amended below; others' get a line of their own
        unrecorded = self.end("FAILED", f"{type(error).__name__}: {error}", quiet=ours)
        if unrecorded and ours:  # its "marked FAILED" would not be true
            said = str(error).replace(" The run is marked FAILED;", "")
            error.args = (f"{said} The store took no more writes either ({unrecorded}): the run still "
                          "shows RUNNING there"
                          + (f"; trainer.resume={self.run_id} continues it once the store works again."
                             if self.resumable else "."),)

    def end(self, status: str = "FINISHED", error: str | None = None, quiet: bool = False) -> str | None:
        """End the run `status`, `error` as its error tag; a run that did not finish also fails a model it was logging
        (left PENDING). A second Ctrl-C or SIGTERM (a process group's, a launcher's) waits until the run is ended.
        FINISHED: a store error is raised. Otherwise a store that takes no more writes (a full disk) is not a second
        traceback: returns what it said (logged too unless `quiet`)."""
        with interrupts_deferred():
            client = self.client()
            if error is not None:
                with contextlib.suppress(Exception):
                    client.set_tag(self.run_id, "error", redact_uri(error)[:5000])
            if status != "FINISHED":
                with contextlib.suppress(Exception):
                    fail_pending_models(self.run_id, client)
            try:
                self._terminate(status)
            except Exception as failure:
                if status == "FINISHED":
                    raise
                cause = store_error_text(failure)
                if not quiet:
                    log.error(f"Could not mark run {self.run_id} {status} in the MLflow store ({cause}); it shows "
                              "RUNNING there" + (f"; trainer.resume={self.run_id} continues it."
                                                 if self.resumable else "."))
                return cause
        return None

    def _terminate(self, status: str) -> None:
        active = mlflow.active_run() if self.active else None
        if active is not None and active.info.run_id == self.run_id:
            end_run(self.run_id, status)
        else:  # a run only written to by id, or one that failed before it was joined
            when_store_free(self.client().set_terminated, self.run_id, status, what=f"end run {self.run_id} {status}")


@contextlib.contextmanager
def run_lifecycle(experiment_id: str | None = None, *, run_name: str | None = None, join: str | None = None,
                  tags: dict[str, str] | None = None, command: str = "seqlab train", resumable: bool = True):
    """An MLflow run that always ends: FINISHED, FAILED (the error as its `error` tag) or KILLED (Ctrl-C, SIGTERM).

    Every command's runs go through here: a training run and each cross-validation fold and parent, a pretraining,
    an ensemble (and a sweep's parent through RunLifecycle, whose arguments these are). Ctrl-C and SIGTERM raise
    during the block. Yields the MLflow Run, active for MLflow's fluent API.
    """
    with interrupts_raised():
        if stop_requested():  # this worker of a sweep was told to stop while it loaded the job's data
            raise Terminated("SIGTERM")
        lifecycle = RunLifecycle(experiment_id, run_name=run_name, join=join, tags=tags, command=command,
                                 resumable=resumable)
        run = lifecycle.start()
        try:
            yield run
            raise_if_interrupted()  # a Ctrl-C that nothing raised still ends the run KILLED
        except BaseException as error:
            lifecycle.fail(error)
            raise
        else:
            lifecycle.end("FINISHED")


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
