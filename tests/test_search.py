"""seqlab.search.study without training: the search space, the worker loop on a shared journal (toy objectives),
pruning through the job's side, a killed worker's trial run again, two worker processes on one study."""

import os
import signal
import subprocess
import sys
import textwrap
import time
from types import SimpleNamespace

import optuna
import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import TrialState

from seqlab.training.callbacks import OptunaPruning
from seqlab.errors import ConfigError
from seqlab.jobs import SearchTrial
from seqlab.search.study import NOT_COUNTED, Worker, counted, job_trial, open_storage, search_space, storage_url


def job_return(value=None, error=None):
    """What Hydra's launcher hands back for a job: return_value re-raises the job's exception."""
    class Return:
        @property
        def return_value(self):
            if error is not None:
                raise error
            return value
    return Return()


@pytest.mark.unit
def test_search_space_reads_hydras_sweep_grammar():
    space, fixed = search_space(["model.dropout=interval(0.0, 0.5)", "trainer.learning_rate=tag(log, interval(1e-4, 1e-2))",
                                 "model.units=choice(32, 64)", "trainer.epochs=range(1, 7, 2)", "model.name=lstm",
                                 "preprocess.max_length=int(interval(50, 400))"])
    assert space["model.dropout"] == FloatDistribution(0.0, 0.5)
    assert space["trainer.learning_rate"] == FloatDistribution(1e-4, 1e-2, log=True)
    assert space["model.units"] == CategoricalDistribution([32, 64])
    assert space["trainer.epochs"] == IntDistribution(1, 5, step=2)
    assert space["preprocess.max_length"] == IntDistribution(50, 400)
    assert fixed == {"model.name": "lstm"}
    with pytest.raises(ConfigError, match="SQLite locks"):
        open_storage("sqlite:///optuna.db")
    assert storage_url(None, "sqlite:////srv/runs/mlflow.db", "imdb", "my search") == "/srv/runs/optuna/imdb/my_search.log"
    assert storage_url("postgresql://u:p@h/db", "sqlite:///x.db", "imdb", "s") == "postgresql://u:p@h/db"


def toy_worker(folder, n_trials, **options):
    url = str(folder / "study.log")
    storage = open_storage(url)
    study = optuna.create_study(study_name="toy", storage=storage, direction="maximize", load_if_exists=True)
    space = {"x": FloatDistribution(0.0, 1.0)}
    return url, Worker(study, space, n_trials, storage=storage, **options)


@pytest.mark.unit
def test_pruning_stops_a_trial_whose_curve_is_clearly_worse(tmp_path):
    """The job's side (OptunaPruning on the trial loaded from the journal by job_trial) and the worker's side."""
    url, worker = toy_worker(tmp_path, n_trials=4, sampler=None)
    pruner = {"_target_": "optuna.pruners.MedianPruner", "n_startup_trials": 2, "n_warmup_steps": 0}
    curves = {0: [0.80, 0.85, 0.90], 1: [0.82, 0.86, 0.91], 2: [0.50, 0.52, 0.55], 3: [0.81, 0.88, 0.92]}
    epochs_trained = {}

    def run_batch(trials):
        returns = []
        for trial in trials:  # each as a job would: its trial from the storage, one report per epoch
            link = SearchTrial(study="toy", storage=url, trial_id=worker.trial_id(trial), number=trial.number,
                               pruner=pruner)
            callback = OptunaPruning(job_trial(link), "accuracy/val", "val_accuracy")
            callback.set_model(SimpleNamespace(stop_training=False))
            for epoch, value in enumerate(curves[trial.number]):
                callback.on_epoch_end(epoch, {"val_accuracy": value})
                if callback.model.stop_training:
                    break
            epochs_trained[trial.number] = epoch + 1
            returns.append(job_return(callback.last_value))
        return returns

    assert worker.run(run_batch) == 4
    states = {t.number: t.state for t in worker.study.trials}
    assert states == {0: TrialState.COMPLETE, 1: TrialState.COMPLETE, 2: TrialState.PRUNED, 3: TrialState.COMPLETE}
    assert epochs_trained == {0: 3, 1: 3, 2: 1, 3: 3}  # stopped after its first epoch, behind the median
    assert worker.study.trials[2].user_attrs["pruned_at_epoch"] == 1
    assert worker.study.best_value == 0.92


@pytest.mark.unit
def test_failed_trials_count_and_the_failure_rate_stops_the_worker(tmp_path):
    _, worker = toy_worker(tmp_path / "strict", n_trials=3)
    with pytest.raises(RuntimeError, match="job broke"):
        worker.run(lambda trials: [job_return(error=RuntimeError("job broke")) for _ in trials])
    assert [t.state for t in worker.study.trials] == [TrialState.FAIL]  # failed, counted, not requeued

    _, tolerant = toy_worker(tmp_path / "tolerant", n_trials=3)
    outcomes = iter([None, RuntimeError("once"), None])  # 1 of 2, then 1 of 3: not above 0.5
    tolerant.run(lambda trials: [job_return(0.5, error=next(outcomes)) for _ in trials], max_failure_rate=0.5)
    assert sum(counted(t) for t in tolerant.study.trials) == 3  # n_trials is the total, failures included


WORKER_SCRIPT = textwrap.dedent("""
    import sys, time
    import optuna
    from optuna.distributions import FloatDistribution
    from seqlab.search.study import Worker, open_storage

    url, n_trials, seconds = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
    storage = open_storage(url)
    study = optuna.create_study(study_name="toy", storage=storage, direction="maximize", load_if_exists=True)
    worker = Worker(study, {"x": FloatDistribution(0.0, 1.0)}, n_trials, heartbeat_interval=0.2, grace_period=2.0,
                    poll_interval=0.2, storage=storage)

    def run_batch(trials):
        class Return:
            def __init__(self, value): self.return_value = value
        time.sleep(seconds)
        return [Return(trial.params["x"]) for trial in trials]

    print("ran", worker.run(run_batch), flush=True)
""")


def start_worker(tmp_path, url, n_trials, seconds):
    script = tmp_path / "worker.py"
    script.write_text(WORKER_SCRIPT)
    return subprocess.Popen([sys.executable, str(script), url, str(n_trials), str(seconds)], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)


def study_of(url):
    return optuna.load_study(study_name="toy", storage=open_storage(url))


def completed(url) -> int:
    try:
        return sum(t.state == TrialState.COMPLETE for t in study_of(url).trials)
    except KeyError:  # the worker has not created the study yet
        return 0


@pytest.mark.slow
def test_two_worker_processes_on_one_journal_run_exactly_n_trials(tmp_path):
    url = str(tmp_path / "study.log")
    workers = [start_worker(tmp_path, url, 8, 0.3) for _ in range(2)]
    outputs = [worker.communicate(timeout=120)[0] for worker in workers]
    assert [worker.returncode for worker in workers] == [0, 0], outputs
    ran = [int(output.split("ran ")[-1]) for output in outputs]
    trials = [t for t in study_of(url).trials if counted(t)]
    assert sum(ran) == 8 and min(ran) >= 1, outputs  # both worked, 8 in all
    assert len(trials) == 8 and {t.state for t in trials} == {TrialState.COMPLETE}
    assert len({t.params["x"] for t in trials}) == 8  # no trial ran twice (per-trial seeds differ across workers)
    assert all(not t.system_attrs.get(NOT_COUNTED) or t.state == TrialState.FAIL for t in study_of(url).trials)


@pytest.mark.slow
def test_a_killed_workers_trial_runs_again_and_the_search_ends_with_n_trials(tmp_path):
    url = str(tmp_path / "study.log")
    first = start_worker(tmp_path, url, 3, 1.0)
    try:
        deadline = time.monotonic() + 60
        while completed(url) < 1:
            assert first.poll() is None and time.monotonic() < deadline, first.stdout.read() if first.poll() else ""
            time.sleep(0.1)
        time.sleep(0.3)  # into the second trial
    finally:
        os.killpg(first.pid, signal.SIGKILL)  # no chance to clean up: its trial stays RUNNING, its heartbeat stops
        first.wait()
    [lost] = [t for t in study_of(url).trials if t.state == TrialState.RUNNING]

    second = start_worker(tmp_path, url, 3, 0.1)  # waits out the grace period, then runs the lost trial again
    output = second.communicate(timeout=120)[0]
    assert second.returncode == 0, output
    trials = study_of(url).trials
    assert sum(counted(t) for t in trials) == 3 and {t.state for t in trials if counted(t)} == {TrialState.COMPLETE}
    assert trials[lost.number].state == TrialState.FAIL and trials[lost.number].system_attrs[NOT_COUNTED]
    [retried] = [t for t in trials if t.system_attrs.get("failed_trial") == lost.number]
    assert retried.params == lost.params and retried.state == TrialState.COMPLETE
    assert optuna.storages.RetryFailedTrialCallback.retried_trial_number(retried) == lost.number


@pytest.mark.unit
def test_a_jobs_trial_travels_as_one_hydra_override(monkeypatch):
    """Base64 padding '=' would break Hydra's override grammar for some lengths of the study's address."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    from seqlab.jobs import TRIAL_ENV, current_trial

    for length in range(1, 5):
        trial = SearchTrial(study="s" * length, storage=f"/srv/{'x' * length}.log", trial_id=length, number=length,
                            pruner={"_target_": "optuna.pruners.MedianPruner"})
        [override] = OverridesParser.create().parse_overrides([f"hydra.job.env_set.{TRIAL_ENV}={trial.encode()}"])
        monkeypatch.setenv(TRIAL_ENV, override.value())
        assert current_trial() == trial
