"""A failure to record part of a run (an epoch's metrics, its checkpoint, an artifact, the restore on resume)
stops the run: it ends FAILED with an `error` tag naming what failed, never FINISHED with a hole in its record."""

import os
from pathlib import Path
from urllib.parse import urlparse
from urllib.request import url2pathname

import mlflow
import pytest
from mlflow.tracking import MlflowClient

from seqlab.errors import RecordingError
from seqlab.workflow.train import train
from tests.conftest import compose_config

pytestmark = pytest.mark.integration

TINY = ["debug=tiny", "trainer.epochs=2", "tracking.log_model=false"]  # a second epoch to fail in or resume


def tiny_config(data: Path, uri: str, *overrides: str):
    return compose_config([f"dataset.path={data}", *TINY, f"tracking.uri={uri}", *overrides])


def only_run(uri: str):
    client = MlflowClient(uri)
    [run] = client.search_runs([client.get_experiment_by_name("imdb").experiment_id])
    return run


def assert_failed(uri: str, *named: str):
    run = only_run(uri)
    assert run.info.status == "FAILED"
    error = run.data.tags["error"]
    assert error.startswith("RecordingError: Could not ") and all(text in error for text in named), error
    return run


def fail_second_epoch_metrics(monkeypatch):
    """MlflowClient.log_batch raises OSError for epoch 2's metrics (step 1), as a full disk or a dropped store."""
    original = MlflowClient.log_batch

    def log_batch(self, run_id, metrics=(), *args, **kwargs):
        if any(metric.key == "loss/train" and metric.step == 1 for metric in metrics):
            raise OSError("No space left on device")
        return original(self, run_id, metrics, *args, **kwargs)

    monkeypatch.setattr(MlflowClient, "log_batch", log_batch)


def test_failed_metric_logging_ends_the_run_failed_and_resume_completes_it(tiny_aclimdb, tracking_uri,
                                                                           monkeypatch):
    fail_second_epoch_metrics(monkeypatch)
    with pytest.raises(RecordingError, match="epoch 2's metrics"):
        train(tiny_config(tiny_aclimdb, tracking_uri))
    run = assert_failed(tracking_uri, "record epoch 2's metrics", "OSError: No space left on device",
                        "trainer.resume=")
    client = MlflowClient(tracking_uri)
    assert [m.step for m in client.get_metric_history(run.info.run_id, "loss/train")] == [0]  # training stopped there
    assert "time/epochs" not in run.data.metrics and "accuracy/test" not in run.data.metrics

    monkeypatch.undo()  # the store works again: the run continues from epoch 1's checkpoint, as the error says
    mlflow.set_tracking_uri(tracking_uri)
    another = mlflow.set_experiment("another")  # what an earlier run of this process left active (a sweep's other job)
    train(tiny_config(tiny_aclimdb, tracking_uri, f"trainer.resume={run.info.run_id}"))
    run = only_run(tracking_uri)
    assert run.info.status == "FINISHED" and "error" not in run.data.tags
    assert sorted(m.step for m in client.get_metric_history(run.info.run_id, "loss/train")) == [0, 1]
    assert "model_summary.txt" in {a.path for a in client.list_artifacts(run.info.run_id)}
    assert not [key for key in run.data.params if key.startswith("optimizer_")]  # trainer.* holds them once
    assert_still_active(another)  # the resume did not change what the process has active


def assert_still_active(experiment):
    assert os.environ["MLFLOW_EXPERIMENT_ID"] == experiment.experiment_id
    with mlflow.start_run() as run:
        assert run.info.experiment_id == experiment.experiment_id


def test_failed_checkpoint_upload_ends_the_run_failed(tiny_aclimdb, tracking_uri, monkeypatch):
    original = MlflowClient.log_artifacts

    def log_artifacts(self, run_id, local_dir, artifact_path=None):
        if artifact_path == "checkpoint":
            raise OSError("Connection reset by peer")
        return original(self, run_id, local_dir, artifact_path)

    monkeypatch.setattr(MlflowClient, "log_artifacts", log_artifacts)
    with pytest.raises(RecordingError, match="upload the epoch 1 checkpoint"):
        train(tiny_config(tiny_aclimdb, tracking_uri))
    run = assert_failed(tracking_uri, "upload the epoch 1 checkpoint", "OSError: Connection reset by peer")
    assert [m.step for m in MlflowClient(tracking_uri).get_metric_history(run.info.run_id, "loss/train")] == [0]


def fail_learning_curves(monkeypatch):
    """mlflow.log_figure raises OSError for learning_curves.png, after the last epoch and its checkpoint."""
    original = mlflow.log_figure

    def log_figure(figure, artifact_file, *args, **kwargs):
        if artifact_file == "learning_curves.png":
            raise OSError("Read-only file system")
        return original(figure, artifact_file, *args, **kwargs)

    monkeypatch.setattr(mlflow, "log_figure", log_figure)


def test_failed_artifact_logging_ends_the_run_failed_naming_the_artifact(tiny_aclimdb, tracking_uri, monkeypatch):
    fail_learning_curves(monkeypatch)
    with pytest.raises(RecordingError, match="learning_curves.png"):
        train(tiny_config(tiny_aclimdb, tracking_uri))
    assert_failed(tracking_uri, "record learning_curves.png", "OSError: Read-only file system")


def test_failed_restore_on_resume_ends_the_run_failed(tiny_aclimdb, tracking_uri, monkeypatch):
    fail_learning_curves(monkeypatch)  # a FAILED run with a checkpoint to resume from
    with pytest.raises(RecordingError):
        train(tiny_config(tiny_aclimdb, tracking_uri))
    monkeypatch.undo()
    run = only_run(tracking_uri)
    checkpoint = Path(url2pathname(urlparse(run.info.artifact_uri).path)) / "checkpoint"
    [weights] = checkpoint.glob("*.weights.h5")
    weights.write_bytes(b"not an HDF5 file")  # a damaged checkpoint: Keras' restore raises OSError

    with pytest.raises(RecordingError, match="restore the checkpoint"):
        train(tiny_config(tiny_aclimdb, tracking_uri, f"trainer.resume={run.info.run_id}"))
    assert_failed(tracking_uri, f"restore the checkpoint of run {run.info.run_id}", "OSError")


def test_an_unreadable_checkpoint_on_resume_fails_instead_of_restarting_from_epoch_zero(tiny_aclimdb, tracking_uri,
                                                                                         monkeypatch):
    fail_second_epoch_metrics(monkeypatch)
    with pytest.raises(RecordingError):
        train(tiny_config(tiny_aclimdb, tracking_uri))  # FAILED after epoch 1, its checkpoint uploaded
    monkeypatch.undo()
    run_id = only_run(tracking_uri).info.run_id

    original = mlflow.artifacts.download_artifacts

    def unreachable(*args, **kwargs):  # the checkpoint's download only (config.yaml still reads)
        if kwargs.get("artifact_path") == "checkpoint":
            raise OSError("Connection reset by peer")
        return original(*args, **kwargs)

    monkeypatch.setattr(mlflow.artifacts, "download_artifacts", unreachable)
    with pytest.raises(RecordingError, match="checkpoint of run"):
        train(tiny_config(tiny_aclimdb, tracking_uri, f"trainer.resume={run_id}"))
    assert_failed(tracking_uri, "read the checkpoint", "Connection reset by peer")
    assert [m.step for m in MlflowClient(tracking_uri).get_metric_history(run_id, "loss/train")] == [0]  # nothing redone
