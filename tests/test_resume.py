"""Ctrl-C in the middle of an epoch ends the run KILLED; `trainer.resume=<run_id>` finishes that same run."""

import os
import signal
import subprocess

import pytest
from mlflow.tracking import MlflowClient

from tests.conftest import default_sigint, run_seqlab, seqlab_command

pytestmark = pytest.mark.slow

EPOCHS = 5
# debug=tiny, with epochs of 34 batches: the signal arrives in the middle of one
TINY = ["debug=tiny", "dataset.max_train=300", "preprocess.max_length=60", "trainer.batch_size=8",
        f"trainer.epochs={EPOCHS}", "tracking.log_model=false"]


def test_sigint_mid_epoch_then_resume_to_the_same_epoch_count(real_data_dir, tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    command = ["train", f"data_dir={real_data_dir}", f"tracking.uri={uri}"]
    process = subprocess.Popen(seqlab_command(*command, *TINY), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True, cwd=tmp_path, env={**os.environ, "PYTHONUNBUFFERED": "1"},
                               preexec_fn=default_sigint)  # Keras' epoch lines as they come
    output = []
    try:
        for line in process.stdout:  # Keras prints "Epoch 3/5" as the third epoch begins
            output.append(line)
            if line.startswith("Epoch 3/"):
                process.send_signal(signal.SIGINT)
                break
        _, stderr = process.communicate(timeout=120)
    finally:
        process.kill()
    assert process.returncode == 130, stderr
    assert "Traceback" not in stderr and "interrupted (Ctrl-C)" in stderr
    run_id = next(line.split()[3] for line in stderr.splitlines() if line.startswith("seqlab: MLflow run "))
    client = MlflowClient(uri)
    run = client.get_run(run_id)
    assert run.info.status == "KILLED" and "interrupted" in run.data.tags["error"]
    assert sorted(m.step for m in client.get_metric_history(run_id, "loss/train")) == [0, 1]  # epoch 3 never ended

    resumed = run_seqlab(*command, f"trainer.resume={run_id}", cwd=tmp_path, timeout=600)
    assert resumed.returncode == 0, resumed.stderr
    assert f"seqlab: resuming run {run_id} after epoch 2 of {EPOCHS}" in resumed.stderr  # status: stderr
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED" and run.data.metrics["time/epochs"] == EPOCHS
    for key in ("loss/train", "accuracy/val"):
        assert sorted(m.step for m in client.get_metric_history(run_id, key)) == list(range(EPOCHS)), key
    assert run.data.params["trainer.epochs"] == str(EPOCHS) and "trainer.resume" not in run.data.params  # as started
    assert len(client.search_runs([run.info.experiment_id])) == 1
