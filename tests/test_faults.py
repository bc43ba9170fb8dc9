"""Faults from outside a run: a busy store, a diverging loss, a resume while the run still trains, a sweep stopped
with SIGTERM, parallel first runs on a new store, a kill while a model is being logged. None may lose an epoch,
leave a run RUNNING, or end a broken run FINISHED."""

import os
import re
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import keras
import psutil
import pytest
from mlflow.entities import LoggedModelStatus
from mlflow.tracking import MlflowClient

from seqlab.record.owner import OWNER_TAG, process_owner
from seqlab.errors import ConfigError, DivergedError, Terminated
from seqlab.workflow.train import train
from tests.conftest import fit_with_callbacks, seqlab_command
from tests.test_failures import fail_second_epoch_metrics, only_run, tiny_config


def database(uri: str) -> str:
    return uri[len("sqlite:///"):]


class HoldStoreLock(keras.callbacks.Callback):
    """Another process's write lock on the SQLite store, taken when epoch 2 begins and held `seconds`: longer than
    MLflow's own 20 s busy timeout, so epoch 2's metrics meet a locked store."""

    def __init__(self, uri: str, seconds: float):
        super().__init__()
        self.uri, self.seconds, self.thread = uri, seconds, None

    def on_epoch_begin(self, epoch, logs=None):
        if epoch == 1:
            locked = threading.Event()
            self.thread = threading.Thread(target=self.hold, args=(locked,))
            self.thread.start()
            locked.wait()

    def hold(self, locked):
        connection = sqlite3.connect(database(self.uri), isolation_level=None)
        connection.execute("BEGIN EXCLUSIVE")
        locked.set()
        time.sleep(self.seconds)
        connection.execute("COMMIT")
        connection.close()


@pytest.mark.integration
def test_a_store_locked_longer_than_mlflows_timeout_is_waited_for_and_no_epoch_is_lost(
        tiny_aclimdb, tracking_uri, monkeypatch, caplog):
    lock = HoldStoreLock(tracking_uri, seconds=24)
    fit_with_callbacks(monkeypatch, lock)
    train(tiny_config(tiny_aclimdb, tracking_uri))
    lock.thread.join()
    run = only_run(tracking_uri)
    assert run.info.status == "FINISHED"
    assert [m.step for m in MlflowClient(tracking_uri).get_metric_history(run.info.run_id, "loss/train")] == [0, 1]
    assert "the MLflow store is busy" in caplog.text and "record epoch 2's metrics" in caplog.text


@pytest.mark.integration
def test_a_diverging_loss_stops_the_run_failed_at_the_first_nan(tiny_aclimdb, tracking_uri):
    cfg = tiny_config(tiny_aclimdb, tracking_uri, "trainer.optimizer=sgd", "trainer.learning_rate=1e38",
                      "trainer.batch_size=2", "trainer.epochs=20")  # weights overflow to inf, then NaN
    with pytest.raises(DivergedError, match=r"Training diverged: the training loss became (?:nan|inf) in epoch (\d+), "
                                            r"batch \d+\. Lower trainer.learning_rate") as stopped:
        train(cfg)
    run = only_run(tracking_uri)
    assert run.info.status == "FAILED" and run.data.tags["error"].startswith("DivergedError: Training diverged")
    epoch = int(re.search(r"epoch (\d+)", str(stopped.value)).group(1))
    steps = [m.step for m in MlflowClient(tracking_uri).get_metric_history(run.info.run_id, "loss/train")]
    assert steps == list(range(epoch - 1))  # the epochs before the NaN, recorded; none after
    assert "accuracy/test" not in run.data.metrics  # no evaluation of a broken model


# --- trainer.resume of a run that is RUNNING --------------------------------------------------------------

@pytest.fixture
def interrupted_run(tiny_aclimdb, tracking_uri, monkeypatch):
    """A run that stopped after epoch 1 (its epoch 2 metrics failed), then marked RUNNING as a process would leave
    it: the resume tests give it the owner they need."""
    fail_second_epoch_metrics(monkeypatch)
    with pytest.raises(Exception):
        train(tiny_config(tiny_aclimdb, tracking_uri))
    monkeypatch.undo()
    run = only_run(tracking_uri)
    assert run.data.tags[OWNER_TAG] == process_owner()  # the process that trained it
    MlflowClient(tracking_uri).update_run(run.info.run_id, status="RUNNING")
    return run.info.run_id


def set_owner(uri: str, run_id: str, owner: str) -> None:
    MlflowClient(uri).set_tag(run_id, OWNER_TAG, owner)


@pytest.mark.integration
def test_resuming_a_run_that_a_live_process_trains_is_refused(interrupted_run, tiny_aclimdb, tracking_uri):
    trainer = subprocess.Popen(["sleep", "60"])  # the live process that trains the run
    try:
        set_owner(tracking_uri, interrupted_run, process_owner(trainer.pid))
        with pytest.raises(ConfigError, match=rf"process {trainer.pid} on this host is still training.*"
                                              rf"kill -TERM {trainer.pid}"):
            train(tiny_config(tiny_aclimdb, tracking_uri, f"trainer.resume={interrupted_run}"))
    finally:
        trainer.kill()
        trainer.wait()
    assert only_run(tracking_uri).info.status == "RUNNING"  # untouched


@pytest.mark.integration
def test_a_run_whose_process_is_gone_is_resumed_and_one_on_another_host_needs_takeover(
        interrupted_run, tiny_aclimdb, tracking_uri):
    gone = subprocess.Popen(["true"])
    owner = process_owner(gone.pid)
    gone.wait()
    set_owner(tracking_uri, interrupted_run, "node-17.cluster:4242:1700000000")
    with pytest.raises(ConfigError, match=r"by process 4242 on host 'node-17.cluster'.*trainer.takeover=true"):
        train(tiny_config(tiny_aclimdb, tracking_uri, f"trainer.resume={interrupted_run}"))

    set_owner(tracking_uri, interrupted_run, owner)  # same host, process gone: no takeover needed
    train(tiny_config(tiny_aclimdb, tracking_uri, f"trainer.resume={interrupted_run}"))
    run = only_run(tracking_uri)
    assert run.info.status == "FINISHED" and run.data.tags[OWNER_TAG] == process_owner()
    steps = [m.step for m in MlflowClient(tracking_uri).get_metric_history(interrupted_run, "loss/train")]
    assert steps == [0, 1]  # once each: one process wrote into the run at a time


@pytest.mark.integration
def test_takeover_continues_a_run_left_running_on_another_host(interrupted_run, tiny_aclimdb, tracking_uri):
    set_owner(tracking_uri, interrupted_run, "node-17.cluster:4242:1700000000")
    train(tiny_config(tiny_aclimdb, tracking_uri, f"trainer.resume={interrupted_run}", "trainer.takeover=true"))
    assert only_run(tracking_uri).info.status == "FINISHED"


# --- a model being logged when the run stops ---------------------------------------------------------------

@pytest.mark.integration
def test_a_run_stopped_while_its_model_is_logged_leaves_no_pending_model(tiny_aclimdb, tracking_uri, monkeypatch):
    def interrupted(*args, **kwargs):  # SIGTERM while MLflow uploads the model's files
        raise Terminated("SIGTERM")

    monkeypatch.setattr(MlflowClient, "log_model_artifacts", interrupted)
    with pytest.raises(Terminated):
        train(tiny_config(tiny_aclimdb, tracking_uri, "tracking.log_model=true"))
    run = only_run(tracking_uri)
    assert run.info.status == "KILLED"
    client = MlflowClient(tracking_uri)
    models = client.search_logged_models([run.info.experiment_id])
    assert models and all(model.status == LoggedModelStatus.FAILED for model in models)


# --- processes ---------------------------------------------------------------------------------------------

@pytest.mark.slow
def test_four_first_runs_at_once_on_a_new_sqlite_store_all_start(tmp_path):
    """MLflow creates a new store's tables and runs its migrations in whichever process opens it first."""
    uri = f"sqlite:///{tmp_path / 'new' / 'mlflow.db'}"
    script = ("import sys; from seqlab.record.store import configure\n"
              "experiment = configure(sys.argv[1], 'custom', 'custom')\n"
              "import mlflow; mlflow.MlflowClient().create_run(experiment); print('ok')\n")
    environment = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])}
    processes = [subprocess.Popen([sys.executable, "-c", script, uri], stdout=subprocess.PIPE,
                                  stderr=subprocess.STDOUT, text=True, env=environment) for _ in range(4)]
    outputs = [process.communicate(timeout=300)[0] for process in processes]
    assert [process.returncode for process in processes] == [0] * 4, outputs
    client = MlflowClient(uri)
    assert len(client.search_runs([client.get_experiment_by_name("custom").experiment_id])) == 4


def runs_of(uri: str):
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("imdb")
    return client.search_runs([experiment.experiment_id]) if experiment else []


@pytest.mark.slow
@pytest.mark.parametrize("whole_group", [False, True], ids=["sweep-process", "process-group"])
def test_sigterm_to_a_joblib_sweep_ends_every_run_killed_and_leaves_no_worker(tiny_aclimdb, tmp_path, whole_group):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    command = seqlab_command("train", "-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2",
                             f"hydra.sweep.dir={tmp_path / 'multirun'}", f"dataset.path={tiny_aclimdb}",
                             f"tracking.uri={uri}", "debug=tiny", "trainer.epochs=200", "trainer.batch_size=2",
                             "tracking.log_model=false", "trainer.seed=1,2,3")
    sweep = subprocess.Popen(command, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                             start_new_session=True)
    try:
        deadline = time.monotonic() + 240
        while len([r for r in runs_of(uri) if r.data.tags.get("sweep.role") != "parent"]) < 2:
            assert sweep.poll() is None and time.monotonic() < deadline, sweep.stdout.read()[-3000:]
            time.sleep(1)
        workers = psutil.Process(sweep.pid).children(recursive=True)
        if whole_group:
            os.killpg(sweep.pid, signal.SIGTERM)
        else:
            sweep.send_signal(signal.SIGTERM)
        output = sweep.communicate(timeout=120)[0]
    finally:
        if sweep.poll() is None:
            os.killpg(sweep.pid, signal.SIGKILL)
    assert sweep.returncode == 143, output[-3000:]
    runs = runs_of(uri)
    assert {run.info.status for run in runs} == {"KILLED"}, [(r.info.run_name, r.info.status) for r in runs]
    assert len(runs) == 3  # the parent and the two jobs that had started; the third never started
    [parent] = [run for run in runs if run.data.tags.get("sweep.role") == "parent"]
    assert parent.data.tags["error"] == "interrupted by SIGTERM"  # ended by the run lifecycle, as its jobs
    time.sleep(1)
    assert not [w for w in workers if w.is_running() and w.status() != psutil.STATUS_ZOMBIE]


@pytest.mark.integration
def test_a_store_on_a_full_disk_gives_one_paragraph_and_resume_continues_the_run(tiny_aclimdb, tracking_uri,
                                                                                monkeypatch, capfd):
    """The disk fills during epoch 2: its checkpoint upload fails, and so does every later write to the store,
    ending the run included. The run stays RUNNING (nothing can change that), the error says so in one paragraph
    without MLflow's tracebacks, and once space is back the run resumes."""
    import sqlite3 as sqlite
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    def full(*args, **kwargs):
        raise sqlite.OperationalError("database or disk is full")

    original = MlflowClient.log_artifacts

    def log_artifacts(self, run_id, local_dir, artifact_path=None):
        if artifact_path == "checkpoint" and len(MlflowClient(tracking_uri).get_metric_history(run_id, "loss/train")) > 1:
            for method in ("log_batch", "set_tag", "update_run_info", "log_metric"):
                monkeypatch.setattr(SqlAlchemyStore, method, full)
            raise OSError(28, "No space left on device")
        return original(self, run_id, local_dir, artifact_path)

    monkeypatch.setattr(MlflowClient, "log_artifacts", log_artifacts)
    with pytest.raises(Exception) as failed:
        train(tiny_config(tiny_aclimdb, tracking_uri))
    message = str(failed.value)
    assert "upload the epoch 2 checkpoint" in message and "marked FAILED" not in message
    assert "The store took no more writes either (database or disk is full): the run still shows RUNNING" in message
    assert "Traceback" not in capfd.readouterr().err
    monkeypatch.undo()
    run = only_run(tracking_uri)
    assert run.info.status == "RUNNING"
    train(tiny_config(tiny_aclimdb, tracking_uri, f"trainer.resume={run.info.run_id}"))  # its process is gone
    assert only_run(tracking_uri).info.status == "FINISHED"
