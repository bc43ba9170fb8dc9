"""Sweeps (`seqlab train --multirun`): one MLflow parent run per sweep, one nested child run per job.

Hydra calls `MlflowSweepCallback` (conf/config.yaml, `hydra.callbacks`) in the sweep's own process
(`on_multirun_*`) and in the process of each job (`on_job_*`). The joblib and submitit launchers
pickle the callback into their worker processes after `on_multirun_start`, so the parent's id travels
with it whatever the launcher; on the job's side it reaches `train` through environment variables
(`current_job()`), which the basic launcher's jobs, all in one process, read the same way.

A sweep's name is `tracking.sweep`, else taken from its output folder. Running a sweep again under the
same name continues it: its children join the same parent (and an Optuna search resumes its trials). The parent
run itself (opened, found again, summarised and ended through the one run lifecycle): seqlab.search.parent; here,
what the callback tells the jobs and how Ctrl-C or SIGTERM of the sweep reaches a launcher's worker processes.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import logging
import os
import re
import signal
import threading
import time
from pathlib import Path

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from seqlab.jobs import OVERRIDES_ENV, SWEEP_ENV, SweepJob, current_trial, request_stop
from seqlab.redaction import redact_credentials

log = logging.getLogger(__name__)
THREAD_ENV = ("TF_NUM_INTRAOP_THREADS", "TF_NUM_INTEROP_THREADS")  # read when TensorFlow starts computing
WORKER_GRACE_SECONDS = 60  # for a worker to end its run after SIGTERM (it stops at its next batch)


def sweep_name(config: DictConfig) -> str:
    """`tracking.sweep`, else the sweep folder's last two parts (multirun/DATE/TIME -> DATE_TIME)."""
    name = OmegaConf.select(config, "tracking.sweep")
    if name:
        return str(name)
    folder = Path(str(config.hydra.sweep.dir))
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", "_".join(folder.parts[-2:]))


def swept(config: DictConfig) -> dict[str, list[str] | None]:
    """{key: its values} for the keys a sweep varies (`key=a,b` overrides and sweeper params, a preset's too);
    None where the values are a range or an interval (an Optuna search)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    params = OmegaConf.select(config, "hydra.sweeper.params") or {}
    texts = [*(f"{key}={value}" for key, value in params.items()), *config.hydra.overrides.task]
    keys: dict[str, list[str] | None] = {}
    for override in OverridesParser.create().parse_overrides(texts):
        if override.is_sweep_override():
            try:
                keys[override.key_or_group] = [str(value) for value in override.sweep_string_iterator()]
            except Exception:  # a range or interval
                keys[override.key_or_group] = None
    return keys


def swept_models(config: DictConfig) -> list[str]:
    """The models a sweep runs (its `model=a,b` override or sweeper param); [] where it sweeps no model."""
    return swept(config).get("model") or []


def like_for_like(config: DictConfig, models: list[str]) -> bool | None:
    """A sweep across models batches them all alike: where `trainer.bucketing` is null and the swept models'
    defaults differ, null means padded batches for every job (returned: False); None where nothing needs
    deciding. Inputs that cannot be made alike (units x words against one sequence) are named in a warning."""
    from seqlab.models.catalog import MODELS

    known = [name for name in dict.fromkeys(models) if name in MODELS]
    if len(known) < 2:
        return None
    hierarchical = [name for name in known if MODELS[name].hierarchical]
    flat = [name for name in known if not MODELS[name].hierarchical]
    if hierarchical and flat:
        log.warning(f"this sweep compares models that read units x words ({', '.join(hierarchical)}: "
                    f"preprocess=hierarchical, its own vocabulary and lengths) with models that read one sequence of "
                    f"words ({', '.join(flat)}: preprocess=words); their inputs differ (see the runs' derived.* "
                    "params), so their scores compare setups, not only architectures.")
    bucketed = sorted(name for name in flat if MODELS[name].bucketed)
    if OmegaConf.select(config, "trainer.bucketing") is not None or not bucketed or len(bucketed) == len(flat):
        return None
    log.warning(f"trainer.bucketing is null and only {', '.join(bucketed)} of this sweep's models bucket by default: "
                "every job runs on padded batches (trainer.bucketing=false), like for like; set trainer.bucketing=true "
                "to bucket them all.")
    return False


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


class MlflowSweepCallback(Callback):
    """Opens the sweep's parent run, hands it to every job, closes it with the sweep's outcome."""

    def __init__(self) -> None:
        self.sweep = None  # seqlab.jobs.SweepJob; job is unused on the parent's side
        self.tracking_uri: str | None = None
        self.summary = None  # seqlab.search.summary.SweepInfo: what the parent's summary needs of the sweep's config
        self.parent = None  # seqlab.record.lifecycle.RunLifecycle of the parent run, started in on_multirun_start
        self.signal: int | None = None  # Ctrl-C or SIGTERM that stopped the sweep

    @property
    def parent_run_id(self) -> str | None:
        return self.sweep.parent_run_id if self.sweep else None

    def on_multirun_start(self, config: DictConfig, **kwargs) -> None:
        from seqlab.errors import report_error

        try:
            self._start(config)
        except SystemExit:
            raise
        except Exception as error:  # Hydra turns a callback's exceptions into warnings: the jobs would run unnested
            raise SystemExit(report_error(error)) from None

    def _start(self, config: DictConfig) -> None:
        from seqlab.config.plan import store_target
        from seqlab.errors import report_error
        from seqlab.record.store import configure
        from seqlab.search.parent import open_parent
        from seqlab.search.summary import SweepInfo

        for handler in logging.getLogger().handlers:  # Hydra logs each job's overrides: tracking.uri=user:pw@...
            handler.addFilter(redact_credentials)

        target = store_target(config)
        try:
            experiment_id = configure(target.uri, target.experiment, target.dataset)
        except Exception as error:
            # Hydra turns a callback's exceptions into warnings; an unusable store must stop the sweep (its jobs
            # would run without a parent).
            raise SystemExit(report_error(error)) from None
        name, uri = sweep_name(config), target.uri
        self.parent, resumed = open_parent(config, experiment_id, name, uri, target.experiment)
        run_id = self.parent.run_id
        varied = swept(config)
        self.sweep = SweepJob(name=name, parent_run_id=run_id, experiment_id=experiment_id, job=-1,
                              bucketing=like_for_like(config, swept_models(config)), swept=sorted(varied),
                              sweep_pid=os.getpid())
        self.tracking_uri = uri
        self.summary = SweepInfo(name=name, parent_run_id=run_id, experiment_id=experiment_id, tracking_uri=uri,
                                 swept=varied, optimized_metric=str(config.optimized_metric),
                                 registered_model=OmegaConf.select(config, "tracking.registered_model"),
                                 summary_step=resumed)
        atexit.register(self._end_interrupted)
        if threading.current_thread() is threading.main_thread():  # only there can Python handle signals
            self.previous_handlers = {number: signal.signal(number, self._stop_workers)
                                      for number in (signal.SIGINT, signal.SIGTERM)}

    def _stop_workers(self, signum, frame=None) -> None:
        """Ctrl-C or SIGTERM of the sweep's process: the worker processes of a launcher (joblib's) that train a run
        of this sweep get SIGTERM, end it KILLED and take no further job; then the sweep stops (its parent ends
        KILLED at exit). Only those: an idle loky worker dies of SIGTERM, and loky then SIGKILLs the others
        mid-epoch."""
        from mlflow.tracking import MlflowClient

        from seqlab.errors import Terminated
        from seqlab.search.parent import workers_running

        if getattr(self, "stopping", False):  # a second signal while the workers stop: stop now
            raise Terminated("SIGTERM") if signum == signal.SIGTERM else KeyboardInterrupt
        self.stopping, self.signal = True, signum
        try:  # a store that went away: the launcher stops the workers anyway
            client = MlflowClient(self.tracking_uri)
            workers = workers_running(client, self.sweep)
            for pid in {pid for pid, _ in workers}:
                with contextlib.suppress(OSError):
                    os.kill(pid, signal.SIGTERM)
            if workers:
                log.info(f"stopping the sweep: {len(workers)} runs in worker processes end KILLED")
            deadline = time.monotonic() + WORKER_GRACE_SECONDS
            while workers and time.monotonic() < deadline:
                time.sleep(0.5)
                workers = workers_running(client, self.sweep)
        except Exception as error:
            log.warning(f"could not stop the sweep's workers cleanly: {type(error).__name__}: {error}")
        raise Terminated("SIGTERM") if signum == signal.SIGTERM else KeyboardInterrupt

    def _restore_handlers(self) -> None:
        for number, handler in getattr(self, "previous_handlers", {}).items():
            signal.signal(number, handler if handler is not None else signal.SIG_DFL)
        self.previous_handlers = {}

    def on_job_start(self, config: DictConfig, **kwargs) -> None:
        os.environ[OVERRIDES_ENV] = json.dumps(list(config.hydra.overrides.task))
        threads = threads_per_job(config)
        if threads is not None:  # before the job's TensorFlow starts its thread pools; explicit settings win
            for name in THREAD_ENV:
                os.environ.setdefault(name, str(threads))
        if self.sweep is not None:
            trial = current_trial()  # a search's job (Hydra's env_set is in place): numbered as its trial
            job = SweepJob(self.sweep.name, self.sweep.parent_run_id, self.sweep.experiment_id,
                           trial.number if trial else int(config.hydra.job.num), self.sweep.bucketing,
                           self.sweep.swept, self.sweep.sweep_pid)
            os.environ[SWEEP_ENV] = json.dumps(job.__dict__)
            if job.in_launcher_worker and threading.current_thread() is threading.main_thread():
                for number in (signal.SIGINT, signal.SIGTERM):  # a launcher's worker: stop with the sweep, not die
                    signal.signal(number, lambda signum, frame: request_stop())
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
        from seqlab.search.parent import close_parent

        atexit.unregister(self._end_interrupted)
        self._restore_handlers()
        close_parent(self.parent, self.summary, "FINISHED", complete=True)

    def best_trial(self, study):
        """Tag the parent with an Optuna search's best trial: the trial of the child the sweep's summary calls best
        (seqlab.search.summary.best_child: its validation metric, ties to the better other one), so that the tags agree
        where Optuna's own best_trial would take the first of equal values. Returns that trial."""
        from mlflow.tracking import MlflowClient

        from seqlab.search.parent import sweep_children
        from seqlab.search.summary import Histories, best_child

        best = study.best_trial
        if self.sweep is None:
            return best
        client = MlflowClient(self.tracking_uri)
        children = [run for run in sweep_children(client, self.sweep.parent_run_id, self.sweep.experiment_id,
                                                  "FINISHED") if "optuna.trial" in run.data.tags]
        chosen = best_child(children, self.summary.optimized_metric, Histories(client))
        by_number = {trial.number: trial for trial in study.trials}
        if chosen is not None and by_number.get(int(chosen.run.data.tags["optuna.trial"])) is not None:
            trial = by_number[int(chosen.run.data.tags["optuna.trial"])]
            if trial.value == best.value:  # the same best value: only a tie was broken otherwise
                best = trial
        for key, value in {"best_trial": str(best.number), "best_value": str(best.value),
                           "best_params": json.dumps(best.params, sort_keys=True)}.items():
            client.set_tag(self.sweep.parent_run_id, key, value)
        return best

    def _end_interrupted(self) -> None:
        """At exit without on_multirun_end (a job failed, Ctrl-C, SIGTERM): the parent ends KILLED if a signal stopped
        the sweep or a child, else FAILED; it still summarises the children that finished."""
        from mlflow.tracking import MlflowClient

        from seqlab.search.parent import close_parent, end_orphaned_children, interrupted_status

        try:
            client = MlflowClient(self.tracking_uri)
            end_orphaned_children(client, self.sweep)
            status, error = interrupted_status(client, self.sweep, self.signal)
            close_parent(self.parent, self.summary, status, complete=False, error=error)
        except Exception as error:  # the store went away with the sweep: say so, without a traceback at exit
            log.warning(f"could not end the sweep's parent run {self.sweep.parent_run_id}: "
                        f"{str(error).splitlines()[0] if str(error) else type(error).__name__}")


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
