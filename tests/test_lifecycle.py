"""The one run lifecycle (seqlab.record.lifecycle) in the commands besides `seqlab train`: SIGTERM during `seqlab
pretrain` and SIGTERM or Ctrl-C during `seqlab ensemble` end the command's run KILLED with the interruption as its
`error` tag, exit with the code a shell shows for the signal (143, 130: as `seqlab train`, tests/test_faults.py) and
leave no process behind. Each command runs as a real process and gets the signal once its run is RUNNING in the
store, at a point where the command cannot have finished: pretraining for 100,000 epochs; an ensemble evaluating
1,200 test reviews one at a time (--batch-size 1) and then logging its model."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path
from types import SimpleNamespace

import psutil
import pytest
from mlflow.tracking import MlflowClient

from seqlab.workflow.train import train
from tests.conftest import compose_config, default_sigint, seqlab_command, write_aclimdb

EXTRA_TEST_REVIEWS = 600  # per class, besides write_aclimdb's: the ensemble's evaluation outlasts the signal's delivery


def seqlab(*args: str, cwd: Path) -> tuple[subprocess.Popen, Path]:
    """`seqlab ARGS` in its own session (so that nothing it starts outlives the test), its output to a file."""
    log = cwd / f"{args[0]}-{time.monotonic_ns()}.log"
    with log.open("w") as output:
        process = subprocess.Popen(seqlab_command(*args), cwd=cwd, stdout=output, stderr=subprocess.STDOUT,
                                   start_new_session=True, preexec_fn=default_sigint)
    return process, log


def signalled_once_running(process: subprocess.Popen, log: Path, uri: str, signum: int, after: str,
                           timeout: float = 300):
    """Wait until the command's run is RUNNING in the store and the command has said `after` (it got that far in the
    run), send `signum`, wait for the exit. Returns the run's id, the exit code, the output and the processes the
    command had started."""
    client = MlflowClient(uri)

    def runs(status: str | None = None) -> list:
        experiments = [e.experiment_id for e in client.search_experiments()]
        query = f"attributes.status = '{status}'" if status else ""
        return client.search_runs(experiments, query) if experiments else []

    earlier = {run.info.run_id for run in runs()}
    deadline = time.monotonic() + timeout
    try:
        while True:
            running = [run for run in runs("RUNNING") if run.info.run_id not in earlier]
            assert process.poll() is None, f"ended before it was signalled:\n{log.read_text()[-3000:]}"
            if running and after in log.read_text():
                break
            assert time.monotonic() < deadline, f"the run did not get that far in time:\n{log.read_text()[-3000:]}"
            time.sleep(0.1)
        children = psutil.Process(process.pid).children(recursive=True)
        process.send_signal(signum)
        process.wait(timeout=120)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    [run] = running
    return run.info.run_id, process.returncode, log.read_text(), children


def assert_killed(uri: str, run_id: str, returncode: int, output: str, children, signum: int) -> None:
    terminated = signum == signal.SIGTERM
    assert returncode == (143 if terminated else 130), output[-3000:]
    assert ("terminated (SIGTERM)" if terminated else "interrupted (Ctrl-C)") in output
    assert "Traceback" not in output, output[-3000:]
    run = MlflowClient(uri).get_run(run_id)
    assert run.info.status == "KILLED", output[-3000:]
    assert run.data.tags["error"] == ("interrupted by SIGTERM" if terminated else "interrupted (Ctrl-C)")
    time.sleep(0.5)
    assert not [p for p in children if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]


@pytest.mark.slow
def test_sigterm_during_seqlab_pretrain_ends_its_run_killed(tmp_path):
    data = write_aclimdb(tmp_path / "data")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    MlflowClient(uri).search_experiments()  # the store exists before the command and this test both open it
    process, log = seqlab("pretrain", f"dataset.path={data}", "debug=tiny", "pretrain.embedding_dim=4",
                          "pretrain.min_count=1", "pretrain.epochs=100000", f"tracking.uri={uri}",
                          f"hydra.run.dir={tmp_path / 'out'}", cwd=tmp_path)
    run_id, returncode, output, children = signalled_once_running(process, log, uri, signal.SIGTERM,
                                                                  after="pretrain epoch 1/")
    assert_killed(uri, run_id, returncode, output, children, signal.SIGTERM)
    assert MlflowClient(uri).get_run(run_id).data.tags["pretrain"] == "word2vec"  # the pretraining's own run


@pytest.fixture(scope="module")
def members(tmp_path_factory) -> SimpleNamespace:
    """Two tiny models logged by `seqlab train` (an LSTM and a GRU) on a tiny aclImdb with a larger test split."""
    root = tmp_path_factory.mktemp("ensemble")
    data = write_aclimdb(root / "data")
    for sentiment, rating in (("pos", 8), ("neg", 2)):
        for i in range(EXTRA_TEST_REVIEWS):
            (data / "test" / sentiment / f"{100 + i}_{rating}.txt").write_text(
                f"a {sentiment} review, number {i}, of a film", encoding="utf-8")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    for model in ("lstm", "gru"):
        train(compose_config([f"dataset.path={data}", f"model={model}", "debug=tiny", "dataset.max_test=null",
                              "trainer.checkpoint=false", f"tracking.uri={uri}"]))
    client = MlflowClient(uri)
    runs = client.search_runs([client.get_experiment_by_name("imdb").experiment_id])
    assert len(runs) == 2 and {run.info.status for run in runs} == {"FINISHED"}
    return SimpleNamespace(root=root, uri=uri, run_ids=[run.info.run_id for run in runs])


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "Ctrl-C"])
def test_a_signal_during_seqlab_ensemble_ends_its_run_killed(members, signum):
    experiment = f"ensemble-{signal.Signals(signum).name}"
    process, log = seqlab("ensemble", *members.run_ids, "--tracking-uri", members.uri, "--experiment", experiment,
                          "--batch-size", "1", cwd=members.root)
    run_id, returncode, output, children = signalled_once_running(process, log, members.uri, signum,
                                                                  after="evaluating the mean of 2 models")
    assert_killed(members.uri, run_id, returncode, output, children, signum)
    client = MlflowClient(members.uri)
    assert client.get_run(run_id).info.experiment_id == client.get_experiment_by_name(experiment).experiment_id
    assert f"runs:/{run_id}/model" not in output  # the ensemble's model URI, printed when it finishes


@pytest.mark.unit
def test_a_signal_while_the_run_is_created_is_held_until_the_run_can_end_killed(tracking_uri, monkeypatch):
    """SIGTERM just after the store created the run, before the process joined it: raised once the run is joined,
    which then ends KILLED (not left RUNNING with nobody to end it), and the block never runs."""
    import mlflow

    from seqlab.errors import Terminated
    from seqlab.record.lifecycle import run_lifecycle

    create_run = MlflowClient.create_run

    def create_then_sigterm(self, *args, **kwargs):
        run = create_run(self, *args, **kwargs)
        os.kill(os.getpid(), signal.SIGTERM)
        return run

    monkeypatch.setattr(MlflowClient, "create_run", create_then_sigterm)
    mlflow.set_tracking_uri(tracking_uri)
    experiment_id = MlflowClient().create_experiment("lifecycle")
    handler = signal.getsignal(signal.SIGTERM)
    with pytest.raises(Terminated):
        with run_lifecycle(experiment_id, run_name="interrupted while created", command="seqlab ensemble"):
            pytest.fail("the block ran after SIGTERM")
    [run] = MlflowClient().search_runs([experiment_id])
    assert run.info.status == "KILLED" and run.data.tags["error"] == "interrupted by SIGTERM"
    assert run.data.tags["mlflow.source.name"] == "seqlab ensemble"
    assert mlflow.active_run() is None and signal.getsignal(signal.SIGTERM) == handler
