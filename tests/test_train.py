"""Integration: one short training run on real reviews, its MLflow record field by field, and predict."""

import json
import os
import subprocess
import sys
from types import SimpleNamespace

import mlflow
import numpy as np
import pandas as pd
import pytest
import tensorflow as tf
from mlflow.tracking import MlflowClient

from omegaconf import OmegaConf

from seqlab.config.plan import data_part, resolve
from seqlab.training import runtime
from seqlab.workflow import train as train_module
from seqlab.schema.root import is_location_key
from seqlab.config.compose import to_flat_dict
from seqlab.data import load_dataset
from seqlab.serving.predict import load, predict_texts
from seqlab.analysis.significance import PREDICTIONS_ARTIFACT, read_predictions
from tests.conftest import compose_config, fit_with_callbacks, raising_callback, run_seqlab

# debug=tiny's run on real reviews, with two epochs, 200 test reviews, longer inputs and MLflow's system metrics
SMALL = ["debug=tiny", "dataset.max_test=200", "preprocess.max_length=100", "trainer.epochs=2",
         "tracking.system_metrics=true"]


@pytest.fixture(scope="module")
def trained(real_data_dir, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("run")
    uri = f"sqlite:///{workdir / 'mlflow.db'}"
    cfg = compose_config([f"data_dir={real_data_dir}", *SMALL, f"tracking.uri={uri}", "tracking.experiment=it"])
    composed = OmegaConf.to_yaml(cfg)
    os.environ["MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL"] = "0.5"  # a short run still gets system metrics
    try:
        returned = train_module.train(cfg)
    finally:
        del os.environ["MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL"]
    client = MlflowClient(uri)
    [run] = client.search_runs([client.get_experiment_by_name("it").experiment_id])
    return SimpleNamespace(cfg=cfg, composed=composed, returned=returned, uri=uri, run=run, client=client,
                           workdir=workdir)


@pytest.mark.slow
def test_train_leaves_the_callers_config_as_it_was(trained):
    """What the run decided (buckets, padding, threads, experiment) is in its plan and its record, not in `cfg`."""
    assert OmegaConf.to_yaml(trained.cfg) == trained.composed
    assert trained.cfg.trainer.bucketing is None and trained.cfg.preprocess.padding == "pre"


@pytest.mark.slow
def test_run_finished_with_flattened_params_and_tags(trained):
    run = trained.run
    assert run.info.status == "FINISHED"
    params = {k: v for k, v in run.data.params.items() if not k.startswith("derived.")}
    # what the run decided for the keys left null, logged as what ran
    decided = {"trainer.bucketing": "True", "preprocess.padding": "post",  # the LSTM's buckets need post padding
               "trainer.deterministic": "True",  # on CPU
               "trainer.weight_decay": "0.0",  # Adam's default: none
               "trainer.intra_op_threads": str(tf.config.threading.get_intra_op_parallelism_threads())}  # in force
    assert {key: params.get(key) for key in decided} == decided
    # every other key as composed; no nulls, no where-things-are keys, nothing else
    composed = {k: str(v) for k, v in to_flat_dict(trained.cfg).items()
                if v is not None and not is_location_key(k) and k not in decided}
    assert {k: v for k, v in params.items() if k not in decided} == composed
    assert run.data.params["model.name"] == "lstm" and run.data.params["trainer.epochs"] == "2"
    tags = run.data.tags
    assert tags["dataset"] == "imdb" and tags["model"] == "lstm"
    assert tags["seqlab_version"] and tags["mlflow.source.name"] == "seqlab train"
    # the commit of seqlab's own checkout (MLflow would name pytest's); none where seqlab is no git checkout
    commit = git("rev-parse", "HEAD")
    assert tags.get("mlflow.source.git.commit") == commit and (commit is None or len(commit) == 40)
    if commit:
        assert tags.get("git_dirty") == ("true" if git("status", "--porcelain", "--untracked-files=no") else None)


def git(*args: str) -> str | None:
    """git's answer in the folder of the seqlab package, or None outside a git checkout."""
    import seqlab

    done = subprocess.run(["git", *args], cwd=os.path.dirname(seqlab.__file__), capture_output=True, text=True)
    return (done.stdout.strip() or None) if done.returncode == 0 else None


@pytest.mark.slow
def test_lineage_description_and_system_metrics(trained):
    """The UI's Dataset column (one input per split, digests of the examples read), the run's description, and
    MLflow's system metrics."""
    run = trained.run
    data = load_dataset(data_part(trained.cfg))
    inputs = {i.tags[0].value: i.dataset for i in run.inputs.dataset_inputs if i.tags}
    assert set(inputs) == {"train", "validation", "test"}
    for context, split in (("train", data.train), ("validation", data.validation), ("test", data.test)):
        assert inputs[context].name == "imdb" and json.loads(inputs[context].profile)["num_rows"] == len(split)
        assert json.loads(inputs[context].schema)["mlflow_colspec"][0]["name"] == "text"
    assert len({dataset.digest for dataset in inputs.values()}) == 3  # three different sets of examples
    assert run.data.tags["mlflow.note.content"].startswith("**lstm** on **imdb**, seed 42: `seqlab train")
    assert any(key.startswith("system/cpu_utilization") for key in run.data.metrics)
    # the first metric a run logs is what the UI's compare page plots by default
    assert list(run.data.metrics)[0] == "accuracy/val"


@pytest.mark.slow
def test_per_epoch_and_test_metrics(trained):
    client, run_id = trained.client, trained.run.info.run_id
    for key in ("loss/train", "accuracy/train", "loss/val", "accuracy/val", "time/epoch_seconds"):
        history = client.get_metric_history(run_id, key)
        assert sorted(m.step for m in history) == [0, 1], key
    metrics = trained.run.data.metrics
    for key in ("loss/test", "accuracy/test", "f1_macro/test", "roc_auc/test", "time/train_seconds"):
        assert np.isfinite(metrics[key]), key
    assert 0 <= metrics["accuracy/test"] <= 1 and 0 <= metrics["roc_auc/test"] <= 1
    assert trained.returned == metrics["accuracy/test"]
    assert metrics["time/train_seconds"] >= sum(m.value for m in client.get_metric_history(run_id, "time/epoch_seconds")) * 0.9


@pytest.mark.slow
def test_artifacts(trained):
    names = {a.path for a in trained.client.list_artifacts(trained.run.info.run_id)}
    assert {"config.yaml", "model_summary.txt", "classification_report.txt", "confusion_matrix.png",
            "learning_curves.png"} <= names
    local = mlflow.artifacts.download_artifacts(run_id=trained.run.info.run_id, artifact_path="config.yaml",
                                                tracking_uri=trained.uri)
    assert "max_length: 100" in open(local).read()
    summary = open(mlflow.artifacts.download_artifacts(run_id=trained.run.info.run_id,
                                                       artifact_path="model_summary.txt", tracking_uri=trained.uri)).read()
    assert "lstm" in summary.lower() and "embedding" in summary.lower()
    # artifacts live beside the SQLite store, not in ./mlruns of the current directory
    assert (trained.workdir / "mlartifacts").is_dir()


@pytest.mark.slow
def test_test_predictions_are_logged_one_row_per_test_example(trained):
    """predictions/test.csv, what `seqlab compare --baseline` pairs runs on: the test split's ids and labels, each
    class's probability, and predictions whose accuracy is the logged one."""
    path = mlflow.artifacts.download_artifacts(run_id=trained.run.info.run_id, artifact_path=PREDICTIONS_ARTIFACT,
                                               tracking_uri=trained.uri)
    table = read_predictions(path)
    test = load_dataset(data_part(trained.cfg)).test  # the same seeded test sample
    assert len(table) == len(test) == 200 and table["id"].tolist() == test.ids
    assert table["label"].tolist() == [["neg", "pos"][label] for label in test.labels]
    assert np.allclose(table[["probability_neg", "probability_pos"]].sum(axis=1), 1, atol=1e-6)
    accuracy = (table["label"] == table["predicted"]).mean()
    assert accuracy == pytest.approx(trained.run.data.metrics["accuracy/test"], abs=1e-9)


@pytest.mark.slow
def test_logged_model_takes_raw_text_and_reproduces_test_accuracy(trained):
    mlflow.set_tracking_uri(trained.uri)
    model = load(f"runs:/{trained.run.info.run_id}/model")
    class_names = model.metadata.metadata["class_names"]
    assert class_names == ["neg", "pos"]
    data = load_dataset(data_part(trained.cfg))  # the same seeded test sample
    predictions = predict_texts(model, data.test.texts)
    accuracy = np.mean(predictions["label"].map(class_names.index).to_numpy() == data.test.labels)
    assert accuracy == pytest.approx(trained.run.data.metrics["accuracy/test"], abs=1e-9)


@pytest.mark.slow
def test_predict_cli_text_and_file(trained, tmp_path):
    # without the variable importing seqlab sets in this process: seqlab itself keeps MLflow's download bars off
    env = {"MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": None, "MLFLOW_TRACKING_URI": None}
    uri = f"runs:/{trained.run.info.run_id}/model"
    out = tmp_path / "out.csv"
    texts = ["A wonderful, moving film.", "Awful and boring.", "It was fine."]
    result = run_seqlab("predict", uri, *sum([["--text", t] for t in texts], []), "--output", out, "--tracking-uri",
                        trained.uri, env=env)
    assert result.returncode == 0, result.stderr
    assert "Downloading artifacts" not in result.stderr, result.stderr
    assert f"seqlab: wrote 3 predictions to {out}" in result.stderr and "seqlab:" not in result.stdout  # status
    assert result.stdout == ""  # the predictions went to the file: nothing to scroll past
    frame = pd.read_csv(out)
    assert len(frame) == 3 and list(frame.columns) == ["label", "probability", "probability_neg", "probability_pos"]
    assert set(frame["label"]) <= {"neg", "pos"} and ((frame["probability"] >= 0.5) & (frame["probability"] <= 1)).all()
    direct = predict_texts(load(uri), texts)
    assert frame["label"].tolist() == direct["label"].tolist()  # input order kept

    jsonl = tmp_path / "in.jsonl"
    jsonl.write_text("\n".join(json.dumps({"id": f"r{i}", "text": t}) for i, t in enumerate(texts)))
    env["MLFLOW_TRACKING_URI"] = trained.uri  # the store, named the other way
    result = run_seqlab("predict", uri, "--input", jsonl, "--output", out, "--overwrite", env=env)
    assert result.returncode == 0, result.stderr
    frame = pd.read_csv(out)
    assert frame["id"].tolist() == ["r0", "r1", "r2"] and frame["label"].tolist() == direct["label"].tolist()


@pytest.mark.slow
def test_train_from_the_command_line_prints_no_tensorflow_error_lines(real_data_dir, tmp_path):
    """No TensorFlow "E0000 ... use_unbounded_threadpool" line on stderr: Keras' tf.data path for string arrays
    logs it when op determinism and one thread per op are on, as they are when `seqlab train` logs the model."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    trained = run_seqlab("train", f"data_dir={real_data_dir}", "debug=tiny", f"tracking.uri={uri}",
                         f"hydra.run.dir={tmp_path / 'outputs'}", cwd=tmp_path)
    assert trained.returncode == 0, trained.stderr
    assert "seqlab: test loss" in trained.stderr and "seqlab:" not in trained.stdout  # status on stderr
    assert "E0000" not in trained.stderr and "node_def_util" not in trained.stderr, trained.stderr


@pytest.mark.integration
@pytest.mark.parametrize("raised, status", [(RuntimeError("disk on fire"), "FAILED"), (KeyboardInterrupt(), "KILLED")])
def test_a_run_that_raises_never_stays_running(tiny_aclimdb, tmp_path, monkeypatch, raised, status):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    cfg = compose_config([f"dataset.path={tiny_aclimdb}", "debug=tiny", f"tracking.uri={uri}"])
    fit_with_callbacks(monkeypatch, raising_callback(raised))  # as fitting starts
    with pytest.raises(type(raised)):
        train_module.train(cfg)
    client = MlflowClient(uri)
    [run] = client.search_runs([client.get_experiment_by_name("imdb").experiment_id])
    assert run.info.status == status
    assert type(raised).__name__ in run.data.tags["error"] or "interrupted" in run.data.tags["error"]


@pytest.mark.unit
def test_expected_retracing_warnings_are_filtered(caplog):
    """A sweep builds a new model per job in one process: TensorFlow's retracing warning is noise there."""
    runtime.setup_runtime(resolve(compose_config([])).runtime)
    with caplog.at_level("WARNING", logger="tensorflow"):
        for value in range(8):  # a new tf.function each time, as a new model's step is
            tf.function(lambda x: x + 1)(tf.constant(value))
        tf.get_logger().warning("another warning")
    messages = [record.getMessage() for record in caplog.records]
    assert "another warning" in messages
    assert not any("retracing" in message for message in messages)
    tf.get_logger().removeFilter(runtime.expected_retracing)
    with caplog.at_level("WARNING", logger="tensorflow"):
        for value in range(8):
            tf.function(lambda x: x + 1)(tf.constant(value))
    assert any("retracing" in record.getMessage() for record in caplog.records)  # the filter is what hid it


@pytest.mark.slow
def test_intra_op_threads_one_for_recurrent_models_on_cpu_and_what_ran_is_logged():
    """Run in a fresh process, as TensorFlow's thread pools are fixed once it starts: null gives one thread per op
    for the LSTM and TensorFlow's default (0) for fastText, an explicit value wins, and a value that can no longer
    take effect is reported and replaced by the one in force."""
    script = """
import tensorflow as tf
from seqlab.config.plan import resolve
from seqlab.training.runtime import set_intra_op_threads
from tests.conftest import compose_config
for model, override in (("fasttext_bigram", []), ("lstm", []), ("lstm", ["trainer.intra_op_threads=2"])):
    runtime = resolve(compose_config([f"model={model}", *override])).runtime
    threads = set_intra_op_threads(runtime.intra_op_threads, runtime.threads_asked)
    print(model, threads, tf.config.threading.get_intra_op_parallelism_threads())
tf.constant(1.0) + 1  # TensorFlow starts
runtime = resolve(compose_config(["trainer.intra_op_threads=1"])).runtime
print("started", set_intra_op_threads(runtime.intra_op_threads, runtime.threads_asked),
      tf.config.threading.get_intra_op_parallelism_threads())
"""
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "TF_CPP_MIN_LOG_LEVEL": "2"}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300, env=env,
                          cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["fasttext_bigram 0 0", "lstm 1 1", "lstm 2 2", "started 2 2"]
    assert "trainer.intra_op_threads=1 cannot take effect" in done.stderr and "this run uses 2" in done.stderr
