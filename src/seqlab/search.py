"""`hparams_search=optuna`: Hydra's Optuna sweeper, made resumable with a journal of finished trials.

hydra-optuna-sweeper 1.3.0 pins optuna < 3, whose only persistent storages are SQL through SQLAlchemy
1.x (MLflow needs 2.x, with which optuna 2.10's SQLite storage fails) and Redis (a server to run). So
the sweeper runs its study in memory and appends every finished trial (params, distributions, value,
state) as one JSON line to a journal file, next to the MLflow store by default. Started again with
the same study name, it replays the journal into the study with Optuna's public `add_trial` and runs
only the trials still missing: `n_trials` is the search's total, not a count per invocation. A trial
interrupted mid-way was never written, so it is simply run again. One sweep process writes a
journal; appends are flushed line by line, and a torn last line (the process killed mid-write) is
skipped when replaying.
"""

from __future__ import annotations

import json
import logging
import os
import re
import warnings
from pathlib import Path
from typing import Any

import optuna
from hydra_plugins.hydra_optuna_sweeper._impl import OptunaSweeperImpl, create_params_from_overrides
from omegaconf import OmegaConf
from optuna.distributions import distribution_to_json, json_to_distribution
from optuna.trial import TrialState

from seqlab.errors import ConfigError

log = logging.getLogger(__name__)
FINISHED_STATES = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)


def store_folder(uri: str) -> Path:
    """Where the MLflow store lives on this machine: beside a SQLite file or a local folder, else here."""
    if uri.startswith("sqlite:///"):
        return Path(uri[len("sqlite:///"):]).expanduser().resolve().parent
    if uri.startswith("file://"):
        return Path(uri[len("file://"):]).expanduser().resolve()
    if "://" not in uri:
        return Path(uri).expanduser().resolve()
    return Path.cwd()  # a tracking server: keep the journal where the search runs


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name)


class TrialJournal:
    """An append-only JSON-lines file of finished trials."""

    def __init__(self, path: Path):
        self.path = path

    def records(self) -> list[dict[str, Any]]:
        if not self.path.exists():
            return []
        records = []
        lines = self.path.read_text(encoding="utf-8").splitlines()
        for number, line in enumerate(lines, 1):
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                if number < len(lines):
                    raise ConfigError(f"Optuna journal {self.path} line {number} is not JSON; it holds the search's "
                                      "finished trials: repair or delete it (deleting starts the search over).")
                log.warning(f"Skipping the torn last line of {self.path} (the search was killed mid-write)")
        return records

    def replay(self, study: optuna.Study) -> int:
        records = self.records()
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)  # add_trial: stable since 2.0
        for record in records:
            distributions = {k: json_to_distribution(v) for k, v in record["distributions"].items()}
            study.add_trial(optuna.trial.create_trial(state=TrialState[record["state"]], value=record["value"],
                                                      params=record["params"], distributions=distributions))
        return len(records)

    def append(self, trial: optuna.trial.FrozenTrial) -> None:
        record = {"number": trial.number, "state": trial.state.name, "value": trial.value, "params": trial.params,
                  "distributions": {k: distribution_to_json(v) for k, v in trial.distributions.items()}}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a", encoding="utf-8") as journal:
            journal.write(json.dumps(record) + "\n")
            journal.flush()
            os.fsync(journal.fileno())


class ResumableOptunaSweeperImpl(OptunaSweeperImpl):
    """Hydra's Optuna sweeper loop (single objective) with the trials journal; see the module doc."""

    def journal(self, study_name: str) -> TrialJournal:
        if self.storage is not None and "://" in str(self.storage):
            raise ConfigError(f"hydra.sweeper.storage={self.storage!r}: seqlab keeps an Optuna search in a journal "
                              "file (optuna 2.10's SQL storage fails with the SQLAlchemy 2 that MLflow needs); give a "
                              "file path, or null for optuna/EXPERIMENT/STUDY.jsonl next to the MLflow store.")
        if self.storage is not None:
            return TrialJournal(Path(str(self.storage)).expanduser())
        from seqlab.tracking import experiment_name

        folder = store_folder(self.config.tracking.uri) / "optuna" / _safe(experiment_name(self.config))
        return TrialJournal(folder / f"{_safe(study_name)}.jsonl")

    def sweep(self, arguments: list[str]) -> None:
        from seqlab.sweep import find_callback, sweep_name

        self._process_searchspace_config()
        distributions, fixed = create_params_from_overrides([*self._parse_sweeper_params_config(), *arguments])
        distributions = {**(self.search_space_distributions or {}), **distributions}
        for name in fixed:
            distributions.pop(name, None)
        directions = self._get_directions()
        if len(directions) != 1:
            raise ConfigError("seqlab's Optuna search optimises one metric (optimized_metric); "
                              f"hydra.sweeper.direction has {len(directions)}.")

        study_name = self.study_name or sweep_name(self.config)
        journal = self.journal(study_name)
        study = optuna.create_study(study_name=study_name, sampler=self.sampler, direction=directions[0])
        finished = journal.replay(study)
        log.info(f"Optuna study {study_name!r}: {finished} of {self.n_trials} trials finished before; journal "
                 f"{journal.path}")
        self.job_idx = finished  # job numbers continue, so a trial's number is its job's (tag sweep.job)
        while finished < self.n_trials:
            trials = [study.ask() for _ in range(min(self.n_jobs, self.n_trials - finished))]
            returns = self.launcher.launch(self._configure_trials(trials, distributions, fixed),
                                           initial_job_idx=self.job_idx)
            self.job_idx += len(returns)
            failures = []
            for trial, job_return in zip(trials, returns):
                try:
                    value = float(job_return.return_value)  # re-raises the job's exception if it failed
                except Exception as error:
                    log.warning(f"Trial {trial.number} failed: {error}")
                    failures.append(job_return)
                    study.tell(trial, state=TrialState.FAIL)
                else:
                    study.tell(trial, value)
                journal.append(study.trials[trial.number])
            finished += len(trials)
            if len(failures) / len(returns) > self.max_failure_rate:
                failures[0].return_value  # raises the first failed job's exception, traceback included

        if not any(trial.state == TrialState.COMPLETE for trial in study.trials):
            log.warning(f"Optuna study {study_name!r} has no completed trial")
            return
        best = study.best_trial
        results = {"name": "optuna", "study": study_name, "journal": str(journal.path), "best_trial": best.number,
                   "best_params": best.params, "best_value": best.value}
        OmegaConf.save(OmegaConf.create(results), Path(str(self.config.hydra.sweep.dir)) / "optimization_results.yaml")
        log.info(f"Best trial {best.number}: {self.config.optimized_metric} {best.value} with {best.params}")
        callback = find_callback(self.hydra_context.callbacks)
        if callback is not None:
            callback.tag_best_trial(best)
