"""What a sweep tells each of its jobs, through environment variables (seqlab.search.sweep sets them, seqlab.record.lifecycle
reads them). Light on purpose: Hydra runs the sweep callback, which imports this, before every job starts.
"""

from __future__ import annotations

import base64
import json
import os
from dataclasses import dataclass

from seqlab.redaction import safe_overrides

SWEEP_ENV = "SEQLAB_SWEEP"  # JSON of SweepJob, set by seqlab.search.sweep while a sweep's job runs
OVERRIDES_ENV = "SEQLAB_OVERRIDES"  # JSON list of the job's command-line overrides, set while any job runs


@dataclass
class SweepJob:
    name: str
    parent_run_id: str
    experiment_id: str
    job: int
    bucketing: bool | None = None  # trainer.bucketing=null in this sweep (one batching for all its models)
    swept: list[str] | None = None  # the keys the sweep varies: its children are named by these
    sweep_pid: int | None = None  # the sweep's own process: a job elsewhere runs in a launcher's worker

    @property
    def in_launcher_worker(self) -> bool:
        """This job runs in a worker process of the launcher (joblib's), not in the sweep's own process."""
        return self.sweep_pid is not None and self.sweep_pid != os.getpid()


_stop: list[bool] = []  # set in a launcher's worker process that received SIGTERM or Ctrl-C (seqlab.search.sweep)


def request_stop() -> None:
    """This process starts no further run of a sweep (a joblib worker told to stop: the sweep is ending)."""
    _stop.append(True)


def stop_requested() -> bool:
    return bool(_stop)


def current_job() -> SweepJob | None:
    """The sweep job this process is running, as seqlab.search.sweep's callback announced it; None outside sweeps."""
    value = os.environ.get(SWEEP_ENV)
    return SweepJob(**json.loads(value)) if value else None


def job_overrides() -> list[str]:
    value = os.environ.get(OVERRIDES_ENV)
    return safe_overrides(json.loads(value)) if value else []


def child_description(job: SweepJob, overrides: list[str]) -> str:
    """A sweep child's description (markdown, the MLflow UI's run "Description"): its sweep and what it varies."""
    varied = [o for o in overrides if o.split("=", 1)[0].lstrip("+~") in set(job.swept or [])]
    return (f"Job {job.job} of sweep **`{job.name}`** (parent run `{job.parent_run_id}`), which varies "
            + (", ".join(f"`{key}`" for key in job.swept) if job.swept else "nothing") + ": this run has "
            + (", ".join(f"`{o}`" for o in varied) if varied else "the sweep's config as it is")
            + f". The sweep's table: `seqlab compare --sweep {job.name}`.")


PRUNED_AT = "pruned_at_epoch"  # the trial's user attr a pruned job sets (seqlab.training.callbacks.OptunaPruning)
TRIAL_ENV = "SEQLAB_TRIAL"  # JSON of SearchTrial, set for a search's job through Hydra's hydra.job.env_set


@dataclass
class SearchTrial:
    """The Optuna trial a search's job trains for: where its study lives, and the pruner that judges it."""

    study: str
    storage: str  # a journal file or a database URL (seqlab.search.study.storage_url)
    trial_id: int
    number: int
    pruner: dict | None = None  # the pruner's config (_target_ and arguments), None: no pruning

    def encode(self) -> str:
        """URL-safe base64 of the JSON, without the padding `=` (Hydra's override grammar takes neither unquoted)."""
        return base64.urlsafe_b64encode(json.dumps(self.__dict__).encode()).decode().rstrip("=")


def current_trial() -> SearchTrial | None:
    value = os.environ.get(TRIAL_ENV)
    return SearchTrial(**json.loads(base64.urlsafe_b64decode(value + "=" * (-len(value) % 4)))) if value else None
