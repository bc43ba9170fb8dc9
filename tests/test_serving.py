"""Logged models as MLflow clients use them: pyfunc models that a fresh Python process importing only MLflow and
pandas loads and predicts with, `mlflow models serve`, the signature and description, the final epoch's metrics
linked to the logged model, and models logged by earlier seqlab versions (Keras flavor only)."""

import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from types import SimpleNamespace

import keras
import mlflow
import numpy as np
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from seqlab.serving import predict
from seqlab.serving import pyfunc as serving
from seqlab.cli.ensemble import main as ensemble_main
from seqlab.workflow import train as train_module
from seqlab.data import load_dataset
from seqlab.data.texts import thread_text
from seqlab.errors import SeqlabError
from seqlab.models.catalog import build_model
from seqlab.features.preprocess import InputSpec, WordPreprocessor
from seqlab.config.plan import data_part
from tests.conftest import compose_config, stop_process_group, tiny_model

# Each a debug=tiny run (200 training examples, 100 test ones, tiny layers) on real data:
# (a) flat on IMDB, two epochs so that the final epoch is not the first; (b) hierarchical on 10 DailyDialog topics
# (names with spaces and '&') read with speaker words; (c) numeric metadata on PersuasionForGood.
MODELS = {
    "flat": ["debug=tiny", "model=fasttext_bigram", "preprocess.max_length=50", "trainer.epochs=2"],
    # (d) subword units learned in training, split inside the logged model, read by a Transformer
    "subword": ["debug=tiny", "preprocess=subword", "preprocess.max_length=60", "preprocess.vocab_size=300",
                "model=transformer", "trainer.schedule=warmup_cosine"],
    "hierarchical": ["debug=tiny", "dataset=dailydialog", "model=hier_conv", "preprocess.max_units=6",
                     "preprocess.max_unit_length=12", "preprocess.speaker_tokens=true"],
    "metadata": ["debug=tiny", "dataset=persuasion", "model=fasttext_bigram", "model.metadata=true",
                 "preprocess.max_length=60"],
}
# What a batch-scoring job or a registry consumer runs: MLflow and pandas, no seqlab import.
FRESH_PROCESS = """
import sys

import mlflow
import pandas as pd

assert "seqlab" not in sys.modules and "keras" not in sys.modules
models = {}
for model_uri, source, target in pd.read_pickle(sys.argv[1]):
    if model_uri not in models:
        models[model_uri] = mlflow.pyfunc.load_model(model_uri)
    models[model_uri].predict(pd.read_pickle(source)).to_pickle(target)
"""


def raw_threads(cfg, ids: list[str]) -> list:
    """The messages ({speaker, text, ...} records) of the threads `ids`, as the dataset's file holds them."""
    from seqlab.data.threads import find_file

    path = find_file(cfg.dataset.name, cfg.dataset.path, cfg.data_dir)
    return pd.read_json(path, lines=True).set_index("thread_id").loc[ids, "messages"].tolist()


@pytest.fixture(scope="module")
def logged(real_data_dir, tmp_path_factory):
    """The three tiny models trained once, each in its own experiment of one store, with their test inputs."""
    if not (real_data_dir / "threads" / "persuasionforgood_donation.jsonl.gz").exists():
        pytest.skip(f"thread data not found under {real_data_dir / 'threads'}")
    workdir = tmp_path_factory.mktemp("serving")
    uri = f"sqlite:///{workdir / 'mlflow.db'}"
    client = MlflowClient(uri)
    models = {}
    for name, overrides in MODELS.items():
        cfg = compose_config([f"data_dir={real_data_dir}", *overrides, "trainer.checkpoint=false",
                              f"tracking.uri={uri}", f"tracking.experiment=serving-{name}"])
        train_module.train(cfg)
        [run] = client.search_runs([client.get_experiment_by_name(f"serving-{name}").experiment_id])
        data = load_dataset(data_part(cfg))  # the same seeded test sample the run was tested on
        inputs = pd.DataFrame({"text": data.test.texts})
        if data.metadata_names and cfg.model.metadata:
            inputs = inputs.join(pd.DataFrame(data.test.metadata.astype(np.float64), columns=data.metadata_names))
        models[name] = SimpleNamespace(cfg=cfg, run=run, data=data, inputs=inputs,
                                       uri=f"runs:/{run.info.run_id}/model")
    # (e) the mean of the two IMDB models (each its own preprocessing), evaluated and logged by `seqlab ensemble`
    members = [models["flat"].uri, models["subword"].uri]
    assert ensemble_main([*members, "--tracking-uri", uri, "--experiment", "serving-ensemble",
                          "--data-dir", str(real_data_dir)]) == 0
    [run] = client.search_runs([client.get_experiment_by_name("serving-ensemble").experiment_id])
    ensemble = SimpleNamespace(run=run, members=members, uri=f"runs:/{run.info.run_id}/model", data=models["flat"].data,
                               inputs=models["flat"].inputs)
    return SimpleNamespace(uri=uri, client=client, workdir=workdir, models=models, ensemble=ensemble)


@pytest.fixture(scope="module")
def fresh_predictions(logged, server):
    """Each model's predictions from one fresh process: its test texts, and for the thread model the same threads
    given as a `messages` column of {speaker, text} records (the JSON a CSV holds, for every other row)."""
    hierarchical = logged.models["hierarchical"]
    messages = raw_threads(hierarchical.cfg, hierarchical.data.test.ids)
    threads = pd.DataFrame({"messages": [json.dumps(m) if i % 2 else m for i, m in enumerate(messages)]})
    inputs = {name: (model.uri, model.inputs) for name, model in logged.models.items()}
    inputs["threads"] = (hierarchical.uri, threads)
    inputs["ensemble"] = (logged.ensemble.uri, logged.ensemble.inputs)
    jobs, targets = [], {}
    for name, (model_uri, frame) in inputs.items():
        source, targets[name] = logged.workdir / f"{name}.in.pkl", logged.workdir / f"{name}.out.pkl"
        frame.to_pickle(source)
        jobs.append((model_uri, str(source), str(targets[name])))
    pd.to_pickle(jobs, logged.workdir / "jobs.pkl")
    environment = {**os.environ, "MLFLOW_TRACKING_URI": logged.uri}
    done = subprocess.run([sys.executable, "-c", FRESH_PROCESS, str(logged.workdir / "jobs.pkl")],
                          capture_output=True, text=True, env=environment, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return {name: pd.read_pickle(target) for name, target in targets.items()}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def post(url: str, body: dict) -> tuple[int, dict]:
    request = urllib.request.Request(url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.load(response)
    except urllib.error.HTTPError as error:
        return error.code, json.load(error)


@pytest.fixture(scope="module")
def server(logged):
    """`mlflow models serve` of the flat model, from this environment; `wait_until_up()` gives its URL. Started
    before the fresh process runs, so that the two start-ups (Python, TensorFlow, the model) overlap."""
    bin_dir = Path(sys.executable).parent  # mlflow, and uvicorn, which it starts by name
    environment = {**os.environ, "MLFLOW_TRACKING_URI": logged.uri,
                   "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}
    url, log_path = f"http://127.0.0.1:{free_port()}", logged.workdir / "serve.log"
    with open(log_path, "w") as log:
        process = subprocess.Popen([str(bin_dir / "mlflow"), "models", "serve", "-m", logged.models["flat"].uri,
                                    "--env-manager", "local", "--host", "127.0.0.1", "--port", url.rsplit(":", 1)[1]],
                                   stdout=log, stderr=subprocess.STDOUT, env=environment,
                                   start_new_session=True)  # its own process group: uvicorn ends with it

    def wait_until_up(seconds: float = 240) -> str:
        deadline = time.monotonic() + seconds
        while True:
            assert process.poll() is None, f"mlflow models serve ended: {log_path.read_text()[-3000:]}"
            try:
                with urllib.request.urlopen(f"{url}/ping", timeout=5) as response:
                    if response.status == 200:
                        return url
            except OSError:  # not listening yet
                pass
            assert time.monotonic() < deadline, f"no answer to /ping: {log_path.read_text()[-3000:]}"
            time.sleep(0.5)

    try:
        yield SimpleNamespace(wait_until_up=wait_until_up)
    finally:
        stop_process_group(process)


# --- fast: a tiny untrained network, logged as seqlab logs it -----------------------------------------

TEXTS = ["a wonderful film with great acting", "a terrible film with awful acting", "loved it", "hated it"]


def end_to_end_model(num_classes: int = 2) -> keras.Model:
    cfg = compose_config([*tiny_model("fasttext_bigram"), "preprocess.vocab_size=40", "preprocess.max_length=8"])
    preprocessor = WordPreprocessor(cfg.preprocess).fit(TEXTS)
    network = build_model(cfg.model, InputSpec(vocab_size=40, sequence_shape=(8,), num_classes=num_classes,
                                               mask_zero=preprocessor.mask_zero))
    text = keras.Input(shape=(), dtype="string", name="text")
    return keras.Model(text, network(preprocessor.apply(text)))


@pytest.mark.unit
def test_a_keras_flavor_model_of_an_earlier_seqlab_predicts_as_the_pyfunc_model_does(tmp_path):
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    model = end_to_end_model(num_classes=3)
    model.save(tmp_path / "model.keras")
    folder = serving.write_model_data(tmp_path / serving.DATA_FOLDER, serving.TextClassifier(["a", "b", "c"]), model)
    with mlflow.start_run():
        legacy = mlflow.keras.log_model(model, name="model", pip_requirements=["keras"],
                                        metadata={"class_names": ["a", "b", "c"], "metadata_columns": []})
        current = mlflow.pyfunc.log_model(name="model_now", loader_module=serving.LOADER_MODULE,
                                          data_path=str(folder), pip_requirements=["keras"])
    old, new = predict.load(legacy.model_uri), predict.load(current.model_uri)
    assert isinstance(old, predict.KerasFlavorModel) and isinstance(new, mlflow.pyfunc.PyFuncModel)
    assert isinstance(new.get_raw_model(), keras.Model)
    logged = Path(mlflow.artifacts.download_artifacts(current.model_uri))
    assert sorted(p.relative_to(logged).as_posix() for p in (logged / "data").rglob("*")) == [
        "data/classifier", "data/classifier/classifier.json", "data/classifier/model.keras"]
    assert not list(logged.rglob("*.pkl"))  # nothing that loading would unpickle
    frame = pd.DataFrame({"text": [*TEXTS, "an unseen review"]})
    expected = new.predict(frame)
    assert list(expected.columns) == ["label", "probability", "probability_a", "probability_b", "probability_c"]
    pd.testing.assert_frame_equal(old.predict(frame), expected)
    assert np.allclose(expected.filter(like="probability_").sum(axis=1), 1, atol=1e-5)
    # direct calls of the class take bare texts too; the table keeps a Series' index
    direct = old.classifier.predict(pd.Series(TEXTS, index=[7, 8, 9, 10]), params={"batch_size": 3})
    assert direct.index.tolist() == [7, 8, 9, 10] and direct["label"].tolist() == expected["label"][:4].tolist()


@pytest.mark.unit
def test_a_pyfunc_model_whose_file_holds_python_code_is_refused(tmp_path):
    """Safe mode: a .keras file with a lambda in it is not run on load."""
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    inputs = keras.Input(shape=(3,))
    network = keras.Model(inputs, keras.layers.Dense(1)(keras.layers.Lambda(lambda x: x * 2)(inputs)))
    folder = serving.write_model_data(tmp_path / serving.DATA_FOLDER, serving.TextClassifier(["neg", "pos"]), network)
    with mlflow.start_run():
        info = mlflow.pyfunc.log_model(name="model", loader_module=serving.LOADER_MODULE, data_path=str(folder),
                                       pip_requirements=["keras"])
    with pytest.raises(SeqlabError, match="safe_mode"):
        predict.load(info.model_uri)


@pytest.mark.unit
def test_inputs_without_the_expected_columns_are_refused_by_name():
    classifier = serving.TextClassifier(["neg", "pos"], metadata_columns=["age", "income"])
    with pytest.raises(ValueError, match=r"'text' column .* or a 'messages' column .* columns: 'review'"):
        classifier.read_input(pd.DataFrame({"review": ["fine"], "age": [1.0], "income": [2.0]}))
    with pytest.raises(ValueError, match=r"metadata columns age, income .* lacks income"):
        classifier.read_input(pd.DataFrame({"text": ["fine"], "age": [1.0]}))
    with pytest.raises(ValueError, match=r"Row 2 of the input: metadata column 'income' holds 'lots', not a number"):
        classifier.read_input(pd.DataFrame({"text": ["a", "b"], "age": [1.0, None], "income": [2.0, "lots"]}))
    with pytest.raises(ValueError, match="also takes numeric metadata"):
        classifier.read_input(["a bare list of texts"])
    texts, metadata, _ = classifier.read_input(pd.DataFrame({"messages": ['["Hi", "Hello."]'], "age": [None],
                                                             "income": [3]}))
    assert texts == [thread_text(["Hi", "Hello."])] and np.isnan(metadata[0, 0]) and metadata[0, 1] == 3


# --- slow: three tiny models trained on real data -------------------------------------------------------

@pytest.mark.slow
@pytest.mark.parametrize("name", list(MODELS))
def test_a_fresh_process_loads_the_logged_model_and_reproduces_the_test_accuracy(logged, fresh_predictions, name):
    model, predictions = logged.models[name], fresh_predictions[name]
    class_names = model.data.class_names
    assert list(predictions.columns) == ["label", "probability", *(f"probability_{c}" for c in class_names)]
    assert len(predictions) == len(model.data.test) and set(predictions["label"]) <= set(class_names)
    probabilities = predictions[[f"probability_{c}" for c in class_names]].to_numpy()
    assert np.allclose(probabilities.sum(axis=1), 1, atol=1e-5)
    assert np.allclose(predictions["probability"], probabilities.max(axis=1))
    accuracy = np.mean(predictions["label"].to_numpy() == np.asarray(class_names)[model.data.test.labels])
    assert accuracy == pytest.approx(model.run.data.metrics["accuracy/test"], abs=1e-9)


@pytest.mark.slow
def test_an_ensemble_averages_its_members_probabilities_and_records_them_as_its_inputs(logged, fresh_predictions):
    ensemble, predictions = logged.ensemble, fresh_predictions["ensemble"]
    columns = ["probability_neg", "probability_pos"]
    members = [fresh_predictions["flat"][columns].to_numpy(), fresh_predictions["subword"][columns].to_numpy()]
    assert np.allclose(predictions[columns].to_numpy(), np.mean(members, axis=0), atol=1e-6)
    # evaluated on the members' test split: its accuracy is that of its fresh-process predictions
    labels = np.asarray(ensemble.data.class_names)[ensemble.data.test.labels]
    assert ensemble.run.data.metrics["accuracy/test"] == pytest.approx(np.mean(predictions["label"] == labels))
    best = max(logged.models[name].run.data.metrics["accuracy/test"] for name in ("flat", "subword"))
    assert ensemble.run.data.metrics["accuracy/test_best_member"] == pytest.approx(best)
    params, tags = ensemble.run.data.params, ensemble.run.data.tags
    assert params["model.name"] == "ensemble" and params["ensemble.size"] == "2"
    assert params["ensemble.members"] == ",".join(ensemble.members) and params["dataset.max_train"] == "200"
    member_runs = [logged.models[name].run.info.run_id for name in ("flat", "subword")]
    assert tags["ensemble.member_runs"] == ",".join(member_runs)
    inputs = {i.model_id for i in logged.client.get_run(ensemble.run.info.run_id).inputs.model_inputs}
    assert inputs == {mlflow.models.get_model_info(uri).model_id for uri in ensemble.members}  # lineage in the UI
    assert ensemble.run.info.status == "FINISHED" and "accuracy/test" in tags["mlflow.note.content"]
    contexts = {d.tags[0].value for d in logged.client.get_run(ensemble.run.info.run_id).inputs.dataset_inputs}
    assert contexts == {"train", "validation", "test"}  # the same Dataset column as its members' runs


@pytest.mark.unit
def test_an_ensemble_refuses_members_trained_on_other_data():
    from seqlab.workflow.ensemble import check_members

    def member(uri, max_train):
        return SimpleNamespace(uri=uri, dataset={"name": "imdb", "max_train": max_train},
                               classifier=serving.TextClassifier(["neg", "pos"]))

    with pytest.raises(SeqlabError, match=r"runs:/b/model .*dataset\.max_train differ"):
        check_members([member("runs:/a/model", 200), member("runs:/b/model", 300)])
    with pytest.raises(SeqlabError, match="at least two members"):
        check_members([member("runs:/a/model", 200)])


@pytest.mark.slow
def test_threads_given_as_messages_read_as_training_read_them(fresh_predictions):
    """{speaker, text} records (lists, or their JSON) with the model's speaker words: the predictions of the texts
    training built from the same threads."""
    pd.testing.assert_frame_equal(fresh_predictions["threads"], fresh_predictions["hierarchical"])


@pytest.mark.slow
def test_signature_metadata_and_description(logged):
    mlflow.set_tracking_uri(logged.uri)
    for name, model in logged.models.items():
        info = mlflow.models.get_model_info(model.uri)
        columns = model.data.metadata_names if model.cfg.model.metadata else []
        assert info.signature.inputs.input_names() == ["text", "messages", *columns], name
        assert info.signature.inputs.required_input_names() == columns
        assert info.signature.outputs.input_names() == ["label", "probability",
                                                        *(f"probability_{c}" for c in model.data.class_names)]
        assert info.flavors.keys() == {"python_function"} and info.metadata == {
            "class_names": model.data.class_names, "dataset": model.cfg.dataset.name, "metadata_columns": columns,
            "speaker_tokens": name == "hierarchical"}
        assert info.saved_input_example_info is not None  # MLflow's UI shows it, serving validated it
        assert info.flavors["python_function"]["loader_module"] == "seqlab.serving"  # the name every version logs
        logged_model = Path(mlflow.artifacts.download_artifacts(model.uri))
        assert not list(logged_model.rglob("*.pkl")), name  # loading unpickles nothing
        assert json.loads((logged_model / "data" / "classifier" / "classifier.json").read_text()) == {
            "class_names": model.data.class_names, "metadata_columns": columns,
            "speaker_tokens": name == "hierarchical"}
        note = logged.client.get_logged_model(info.model_id).tags["mlflow.note.content"]
        assert f"`{model.cfg.model.name}` classifier trained on `{model.cfg.dataset.name}`" in note
        assert "`messages` column" in note and ("`persuadee_age`" in note) == (name == "metadata")


@pytest.mark.slow
def test_the_logged_model_holds_the_metrics_of_the_final_epoch(logged):
    run, client = logged.models["flat"].run, logged.client
    [output] = run.outputs.model_outputs
    assert output.step == 1  # trainer.epochs=2: the second epoch, not the first
    expected = {}
    for key in run.data.metrics:
        expected |= {(key, m.step): m.value for m in client.get_metric_history(run.info.run_id, key) if m.step == 1}
    linked = {(m.key, m.step): m.value for m in client.get_logged_model(output.model_id).metrics}
    assert linked == expected
    assert {"loss/train", "accuracy/val", "accuracy/test", "loss/test"} <= {key for key, _ in linked}


@pytest.mark.slow
def test_mlflow_models_serve_answers_invocations(server):
    url = server.wait_until_up()
    texts = ["A wonderful, moving film.", "Awful and boring."]
    status, records = post(f"{url}/invocations", {"dataframe_records": [{"text": t} for t in texts]})
    assert status == 200, records
    status, columns = post(f"{url}/invocations", {"inputs": {"text": texts}, "params": {"batch_size": 1}})
    assert status == 200 and columns == records, columns
    answers = pd.DataFrame(records["predictions"])
    assert list(answers.columns) == ["label", "probability", "probability_neg", "probability_pos"]
    assert len(answers) == 2 and set(answers["label"]) <= {"neg", "pos"}
    assert np.allclose(answers[["probability_neg", "probability_pos"]].sum(axis=1), 1, atol=1e-5)
    status, refused = post(f"{url}/invocations", {"dataframe_records": [{"review": texts[0]}]})
    assert status == 400 and "'text' column" in refused.get("stack_trace", refused["message"])
