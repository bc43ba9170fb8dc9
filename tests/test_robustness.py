"""Bad config on the command line, runs that always end, secrets kept out of MLflow, safe model loading, and
the same seed giving the same metrics."""

import dataclasses
import os
import signal
import time

import keras
import mlflow
import pytest
from mlflow.tracking import MlflowClient
from omegaconf import OmegaConf


from seqlab.config.plan import resolve
from seqlab.record.naming import log_identity
from seqlab.workflow import train as train_module
from seqlab.errors import ConfigError, SeqlabError, Terminated
from seqlab.serving.predict import load
from tests.conftest import compose_config, fit_with_callbacks, raising_callback, run_seqlab


@pytest.mark.slow
@pytest.mark.parametrize("override, expected", [
    ("model=nope", ["model", "nope", "lstm"]),  # unknown group option: lists the options
    ("model.dropuot=0.2", ["model.dropuot", "dropout"]),  # unknown key: lists the keys
    ("+model.dropuot=0.2", ["model.dropuot", "dropout"]),
    # a key another model has: the chosen model's own keys are listed
    ("model.filters=8", ["model.filters", "embedding_dim, units, layers, dropout, recurrent_dropout, embedding_dropout"]),
    ("+model.filters=8", ["model.filters", "model=lstm", "embedding_dropout"]),
    ("preprocess.max_units=8", ["preprocess.max_units", "max_length"]),  # words, not units x words
    ("trainer.epochs=three", ["trainer.epochs", "three", "Integer"]),  # wrong type
    ("trainer.deterministic=maybe", ["trainer.deterministic", "maybe", "bool"]),
    ("trainer.epochs=-2", ["trainer.epochs", "-2", "[1, inf)"]),  # out of range
    ("trainer.intra_op_threads=-1", ["trainer.intra_op_threads", "-1", "[0, 1024]"]),
    ("model.dropout=1.0", ["model.dropout", "1.0", "[0, 1)"]),
    ("preprocess.padding=middle", ["preprocess.padding", "middle", "'pre', 'post'"]),
    ("preprocess.vocab_size=1", ["preprocess.vocab_size", "[3, inf)"]),
    ("trainer.epochs=[", ["trainer.epochs=[", "key=value"]),  # not an override at all
    ("model.metadata=true", ["model.metadata", "imdb", "metadata columns"]),  # incompatible with the dataset
])
def test_bad_config_exits_2_with_one_paragraph_and_starts_nothing(tmp_path, override, expected):
    result = run_seqlab("train", override, f"tracking.uri=sqlite:///{tmp_path / 'mlflow.db'}", cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr and result.stderr.startswith("seqlab: error: ")
    assert len(result.stderr.strip().splitlines()) == 1
    for text in expected:
        assert text in result.stderr
    assert not (tmp_path / "mlflow.db").exists() and not (tmp_path / "mlruns").exists()
    assert not (tmp_path / "outputs").exists()  # refused before Hydra creates the run's folder


@pytest.mark.slow
def test_cfg_help_and_multirun_still_reach_hydra(tmp_path):
    assert "units: 5" in run_seqlab("train", "--cfg", "job", "model.units=5", cwd=tmp_path).stdout
    help_text = run_seqlab("train", "--help", cwd=tmp_path).stdout
    assert "== Config groups" in help_text
    assert "SPEC.md" not in help_text and "README.md" in help_text  # points only at what ships
    result = run_seqlab("train", "--multirun", "trainer.epochs=1,-1", f"tracking.uri=sqlite:///{tmp_path / 'm.db'}",
                        "dataset.max_train=0", cwd=tmp_path)  # every job has a bad value: each fails before any work
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "job 0: error: Config key 'dataset.max_train'" in result.stderr


@pytest.mark.slow
def test_tracking_uri_credentials_never_printed(tmp_path):
    result = run_seqlab("train", "tracking.uri=http://alice:hunter2@127.0.0.1:9", cwd=tmp_path)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "hunter2" not in result.stderr + result.stdout and "<redacted>@127.0.0.1:9" in result.stderr
    assert "MLFLOW_TRACKING_PASSWORD" in result.stderr  # says where credentials belong


@pytest.mark.slow
def test_a_store_without_its_driver_is_a_config_error_that_keeps_the_password(tmp_path):
    # MySQL: its drivers are not installed (psycopg2 is, for make server DB=postgres)
    result = run_seqlab("train", "tracking.uri=mysql://alice:hunter2@127.0.0.1/db", "dataset.download=false",
                        cwd=tmp_path, env={"SEQLAB_DATA_DIR": str(tmp_path)})  # no data to read while the store fails
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "hunter2" not in result.stderr + result.stdout and "tracking.uri" in result.stderr


@pytest.mark.unit
def test_sweep_log_lines_lose_uri_credentials():
    import logging

    from seqlab.search.sweep import redact_credentials

    record = logging.LogRecord("hydra", logging.INFO, __file__, 1, "\t#%d : %s", (0, "tracking.uri=http://a:pw@h:5000"),
                               None)
    assert redact_credentials(record) and record.getMessage() == "\t#0 : tracking.uri=http://<redacted>@h:5000"


@pytest.mark.unit
def test_secret_looking_keys_and_uri_credentials_are_redacted_in_params_and_config(tmp_path):
    cfg = compose_config(["tracking.uri=http://alice:hunter2@tracking.example:5000"])
    cfg = OmegaConf.create({**OmegaConf.to_container(cfg),  # keys a later schema or a plugin may add
                            "extra": {"api_token": "tok-123", "db_password": "pw-456", "max_tokens": 7}})
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    record = dataclasses.replace(resolve(compose_config([])).record, config=cfg)
    with mlflow.start_run() as run:
        log_identity(record)
    client = MlflowClient()
    params = client.get_run(run.info.run_id).data.params
    config_text = mlflow.artifacts.load_text(f"{run.info.artifact_uri}/config.yaml")
    for logged in (str(params), config_text):
        assert "hunter2" not in logged and "tok-123" not in logged and "pw-456" not in logged
    assert "tracking.uri" not in params  # where the store is: not a param (config.yaml keeps it, redacted)
    assert "uri: http://<redacted>@tracking.example:5000" in config_text
    assert params["extra.api_token"] == params["extra.db_password"] == "<redacted>"
    assert params["extra.max_tokens"] == "7" and params["model.name"] == "lstm"  # the rest as it was


@pytest.mark.unit
def test_models_load_in_safe_mode(tmp_path):
    """A logged model whose file holds Python code (a lambda) is refused instead of run: here one logged with the
    Keras flavor, as earlier seqlab versions did (tests/test_serving.py: seqlab's pyfunc models)."""
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    inputs = keras.Input(shape=(3,))
    model = keras.Model(inputs, keras.layers.Dense(1)(keras.layers.Lambda(lambda x: x * 2)(inputs)))
    with mlflow.start_run() as run:
        mlflow.keras.log_model(model, name="model", pip_requirements=["keras"])
    with pytest.raises(SeqlabError, match="safe_mode"):
        load(f"runs:/{run.info.run_id}/model")


@pytest.fixture
def tiny_cfg(tiny_aclimdb, tmp_path):
    """debug=tiny runs on a tiny aclImdb folder, into one store (the one the test's MlflowClient() reads)."""
    def make(*overrides):
        return compose_config([f"dataset.path={tiny_aclimdb}", "debug=tiny", "tracking.log_model=false",
                               f"tracking.uri=sqlite:///{tmp_path / 'mlflow.db'}", *overrides])

    return make


def snapshot(client, run_id):
    run = client.get_run(run_id)
    artifacts = sorted(a.path for a in client.list_artifacts(run_id))
    history = {key: [(m.step, m.value) for m in client.get_metric_history(run_id, key)] for key in run.data.metrics}
    return run.info.status, run.info.end_time, run.data.params, run.data.tags, history, artifacts


@pytest.mark.integration
def test_other_runs_never_modify_a_stored_run(tiny_cfg, monkeypatch):
    train_module.train(tiny_cfg("trainer.epochs=1"))
    client = MlflowClient()
    [finished] = client.search_runs([client.get_experiment_by_name("imdb").experiment_id])
    before = snapshot(client, finished.info.run_id)

    monkeypatch.setenv("MLFLOW_RUN_ID", finished.info.run_id)  # MLflow would log a new run into this one
    with pytest.raises(ConfigError, match="MLFLOW_RUN_ID"):
        train_module.train(tiny_cfg("trainer.epochs=1"))
    monkeypatch.delenv("MLFLOW_RUN_ID")
    with pytest.raises(ConfigError, match="already FINISHED"):
        train_module.train(tiny_cfg(f"trainer.resume={finished.info.run_id}"))

    fit_with_callbacks(monkeypatch, raising_callback(RuntimeError("disk full"), "on_train_end"))  # once trained
    with pytest.raises(RuntimeError):
        train_module.train(tiny_cfg("trainer.epochs=1"))
    runs = client.search_runs([finished.info.experiment_id])
    assert sorted(run.info.status for run in runs) == ["FAILED", "FINISHED"]
    assert snapshot(client, finished.info.run_id) == before


@pytest.mark.integration
def test_ctrl_c_that_tensorflow_swallows_still_ends_the_run_killed(tiny_cfg, monkeypatch):
    """TensorFlow's C++ fast path drops exceptions raised in the Python it calls back (a Ctrl-C at the start of
    an epoch was lost that way and the run went on to FINISHED); the trainer raises it again at the next batch."""
    handler_before = signal.getsignal(signal.SIGINT)

    class SwallowedCtrlCAtSecondEpoch(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            if epoch == 1:
                try:
                    os.kill(os.getpid(), signal.SIGINT)
                    time.sleep(0.5)  # the handler runs here, in this thread
                except KeyboardInterrupt:
                    pass  # what TFE_Py_FastPathExecute does with it

    fit_with_callbacks(monkeypatch, SwallowedCtrlCAtSecondEpoch())
    with pytest.raises(KeyboardInterrupt):
        train_module.train(tiny_cfg("trainer.epochs=3"))
    assert signal.getsignal(signal.SIGINT) == handler_before
    client = MlflowClient()
    [run] = client.search_runs([client.get_experiment_by_name("imdb").experiment_id])
    assert run.info.status == "KILLED" and "Ctrl-C" in run.data.tags["error"]
    assert [m.step for m in client.get_metric_history(run.info.run_id, "loss/val")] == [0]  # epoch 2 not logged


@pytest.mark.integration
def test_ctrl_c_that_tensorflow_swallows_during_predict_stops_it(tiny_logged_model, monkeypatch, capsys):
    """No predictions are printed after a Ctrl-C, even one that TensorFlow dropped while predicting."""
    from seqlab.cli import predict as predict_command
    from seqlab.serving import predict

    model_and_store = [tiny_logged_model.model_uri, "--tracking-uri", tiny_logged_model.uri]
    real_predict_texts = predict.predict_texts

    def predict_texts_with_swallowed_ctrl_c(*args, **kwargs):
        try:
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.5)  # the handler runs here
        except KeyboardInterrupt:
            pass  # what TensorFlow's C++ fast path does with it
        return real_predict_texts(*args, **kwargs)

    monkeypatch.setattr(predict_command, "predict_texts", predict_texts_with_swallowed_ctrl_c)
    capsys.readouterr()
    with pytest.raises(KeyboardInterrupt):
        predict_command.main([*model_and_store, "--text", "a fine film", "--text", "dull"])
    assert "a fine film" not in capsys.readouterr().out
    monkeypatch.setattr(predict_command, "predict_texts", real_predict_texts)
    assert predict_command.main([*model_and_store, "--text", "a fine film"]) == 0  # no stale interrupt


@pytest.mark.integration
def test_sigterm_ends_the_run_killed_and_resume_continues_it(tiny_cfg, monkeypatch):
    """A real SIGTERM at the start of the second epoch; then trainer.resume finishes the same run."""
    class SigtermAtSecondEpoch(keras.callbacks.Callback):
        sent = False  # once: the resumed run starts at the second epoch too

        def on_epoch_begin(self, epoch, logs=None):
            if epoch == 1 and not self.sent:
                SigtermAtSecondEpoch.sent = True
                os.kill(os.getpid(), signal.SIGTERM)

    fit_with_callbacks(monkeypatch, SigtermAtSecondEpoch())
    with pytest.raises(Terminated):
        train_module.train(tiny_cfg("trainer.epochs=3"))
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL  # the handler is the run's only
    client = MlflowClient()
    [run] = client.search_runs([client.get_experiment_by_name("imdb").experiment_id])
    run_id = run.info.run_id
    assert run.info.status == "KILLED" and "SIGTERM" in run.data.tags["error"]
    assert [m.step for m in client.get_metric_history(run_id, "loss/val")] == [0]
    assert {a.path for a in client.list_artifacts(run_id, "checkpoint")} >= {"checkpoint/training_metadata.json"}

    train_module.train(tiny_cfg(f"trainer.resume={run_id}"))
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED" and "error" not in run.data.tags
    assert run.data.tags["resumed_after_epoch"] == "1" and run.data.metrics["time/epochs"] == 3
    for key in ("loss/train", "accuracy/train", "loss/val", "accuracy/val", "time/epoch_seconds"):
        assert sorted(m.step for m in client.get_metric_history(run_id, key)) == [0, 1, 2], key
    assert "accuracy/test" in run.data.metrics
    assert not client.list_artifacts(run_id, "checkpoint")  # finished: nothing left to resume
    assert len(client.search_runs([run.info.experiment_id])) == 1  # the same run, no new one


@pytest.mark.integration
def test_resume_refuses_changed_data(tiny_cfg, monkeypatch):
    fit_with_callbacks(monkeypatch, raising_callback(KeyboardInterrupt()))  # Ctrl-C as fitting starts
    with pytest.raises(KeyboardInterrupt):
        train_module.train(tiny_cfg("trainer.epochs=2"))
    client = MlflowClient()
    [run] = client.search_runs([client.get_experiment_by_name("imdb").experiment_id])
    assert run.info.status == "KILLED"
    client.set_tag(run.info.run_id, "data_fingerprint", "0" * 16)  # as if the files had changed since
    with pytest.raises(SeqlabError, match="encoded data differ"):
        train_module.train(tiny_cfg(f"trainer.resume={run.info.run_id}"))
    assert client.get_run(run.info.run_id).info.status == "KILLED"


@pytest.mark.slow
def test_resume_of_an_unknown_run_is_a_config_error(tmp_path):
    result = run_seqlab("train", "trainer.resume=0123456789abcdef", f"tracking.uri=sqlite:///{tmp_path / 'mlflow.db'}",
                        cwd=tmp_path)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "trainer.resume" in result.stderr and "0123456789abcdef" in result.stderr and "no run" in result.stderr


@pytest.mark.integration
def test_same_seed_same_metrics_per_epoch(tiny_cfg):
    def epoch_metrics(*overrides):
        train_module.train(tiny_cfg("trainer.epochs=2", *overrides))
        client = MlflowClient()
        run = client.search_runs([client.get_experiment_by_name("imdb").experiment_id], max_results=1,
                                 order_by=["attributes.start_time DESC"])[0]
        return {key: [m.value for m in sorted(client.get_metric_history(run.info.run_id, key), key=lambda m: m.step)]
                for key in ("loss/train", "accuracy/train", "loss/val", "accuracy/val", "loss/test")}

    first, second = epoch_metrics("trainer.seed=7"), epoch_metrics("trainer.seed=7")
    assert first == second and len(first["loss/train"]) == 2
    assert epoch_metrics("trainer.seed=8")["loss/train"] != first["loss/train"]  # the seed does matter
