"""A sweep's MLflow parent run, through the one run lifecycle (seqlab.record.lifecycle.RunLifecycle), whose start and
end are two Hydra callbacks here (seqlab.search.sweep.MlflowSweepCallback): opened when the sweep starts, found again
by the sweep's name (a second worker of a search joins it while it runs; the same name later continues it), ended with
the sweep's summary (seqlab.search.summary). Also the parent's view of its children: those that a launcher's worker
processes train, and those that a stopped worker left RUNNING.

Only MLflow here (and the summary's pandas and matplotlib): this runs in the sweep's own process, which never starts
TensorFlow.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from mlflow.tracking import MlflowClient
from omegaconf import DictConfig, OmegaConf

from seqlab.jobs import SweepJob
from seqlab.record.lifecycle import RunLifecycle
from seqlab.redaction import safe_overrides

log = logging.getLogger(__name__)

COMMAND = "seqlab train --multirun"  # the parent's source tag


def _quoted(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def find_parent(client, experiment_id: str, name: str):
    runs = client.search_runs([experiment_id], f"tags.sweep = {_quoted(name)} and tags.`sweep.role` = 'parent'",
                              order_by=["attributes.start_time DESC"], max_results=1)
    return runs[0] if runs else None


def _one_parent(client, experiment_id: str, name: str, created: str) -> str:
    """Workers of one search started at once may each create a parent: the first created stays, the others go."""
    runs = client.search_runs([experiment_id], f"tags.sweep = {_quoted(name)} and tags.`sweep.role` = 'parent'",
                              max_results=100)
    first = min(runs, key=lambda run: (run.info.start_time, run.info.run_id)).info.run_id if runs else created
    if first != created:
        client.delete_run(created)
    return first


def sweep_children(client, parent_run_id: str, experiment_id: str, status: str | None = None):
    query = f"tags.`mlflow.parentRunId` = {_quoted(parent_run_id)}"
    if status:
        query += f" and attributes.status = {_quoted(status)}"
    return client.search_runs([experiment_id], query, max_results=10000)


def parent_tags(config: DictConfig, name: str) -> dict[str, str]:
    """What the parent says of its sweep: its name and role, folder, overrides, sweeper and launcher."""
    return {"sweep": name, "sweep.role": "parent", "sweep.dir": str(Path(str(config.hydra.sweep.dir)).resolve()),
            "sweep.overrides": " ".join(safe_overrides(config.hydra.overrides.task)),
            "sweep.sweeper": str(OmegaConf.select(config, "hydra.sweeper._target_")).rsplit(".", 1)[-1],
            "sweep.launcher": str(OmegaConf.select(config, "hydra.launcher._target_")).rsplit(".", 1)[-1]}


def open_parent(config: DictConfig, experiment_id: str, name: str, uri: str,
                experiment: str) -> tuple[RunLifecycle, int]:
    """The sweep's parent run, started: new, joined as it is (another worker's, RUNNING) or continued (the same name
    again: RUNNING again, tagged again). Returns its lifecycle and how often the sweep was continued before this."""
    client = MlflowClient(uri)
    settings = dict(tracking_uri=uri, command=COMMAND, resumable=False, active=False)
    parent = find_parent(client, experiment_id, name)
    if parent is None:
        lifecycle = RunLifecycle(experiment_id, run_name=name, tags=parent_tags(config, name), **settings)
        created = lifecycle.start().info.run_id
        run_id = _one_parent(client, experiment_id, name, created)
        if run_id != created:  # another worker's parent, created at the same moment: ours is gone, theirs joined
            lifecycle = RunLifecycle(join=run_id, retag=False, **settings)
            lifecycle.start()
        log.info(f"sweep {name!r}: MLflow parent run {run_id} in experiment {experiment!r} at {uri}")
        return lifecycle, 0
    run_id = parent.info.run_id
    resumed = int(parent.data.tags.get("sweep.resumed", "0"))
    if parent.info.status == "RUNNING":  # another worker of the same search: join it
        lifecycle = RunLifecycle(join=run_id, retag=False, **settings)
        lifecycle.start()
        log.info(f"sweep {name!r} is running elsewhere: this worker joins its MLflow parent run {run_id} at {uri}")
        return lifecycle, resumed
    resumed += 1  # the same name again: continue that sweep under its parent
    lifecycle = RunLifecycle(join=run_id, tags={**parent_tags(config, name), "sweep.resumed": str(resumed)},
                             **settings)
    lifecycle.start()
    log.info(f"sweep {name!r} continues under its MLflow parent run {run_id} at {uri}")
    return lifecycle, resumed


def close_parent(parent: RunLifecycle, summary, status: str, complete: bool, error: str | None = None) -> None:
    """Summarise the children into the parent (seqlab.search.summary, `summary`: its SweepInfo), then end it `status`
    (`error`: its error tag). A summary that cannot be written ends the parent FAILED, and a sweep that otherwise
    completed exits with its message (code 4)."""
    from seqlab.errors import RecordingError, redact_uri, report_error
    from seqlab.search.summary import run_state, summarize

    client = MlflowClient(summary.tracking_uri)
    parent_id = summary.parent_run_id
    children = sweep_children(client, parent_id, summary.experiment_id)
    counts: dict[str, int] = {}
    for run in children:
        counts[run_state(run)] = counts.get(run_state(run), 0) + 1
    client.set_tag(parent_id, "sweep.children", ", ".join(f"{n} {s}" for s, n in sorted(counts.items())) or "none")
    failure = None
    try:
        best = summarize(client, summary, children, status, complete)
        if best is not None:
            log.info(f"sweep {summary.name!r}: best child {best.run.info.run_name!r} ({best.metric} "
                     f"{best.value:.4f}); its params, metrics and the comparison are in parent run {parent_id}")
    except Exception as problem:  # the children are recorded; only the parent's summary is incomplete
        failure = (f"Could not write the summary of sweep {summary.name!r} into its parent run {parent_id}: "
                   f"{type(problem).__name__}: {redact_uri(str(problem))}")
        if not complete:  # else reported below, as the sweep's error
            log.warning(failure)
        error = f"RecordingError: {failure}"
        status = "FAILED" if status == "FINISHED" else status
    finally:
        parent.end(status, error)
    if failure is not None and complete:  # Hydra turns a callback's exceptions into warnings
        raise SystemExit(report_error(RecordingError(
            f"{failure}. The children's runs are complete; the parent run is marked FAILED.")))


def interrupted_status(client, sweep: SweepJob, signum: int | None) -> tuple[str, str]:
    """The status and error of a parent whose sweep stopped before its end: KILLED where Ctrl-C or SIGTERM stopped
    the sweep (`signum`, as its callback saw it) or a child (the job's own run took the signal), else FAILED."""
    from seqlab.record.lifecycle import interruption

    if signum is not None:
        return "KILLED", interruption(signum)
    killed = sweep_children(client, sweep.parent_run_id, sweep.experiment_id, status="KILLED")
    if killed:
        return "KILLED", killed[0].data.tags.get("error", "interrupted")
    failed = sweep_children(client, sweep.parent_run_id, sweep.experiment_id, status="FAILED")
    if failed:
        return "FAILED", f"job {failed[0].info.run_name!r} failed: {failed[0].data.tags.get('error', 'no error tag')}"
    return "FAILED", "the sweep stopped before all its jobs finished"


def workers_running(client, sweep: SweepJob) -> list[tuple[int, object]]:
    """(pid, run) for each RUNNING child of this sweep that a live process on this host, other than this one,
    trains."""
    from seqlab.record.owner import OWNER_TAG, owner_parts, owner_state

    found = []
    for run in sweep_children(client, sweep.parent_run_id, sweep.experiment_id, status="RUNNING"):
        owner = run.data.tags.get(OWNER_TAG, "")
        pid = int(owner_parts(owner)[1] or 0)
        if owner_state(owner) == "alive" and pid != os.getpid():
            found.append((pid, run))
    return found


def end_orphaned_children(client, sweep: SweepJob) -> None:
    """Children left RUNNING by a process of this host that is gone (a worker the launcher killed when the sweep
    stopped): ended KILLED, so that the record says what happened and trainer.resume continues them."""
    from seqlab.record.owner import OWNER_TAG, owner_state

    for run in sweep_children(client, sweep.parent_run_id, sweep.experiment_id, status="RUNNING"):
        if owner_state(run.data.tags.get(OWNER_TAG, "")) == "gone":
            client.set_tag(run.info.run_id, "error", "interrupted: its worker process was stopped with the sweep")
            client.set_terminated(run.info.run_id, "KILLED")
