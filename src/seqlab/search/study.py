"""`hparams_search=optuna`: an Optuna study that seqlab drives by ask and tell, from a Hydra sweeper of its own.

Each `seqlab train -m hparams_search=...` process is one worker: it asks the study for a trial, launches a
training job with the trial's params (through the configured Hydra launcher, a batch of `n_jobs` at a time)
and tells the study the job's result. The study lives in shared storage, so that any number of workers, on
this host or others, started with the same study name, fill one study:

- storage: Optuna's `JournalStorage` in a file next to the MLflow store (file locks, safe for many processes
  on one host or one NFS-free file system), or a database URL (PostgreSQL, MySQL) for several hosts;
- `n_trials` is the study's total: a worker asks only while trials counted (complete, pruned, failed,
  running, waiting) are fewer, and a trial asked beyond that by a racing worker is dropped before it runs;
- a worker writes a heartbeat into its running trials; a trial whose heartbeat stops (its worker was
  killed) is failed by the next worker that looks, and run again (Optuna's retry convention, `failed_trial`);
  Ctrl-C fails the running trials at once and queues them again. Optuna's own heartbeat exists only for
  RDB storages, hence one mechanism for both here;
- pruning: the job reads its trial from `SEQLAB_TRIAL` (see `seqlab.jobs`) and reports each epoch's validation
  metric to it (`seqlab.training.callbacks.OptunaPruning`); a pruned job marks the trial, and the worker tells it PRUNED.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import signal
import socket
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import IntervalSweep, Transformer
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import TrialState

from seqlab.errors import ConfigError
from seqlab.jobs import PRUNED_AT, TRIAL_ENV, SearchTrial
from seqlab.redaction import redact_uri as redact

log = logging.getLogger(__name__)
optuna.logging.set_verbosity(optuna.logging.WARNING)  # seqlab says what happens, once per trial

HEARTBEAT = "seqlab:heartbeat"  # trial system attrs: the time of the worker's last sign of life ...
WORKER = "seqlab:worker"  # ... which worker (host:pid) runs the trial
NOT_COUNTED = "seqlab:not_counted"  # a trial lost with its worker (run again) or asked beyond n_trials


def store_folder(uri: str) -> Path:
    """Where the MLflow store lives on this machine: beside a SQLite file or a local folder, else here."""
    if uri.startswith("sqlite:///"):
        return Path(uri[len("sqlite:///"):]).expanduser().resolve().parent
    if uri.startswith("file://"):
        return Path(uri[len("file://"):]).expanduser().resolve()
    if "://" not in uri:
        return Path(uri).expanduser().resolve()
    return Path.cwd()  # a tracking server: keep the journal where the search runs


def safe_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name)


def storage_url(storage: str | None, tracking_uri: str, experiment: str, study: str) -> str:
    """A database URL as given; else a journal file: the path given, or optuna/EXPERIMENT/STUDY.log beside the
    MLflow store."""
    if storage and "://" in storage:
        return storage
    if storage:
        return str(Path(storage).expanduser().resolve())
    return str(store_folder(tracking_uri) / "optuna" / safe_name(experiment) / f"{safe_name(study)}.log")


def open_storage(url: str) -> optuna.storages.BaseStorage:
    if "://" in url:
        if url.startswith("sqlite"):
            raise ConfigError(f"hparams_search.storage={url!r}: SQLite locks under parallel workers (Optuna's FAQ "
                              "advises against it); give a file path (a journal, the default) or a database server URL "
                              "such as postgresql://user:password@host/db.")
        for attempt in range(3):  # workers opening a new database at once race in creating Optuna's tables
            try:
                return optuna.storages.RDBStorage(url, engine_kwargs={"pool_pre_ping": True})
            except Exception as error:
                if attempt < 2 and any(text in str(error) for text in ("already exists", "duplicate key")):
                    time.sleep(1 + attempt)
                    continue
                raise ConfigError(f"hparams_search.storage: cannot open the database of the Optuna study: "
                                  f"{type(error).__name__}: {str(error).splitlines()[0]}") from None
    from optuna.storages.journal import JournalFileBackend

    Path(url).parent.mkdir(parents=True, exist_ok=True)
    return optuna.storages.JournalStorage(JournalFileBackend(url))


# --- the search space: Hydra's sweep grammar as Optuna distributions ----------------------------------------

def search_space(overrides: list[str]) -> tuple[dict[str, BaseDistribution], dict[str, str]]:
    """{key: distribution} for `choice(...)`, `range(...)`, `interval(...)` (`tag(log, ...)`: log scale;
    `int(interval(...))`: integers), and {key: value} for plain overrides, which every trial gets as they are."""
    space, fixed = {}, {}
    for override in OverridesParser.create().parse_overrides(overrides):
        key = override.get_key_element()
        if not override.is_sweep_override():
            fixed[key] = override.get_value_element_as_str()
        elif override.is_choice_sweep():
            space[key] = CategoricalDistribution(list(override.sweep_iterator(transformer=Transformer.encode)))
        elif override.is_range_sweep():
            values = list(override.sweep_iterator(transformer=Transformer.encode))
            steps = {b - a for a, b in zip(values, values[1:])}
            if all(isinstance(v, int) for v in values) and len(steps) <= 1:
                space[key] = IntDistribution(values[0], values[-1], step=steps.pop() if steps else 1)
            else:
                space[key] = CategoricalDistribution(values)
        elif override.is_interval_sweep():
            interval: IntervalSweep = override.value()
            log_scale = "log" in interval.tags
            if isinstance(interval.start, int) and isinstance(interval.end, int):
                space[key] = IntDistribution(interval.start, interval.end, log=log_scale)
            else:
                space[key] = FloatDistribution(float(interval.start), float(interval.end), log=log_scale)
        else:
            raise ConfigError(f"hydra.sweeper.params: {override.input_line!r} is a sweep Optuna cannot sample "
                              "(use choice(...), range(...), interval(a, b) or tag(log, interval(a, b))).")
    return space, fixed


def suggest(trial: optuna.Trial, name: str, distribution: BaseDistribution):
    if isinstance(distribution, CategoricalDistribution):
        return trial.suggest_categorical(name, distribution.choices)
    if isinstance(distribution, IntDistribution):
        return trial.suggest_int(name, distribution.low, distribution.high, step=distribution.step,
                                 log=distribution.log)
    return trial.suggest_float(name, distribution.low, distribution.high, step=distribution.step, log=distribution.log)


# --- one worker --------------------------------------------------------------------------------------------

@contextlib.contextmanager
def deferred_interrupts():
    """SIGINT and SIGTERM wait until the block ends (they are blocked, then delivered), where the OS allows."""
    if threading.current_thread() is not threading.main_thread() or not hasattr(signal, "pthread_sigmask"):
        yield
        return
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def counted(trial: optuna.trial.FrozenTrial) -> bool:
    return not trial.system_attrs.get(NOT_COUNTED)


def _heartbeat(trial: optuna.trial.FrozenTrial) -> float:
    return float(trial.system_attrs.get(HEARTBEAT) or trial.datetime_start.timestamp())


@dataclass
class Worker:
    """Fills `study` up to `n_trials` with `run_batch(trials) -> [JobReturn]`; see the module doc."""

    study: optuna.Study
    space: dict[str, BaseDistribution]
    n_trials: int
    n_jobs: int = 1
    sampler: Any = None  # DictConfig with _target_: a fresh sampler per trial, seeded with seed + trial number
    heartbeat_interval: float = 10.0
    grace_period: float = 60.0
    max_retry: int = 2
    poll_interval: float = 2.0
    name: str = field(default_factory=lambda: f"{socket.gethostname()}:{os.getpid()}")
    in_flight: dict[int, optuna.Trial] = field(default_factory=dict)
    storage: optuna.storages.BaseStorage | None = None  # the study's (open_storage): system attrs and states go there

    def __post_init__(self) -> None:
        if self.storage is None:
            raise TypeError("Worker needs the storage its study was opened on (storage=open_storage(url))")
        self.study_id = self.storage.get_study_id_from_name(self.study.study_name)

    def trial_id(self, trial) -> int:
        """The storage's id of `trial` (Optuna's trials keep theirs private)."""
        return self.storage.get_trial_id_from_study_id_trial_number(self.study_id, trial.number)

    def trials(self) -> list[optuna.trial.FrozenTrial]:
        return self.study.get_trials(deepcopy=False)

    def open_slots(self) -> tuple[int, int]:
        """(trials this worker may still ask, trials running elsewhere)."""
        trials = [t for t in self.trials() if counted(t)]
        running_elsewhere = sum(t.state == TrialState.RUNNING and t.number not in self.in_flight for t in trials)
        taken = sum(t.state != TrialState.WAITING for t in trials)  # a waiting trial is a retry: asked next
        return self.n_trials - taken, running_elsewhere

    def ask(self) -> optuna.Trial | None:
        """A new (or queued) trial with its params chosen, or None where a racing worker took the last slot."""
        with deferred_interrupts():  # else a Ctrl-C inside ask() leaves a RUNNING trial no one knows of
            trial = self.study.ask()
            self.in_flight[trial.number] = trial
        self.beat(trial)
        before = [t for t in self.trials() if t.number < trial.number and counted(t)]
        if len(before) >= self.n_trials:  # another worker asked the last trials first: this one never runs
            self.drop(trial, NOT_COUNTED, "asked beyond n_trials")
            return None
        if self.sampler is not None and "seed" in self.sampler:  # reproducible alone, different across workers
            self.study.sampler = instantiate(self.sampler, seed=int(self.sampler.seed) + trial.number)
        for name, distribution in self.space.items():
            suggest(trial, name, distribution)
        return trial

    def beat(self, trial: optuna.Trial) -> None:
        trial_id = self.trial_id(trial)
        with contextlib.suppress(optuna.exceptions.UpdateFinishedTrialError):
            self.storage.set_trial_system_attr(trial_id, WORKER, self.name)
            self.storage.set_trial_system_attr(trial_id, HEARTBEAT, time.time())

    def drop(self, trial: optuna.Trial, attr: str, why: str) -> None:
        with contextlib.suppress(optuna.exceptions.UpdateFinishedTrialError):
            self.storage.set_trial_system_attr(self.trial_id(trial), attr, why)
            self.study.tell(trial, state=TrialState.FAIL)
        self.in_flight.pop(trial.number, None)

    def retry(self, trial: optuna.trial.FrozenTrial) -> None:
        """Queue a lost trial's params again, with Optuna's `failed_trial`/`retry_history` system attrs."""
        history = [*trial.system_attrs.get("retry_history", []), trial.number]
        if len(history) > self.max_retry:
            log.warning(f"trial {trial.number} was lost {len(history)} times (its worker died each time); "
                        "not retried again (hydra.sweeper.max_retry)")
            return
        self.study.add_trial(optuna.trial.create_trial(
            state=TrialState.WAITING, params=trial.params, distributions=trial.distributions,
            system_attrs={"failed_trial": trial.number, "retry_history": history}))

    def fail_stale(self) -> None:
        """Fail and requeue the running trials of workers that stopped beating; of racing workers, the one whose
        state change lands first requeues it."""
        deadline = time.time() - self.grace_period
        for trial in self.trials():
            if trial.state != TrialState.RUNNING or trial.number in self.in_flight or _heartbeat(trial) > deadline:
                continue
            try:
                self.storage.set_trial_system_attr(self.trial_id(trial), NOT_COUNTED, "worker lost")
                self.storage.set_trial_state_values(self.trial_id(trial), TrialState.FAIL)
            except optuna.exceptions.UpdateFinishedTrialError:
                continue  # it finished, or another worker failed it first
            log.warning(f"trial {trial.number}: its worker {trial.system_attrs.get(WORKER, '?')} stopped "
                        f"({self.grace_period:.0f} s without a heartbeat); its params are queued again")
            self.retry(trial)

    @contextlib.contextmanager
    def beating(self):
        stop = threading.Event()

        def loop():
            while not stop.wait(self.heartbeat_interval):
                for trial in list(self.in_flight.values()):
                    with contextlib.suppress(Exception):  # a transient store error: the next beat retries
                        self.beat(trial)

        thread = threading.Thread(target=loop, name="seqlab-heartbeat", daemon=True)
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join()

    def run(self, run_batch, max_failure_rate: float = 0.0) -> int:
        """Ask, launch and tell until the study holds `n_trials` finished trials; returns how many ran here."""
        ran, failures = 0, []
        with self.beating():
            try:
                while True:
                    self.fail_stale()
                    slots, elsewhere = self.open_slots()
                    if slots <= 0:
                        if not elsewhere:
                            break
                        time.sleep(self.poll_interval)  # wait for other workers' trials: one may be lost and requeued
                        continue
                    trials = [t for t in (self.ask() for _ in range(min(self.n_jobs, slots))) if t is not None]
                    if not trials:
                        continue
                    returns = run_batch(trials)
                    for trial, job_return in zip(trials, returns):
                        failures += self.tell(trial, job_return)
                    ran += len(trials)
                    if failures and len(failures) / ran > max_failure_rate:
                        failures[0].return_value  # raises the first failed job's exception, traceback included
            finally:  # Ctrl-C or a raised failure: what runs here now is failed and queued again, at once
                for trial in list(self.in_flight.values()):
                    frozen = self.storage.get_trial(self.trial_id(trial))
                    self.drop(trial, NOT_COUNTED, "worker interrupted")
                    if frozen.state == TrialState.RUNNING:
                        self.retry(frozen)
        return ran

    def tell(self, trial: optuna.Trial, job_return) -> list:
        """Tell the study the job's outcome; returns [job_return] where the job failed."""
        self.in_flight.pop(trial.number, None)
        frozen = self.storage.get_trial(self.trial_id(trial))
        try:
            value = float(job_return.return_value)  # re-raises the job's exception if it failed
        except Exception as error:
            log.warning(f"trial {trial.number} failed: {type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}")
            self.study.tell(trial, state=TrialState.FAIL)
            return [job_return]
        if PRUNED_AT in frozen.user_attrs:
            self.study.tell(trial, state=TrialState.PRUNED)
            log.info(f"trial {trial.number} pruned after epoch {frozen.user_attrs[PRUNED_AT]}")
        else:
            self.study.tell(trial, value)
        return []


# --- the job's side: its trial, for pruning -----------------------------------------------------------------

def job_trial(link: SearchTrial) -> optuna.Trial:
    """The running trial a job reports to, in the study's storage, with the search's pruner."""
    pruner = instantiate(OmegaConf.create(link.pruner)) if link.pruner else optuna.pruners.NopPruner()
    study = optuna.load_study(study_name=link.study, storage=open_storage(link.storage), pruner=pruner)
    return optuna.Trial(study, link.trial_id)


def results(study: optuna.Study, best: optuna.trial.FrozenTrial, optimized_metric: str) -> dict[str, Any]:
    states = dict(Counter(trial.state.name for trial in study.trials if counted(trial)))
    return {"name": "optuna", "study": study.study_name, "optimized_metric": optimized_metric,
            "best_trial": best.number, "best_params": best.params, "best_value": best.value, "trials": states}


def configure(sweeper_config: DictConfig) -> None:
    """Refuse what the search cannot do, before anything runs."""
    if str(sweeper_config.direction) not in ("maximize", "minimize"):
        raise ConfigError(f"hydra.sweeper.direction={sweeper_config.direction!r}: seqlab's search optimises one "
                          "metric (optimized_metric); give maximize or minimize.")
    if int(sweeper_config.n_trials) < 1:
        raise ConfigError(f"hydra.sweeper.n_trials={sweeper_config.n_trials}: give 1 or more (the study's total).")


def sweep(sweeper, arguments: list[str]) -> None:
    """The sweeper's loop (hydra_plugins.seqlab_sweeper.OptunaSweeper): open the study, work on it, record the
    best trial in the sweep folder and on the MLflow parent run."""
    from seqlab.config.plan import store_target
    from seqlab.search.sweep import find_callback, sweep_name

    options, config = OmegaConf.create(sweeper.options), sweeper.config
    configure(options)
    params = [f"{key}={value}" for key, value in (options.params or {}).items()]
    space, fixed = search_space([*params, *arguments])
    for key in fixed:
        space.pop(key, None)  # a key given plainly on the command line is fixed for every trial
    name = options.study_name or sweep_name(config)
    target = store_target(config)
    url = storage_url(options.storage, target.uri, target.experiment, name)
    storage = open_storage(url)
    study = optuna.create_study(study_name=name, storage=storage, direction=str(options.direction),
                                load_if_exists=True)
    pruner = OmegaConf.to_container(options.pruner, resolve=True) if options.pruner else None
    worker = Worker(study, space, int(options.n_trials), int(options.n_jobs), sampler=options.sampler,
                    heartbeat_interval=float(options.heartbeat_interval), grace_period=float(options.grace_period),
                    max_retry=int(options.max_retry), storage=storage)
    before = sum(t.state.is_finished() and counted(t) for t in study.trials)
    log.info(f"Optuna study {name!r}: {before} of {worker.n_trials} trials finished before, "
             f"{'journal' if '://' not in url else 'database'} {redact(url)}")

    # the preset declares the key, so that Hydra's job lines leave it out (it logs overrides not starting "hydra.")
    env_key = ("" if TRIAL_ENV in (OmegaConf.select(config, "hydra.job.env_set") or {}) else "+") + \
        f"hydra.job.env_set.{TRIAL_ENV}"

    def run_batch(trials: list[optuna.Trial]):
        overrides = []
        for trial in trials:
            link = SearchTrial(study=name, storage=url, trial_id=worker.trial_id(trial), number=trial.number, pruner=pruner)
            overrides.append([*(f"{key}={value}" for key, value in fixed.items()),
                              *(f"{key}={value}" for key, value in trial.params.items()),
                              f"{env_key}={link.encode()}", f"hydra.sweep.subdir={trial.number}"])
        return sweeper.launcher.launch(overrides, initial_job_idx=trials[0].number)

    ran = worker.run(run_batch, float(options.max_failure_rate))
    log.info(f"Optuna study {name!r}: {ran} trials ran in this worker")
    if not any(t.state == TrialState.COMPLETE for t in study.trials):
        log.warning(f"Optuna study {name!r} has no completed trial")
        return
    callback = find_callback(sweeper.hydra_context.callbacks)
    best = callback.best_trial(study) if callback is not None else study.best_trial
    outcome = results(study, best, str(config.optimized_metric))
    OmegaConf.save(OmegaConf.create({**outcome, "storage": redact(url)}),
                   Path(str(config.hydra.sweep.dir)) / "optimization_results.yaml")
    log.info(f"Best trial {outcome['best_trial']}: {config.optimized_metric} {outcome['best_value']} with "
             f"{outcome['best_params']}")
