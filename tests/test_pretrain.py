"""Pretraining (`seqlab pretrain`, `model.pretrained=`): runs and reuse, vectors files, initial weights, the
fine-tuning schedule, test texts kept out of every pretraining, and prediction from a fine-tuned model."""

from __future__ import annotations

import os
import subprocess
import sys
import tarfile
from pathlib import Path

import keras
import numpy as np
import pandas as pd
import mlflow
import pytest
from mlflow.tracking import MlflowClient

from seqlab.pretraining import vectors as pretrained_module
from seqlab.errors import ConfigError, DataError
from seqlab.pretraining.pretrain import KEY_TAG, pretrain
from seqlab.workflow.train import train
from seqlab.config.plan import data_part, resolve
from tests.conftest import compose_config, run_seqlab

MARKER = "zqxmarkerword"  # planted in test texts only
GOOD = ["great", "wonderful", "superb", "brilliant", "lovely", "excellent"]
BAD = ["awful", "dreadful", "boring", "terrible", "dull", "tedious"]
FILLER = ["the", "film", "story", "cast", "plot", "movie", "acting", "scene"]


def sentences(rng, words, count):
    return [" ".join(rng.choice(words + FILLER, size=12)) for _ in range(count)]


@pytest.fixture
def tiny_dataset(tmp_path) -> dict:
    """A train CSV and a test CSV of short two-class texts; the test texts alone hold MARKER."""
    rng = np.random.default_rng(0)
    train = pd.DataFrame({"text": sentences(rng, GOOD, 40) + sentences(rng, BAD, 40), "label": ["pos"] * 40 + ["neg"] * 40})
    test = pd.DataFrame({"text": [f"{t} {MARKER}" for t in sentences(rng, GOOD, 10) + sentences(rng, BAD, 10)],
                         "label": ["pos"] * 10 + ["neg"] * 10})
    train.to_csv(tmp_path / "train.csv", index=False)
    test.to_csv(tmp_path / "test.csv", index=False)
    return {"train": tmp_path / "train.csv", "test": tmp_path / "test.csv", "test_texts": test["text"].tolist()}


def config(dataset, uri, *overrides, model="bilstm"):
    """debug=tiny (embedding_dim 4, as the vectors these tests write) on the tiny dataset, in batches of 16."""
    return compose_config(["dataset=custom", f"dataset.path={dataset['train']}", f"dataset.test_path={dataset['test']}",
                           "debug=tiny", f"model={model}", "trainer.batch_size=16", "trainer.checkpoint=false",
                           f"tracking.uri={uri}", *overrides])


def runs(uri, experiment):
    client = MlflowClient(uri)
    found = client.get_experiment_by_name(experiment)
    return client.search_runs([found.experiment_id]) if found else []


def vocabulary_of(uri, run_id) -> list[str]:
    import mlflow

    folder = mlflow.artifacts.download_artifacts(f"runs:/{run_id}/pretrained", tracking_uri=uri)
    return pretrained_module.read_folder(Path(folder), source=folder).words


@pytest.mark.integration
def test_pretraining_is_recorded_and_reused_for_the_same_corpus_and_settings(tiny_dataset, tracking_uri):
    cfg = config(tiny_dataset, tracking_uri, "pretrain=word2vec", "pretrain.epochs=3", "pretrain.min_count=1",
                 "pretrain.probe_words=[great,awful]")
    first = pretrain(resolve(cfg, pretraining=True))
    assert pretrain(resolve(cfg, pretraining=True)) == first  # the same key: no second run
    assert len(runs(tracking_uri, "pretrain")) == 1
    run = MlflowClient(tracking_uri).get_run(first)
    assert run.info.status == "FINISHED"
    beside_the_database = (Path(tracking_uri[len("sqlite:///"):]).parent / "mlartifacts").as_uri()
    assert run.info.artifact_uri.startswith(beside_the_database)  # as training runs', not ./mlruns of the cwd
    assert run.data.params["pretrain.algorithm"] == "cbow" and run.data.params["corpus.train"] == "72"
    history = MlflowClient(tracking_uri).get_metric_history(first, "loss/train")
    assert [m.step for m in history] == [0, 1, 2]
    artifacts = {a.path for a in MlflowClient(tracking_uri).list_artifacts(first)}
    assert {"neighbours.md", "pretrained"} <= artifacts
    table = MlflowClient(tracking_uri).download_artifacts(first, "neighbours.md")
    assert "| great |" in Path(table).read_text()
    # another setting, another pretraining
    other = pretrain(resolve(config(tiny_dataset, tracking_uri, "pretrain=word2vec", "pretrain.epochs=2",
                                    "pretrain.min_count=1"), pretraining=True))
    assert other != first and MlflowClient(tracking_uri).get_run(other).data.tags[KEY_TAG] != run.data.tags[KEY_TAG]


@pytest.mark.slow
def test_seqlab_pretrain_command_prints_the_run_and_the_encoder_model_is_registrable(tiny_dataset, tracking_uri, tmp_path):
    done = run_seqlab("pretrain", "dataset=custom", f"dataset.path={tiny_dataset['train']}",
                      f"dataset.test_path={tiny_dataset['test']}", "pretrain.embedding_dim=8", "pretrain.min_count=1",
                      "pretrain.epochs=2", f"tracking.uri={tracking_uri}", "tracking.registered_model=tiny-vectors",
                      f"hydra.run.dir={tmp_path / 'out'}", cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    uri = done.stdout.strip().splitlines()[-1]
    assert uri.startswith("runs:/")
    # the registered pretraining is a source too
    vectors = pretrained_module.resolve("models:/tiny-vectors/1", tracking_uri)
    assert vectors.dim == 8 and "great" in vectors.words and vectors.run_id == uri.split("/")[-1]


def write_vectors(tmp_path, words, vectors) -> dict[str, Path]:
    """The same vectors as GloVe text, word2vec text, word2vec binary and fastText .vec."""
    from gensim.models import KeyedVectors

    keyed = KeyedVectors(vectors.shape[1])
    keyed.add_vectors(words, vectors)
    files = {"word2vec_text": tmp_path / "vectors.txt", "word2vec_binary": tmp_path / "vectors.bin",
             "fasttext_vec": tmp_path / "wiki.vec", "glove": tmp_path / "glove.6B.4d.txt"}
    keyed.save_word2vec_format(str(files["word2vec_text"]), binary=False)
    keyed.save_word2vec_format(str(files["word2vec_binary"]), binary=True)
    files["fasttext_vec"].write_text(files["word2vec_text"].read_text())
    files["glove"].write_text("".join(f"{w} {' '.join(f'{x:.6f}' for x in v)}\n" for w, v in zip(words, vectors)))
    return files


@pytest.mark.unit
@pytest.mark.parametrize("kind", ["glove", "word2vec_text", "word2vec_binary", "fasttext_vec"])
def test_vectors_files_in_each_format_load_with_their_coverage_of_the_vocabulary(kind, tiny_dataset, tracking_uri,
                                                                                  tmp_path):
    words = GOOD + BAD + ["notinthedata"]
    vectors = np.random.default_rng(1).normal(size=(len(words), 4)).astype(np.float32)
    path = write_vectors(tmp_path, words, vectors)[kind]
    loaded = pretrained_module.resolve(str(path))
    assert loaded.words == words and np.allclose(loaded.vectors, vectors, atol=1e-5)
    network, preprocessor, _, _ = built_model(config(tiny_dataset, tracking_uri))
    report = pretrained_module.initialise(network, preprocessor.vectorizer.get_vocabulary(), loaded, "bilstm")
    assert report.coverage == pytest.approx(len(GOOD + BAD) / (12 + len(FILLER)))  # the training texts' words


@pytest.mark.integration
def test_a_run_from_a_vectors_file_logs_its_coverage_and_source(tiny_dataset, tracking_uri, tmp_path):
    words = GOOD + BAD
    path = write_vectors(tmp_path, words, np.ones((len(words), 4), np.float32))["glove"]
    train(config(tiny_dataset, tracking_uri, f"model.pretrained={path}"))
    [run] = runs(tracking_uri, "custom")
    assert run.data.metrics["pretrained/coverage"] == pytest.approx(len(words) / (12 + len(FILLER)))
    assert run.data.params["derived.pretrained"] == str(path) and run.data.params["model.pretrained_lr_multiplier"] == "1.0"
    assert "pretrain.name" not in run.data.params  # no pretrain group: the vectors came from the file


def built_model(cfg):
    """The model train() builds for `cfg`, with its fitted preprocessor (no training)."""
    from seqlab.data import load_dataset
    from seqlab.models.catalog import build_model
    from seqlab.features.cache import encode_splits
    from seqlab.features.preprocess import InputSpec

    data = load_dataset(data_part(cfg))
    preprocessor, (x_train, _, _), _ = encode_splits(resolve(cfg).features, data)
    spec = InputSpec(cfg.preprocess.vocab_size, preprocessor.sequence_shape, data.num_classes, preprocessor.mask_zero)
    return build_model(cfg.model, spec), preprocessor, data, x_train


@pytest.mark.unit
@pytest.mark.parametrize("model", ["bilstm", "fasttext_bigram", "hier_conv"])
def test_a_known_words_initial_embedding_is_its_pretrained_vector(model, tiny_dataset, tracking_uri):
    words = GOOD + BAD
    vectors = np.arange(len(words) * 4, dtype=np.float32).reshape(len(words), 4)
    cfg = config(tiny_dataset, tracking_uri, model=model)
    network, preprocessor, _, _ = built_model(cfg)
    vocabulary = preprocessor.vectorizer.get_vocabulary()
    report = pretrained_module.initialise(network, vocabulary, pretrained_module.Pretrained(words, vectors, "test"),
                                          model)
    table, _ = pretrained_module.embedding_layer(network)
    for word in ("great", "awful"):
        assert np.array_equal(table.embeddings.numpy()[vocabulary.index(word)], vectors[words.index(word)])
    assert report.found == len(words)


@pytest.mark.integration
def test_a_language_models_lstm_initialises_the_bilstm_in_both_directions(tiny_dataset, tracking_uri):
    cfg = config(tiny_dataset, tracking_uri, "pretrain=lm", "pretrain.units=4", "pretrain.sequence_length=8",
                 "pretrain.batch_size=4", "pretrain.sampled_classes=8", "pretrain.min_count=1")
    run_id = pretrain(resolve(cfg, pretraining=True))
    vectors = pretrained_module.resolve(f"runs:/{run_id}", tracking_uri)
    assert set(vectors.lstm) == {"forward", "backward"}
    assert MlflowClient(tracking_uri).get_metric_history(run_id, "loss/val")
    network, preprocessor, _, _ = built_model(cfg)
    report = pretrained_module.initialise(network, preprocessor.vectorizer.get_vocabulary(), vectors, "bilstm")
    bilstm = network.get_layer("bilstm")
    for direction, layer in (("forward", bilstm.forward_layer), ("backward", bilstm.backward_layer)):
        for actual, expected in zip(layer.get_weights(), vectors.lstm[direction]):
            assert np.array_equal(actual, expected)
    assert report.lstm == "bilstm (forward and backward)"


@pytest.mark.integration
def test_frozen_pretrained_layers_do_not_change_in_frozen_epochs_and_do_afterwards(tiny_dataset, tracking_uri):
    from seqlab.training.callbacks import PretrainedSchedule
    from seqlab.models.layers import loss_for
    from seqlab.training.optimizers import scale_learning_rate

    cfg = config(tiny_dataset, tracking_uri, model="bilstm")
    network, preprocessor, data, x_train = built_model(cfg)
    words = GOOD + BAD
    vectors = np.random.default_rng(2).normal(size=(len(words), 4)).astype(np.float32)
    report = pretrained_module.initialise(network, preprocessor.vectorizer.get_vocabulary(),
                                          pretrained_module.Pretrained(words, vectors, "test"), "bilstm")
    optimizer = keras.optimizers.Adam(0.05)
    scale = scale_learning_rate(optimizer, report.variables, 0.5)
    network.compile(optimizer=optimizer, loss=loss_for(2), metrics=["accuracy"])
    snapshots = []

    class Snapshot(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            snapshots.append((network.get_layer("embedding").get_weights()[0].copy(),
                              network.get_layer("probability").get_weights()[0].copy(), float(scale.numpy())))

    before = (network.get_layer("embedding").get_weights()[0].copy(), network.get_layer("probability").get_weights()[0].copy())
    network.fit(x_train, data.train.labels, epochs=3, batch_size=16, verbose=0,
                callbacks=[PretrainedSchedule(scale, 2, 0.5), Snapshot()])
    for epoch in (0, 1):  # frozen: the embedding as pretrained, the rest learning
        assert np.array_equal(snapshots[epoch][0], before[0]) and snapshots[epoch][2] == 0.0
        assert not np.array_equal(snapshots[epoch][1], before[1])
    assert not np.array_equal(snapshots[2][0], before[0]) and snapshots[2][2] == 0.5


@pytest.mark.integration
@pytest.mark.parametrize("kind", ["word2vec", "lm"])
def test_a_word_only_in_the_test_split_enters_no_pretraining(kind, tiny_dataset, tracking_uri):
    sizes = ["pretrain.units=4", "pretrain.sequence_length=8", "pretrain.batch_size=4",
             "pretrain.sampled_classes=8"] if kind == "lm" else []
    cfg = config(tiny_dataset, tracking_uri, f"pretrain={kind}", "model.pretrained=pretrain", "pretrain.min_count=1",
                 *sizes)
    mlflow.set_tracking_uri(tracking_uri)
    another = mlflow.set_experiment("another")  # left active by an earlier run of this process: neither run may mind
    train(cfg)
    assert os.environ["MLFLOW_EXPERIMENT_ID"] == another.experiment_id  # and neither changes it
    [pretraining] = runs(tracking_uri, "pretrain")
    words = vocabulary_of(tracking_uri, pretraining.info.run_id)
    assert "great" in words and MARKER not in words
    [run] = runs(tracking_uri, "custom")
    assert run.data.tags["pretrained.run_id"] == pretraining.info.run_id  # lineage
    assert run.data.params["pretrain.name"] == kind and run.data.params["model.pretrained"] == "pretrain"
    inputs = MlflowClient(tracking_uri).get_run(run.info.run_id).inputs.model_inputs
    assert [i.model_id for i in inputs] == [pretraining.data.tags["seqlab.pretrain_model_id"]]
    assert f"Fine-tuned from pretraining run {pretraining.info.run_id}" in run.data.tags["mlflow.note.content"]
    [corpus] = MlflowClient(tracking_uri).get_run(pretraining.info.run_id).inputs.dataset_inputs
    assert corpus.dataset.name == "train" and corpus.tags[0].value == "pretraining"


@pytest.mark.integration
def test_test_texts_in_a_corpus_file_are_left_out_and_counted(tiny_dataset, tracking_uri, tmp_path):
    corpus = tmp_path / "corpus.txt"
    leaked = tiny_dataset["test_texts"][3]
    corpus.write_text(f"some unrelated text\n  {leaked.upper()} \n")
    cfg = config(tiny_dataset, tracking_uri, "pretrain=word2vec", f"pretrain.corpus=[train,{corpus}]",
                 "pretrain.min_count=1")
    run = MlflowClient(tracking_uri).get_run(pretrain(resolve(cfg, pretraining=True)))
    assert run.data.params["corpus.test_texts_removed"] == "1" and run.data.metrics["corpus/texts"] == 72 + 1
    assert MARKER not in vocabulary_of(tracking_uri, run.info.run_id)


@pytest.mark.unit
@pytest.mark.parametrize("suffix", [".txt", ".csv", ".jsonl"])
def test_corpus_files_are_read_by_suffix(suffix, tmp_path):
    from seqlab.data.corpus import read_file

    texts = ["first text here", "second one"]
    path = tmp_path / f"corpus{suffix}"
    if suffix == ".txt":
        path.write_text("\n".join(texts) + "\n\n")
    elif suffix == ".csv":
        pd.DataFrame({"text": texts}).to_csv(path, index=False)
    else:
        pd.DataFrame({"text": texts}).to_json(path, orient="records", lines=True)
    assert read_file(str(path)) == texts


@pytest.mark.unit
def test_imdb_unsup_reads_the_unlabeled_reviews_of_the_archive(tmp_path):
    from seqlab.data.corpus import load_corpus
    from tests.conftest import write_aclimdb

    folder = write_aclimdb(tmp_path / "src")
    (folder / "train" / "unsup").mkdir()
    for i in range(3):
        (folder / "train" / "unsup" / f"{i}_0.txt").write_text(f"unlabeled review {i}")
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    with tarfile.open(data_dir / "aclImdb_v1.tar.gz", "w:gz") as tar:
        tar.add(folder, arcname="aclImdb")
    cfg = compose_config([f"data_dir={data_dir}", "pretrain=word2vec", "pretrain.corpus=[imdb_unsup]"])
    assert load_corpus(cfg.pretrain, data_part(cfg)).texts == [f"unlabeled review {i}" for i in range(3)]


@pytest.mark.integration
def test_bad_pretrained_sources_are_reported_by_key(tiny_dataset, tracking_uri, tmp_path):
    with pytest.raises(ConfigError, match="no pretraining is selected"):
        train(config(tiny_dataset, tracking_uri, "model.pretrained=pretrain"))
    with pytest.raises(ConfigError, match="has no word embedding"):
        train(config(tiny_dataset, tracking_uri, "model.pretrained=pretrain", "pretrain=word2vec",
                     model="lstm_no_embedding"))
    with pytest.raises(ConfigError, match="neither an existing file"):
        train(config(tiny_dataset, tracking_uri, f"model.pretrained={tmp_path / 'missing.vec'}"))
    wide = tmp_path / "wide.txt"
    wide.write_text("great 1 2 3 4 5 6\nawful 1 2 3 4 5 6\n")
    with pytest.raises(ConfigError, match=r"model.embedding_dim=6"):
        train(config(tiny_dataset, tracking_uri, f"model.pretrained={wide}"))
    broken = tmp_path / "broken.txt"
    broken.write_text("great 1 2 3 4\nawful 1 2 x\n")
    with pytest.raises(DataError, match=r"broken.txt"):
        train(config(tiny_dataset, tracking_uri, f"model.pretrained={broken}"))
    # nothing was left RUNNING by the refused runs
    assert all(run.info.status != "RUNNING" for run in runs(tracking_uri, "custom"))


FRESH = """
import sys, mlflow, pandas as pd
model = mlflow.pyfunc.load_model(sys.argv[1])
print(model.predict(pd.DataFrame({"text": ["great wonderful superb film", "awful dreadful boring film"]}))["label"].tolist())
"""


@pytest.mark.slow
def test_a_fine_tuned_model_predicts_raw_text_in_a_fresh_process(tiny_dataset, tracking_uri):
    cfg = config(tiny_dataset, tracking_uri, "pretrain=word2vec", "model.pretrained=pretrain", "pretrain.min_count=1",
                 "trainer.epochs=8", "model.pretrained_lr_multiplier=0.5")
    train(cfg)
    [run] = runs(tracking_uri, "custom")
    done = subprocess.run([sys.executable, "-c", FRESH, f"runs:/{run.info.run_id}/model"], capture_output=True,
                          text=True, timeout=300, env={**os.environ, "MLFLOW_TRACKING_URI": tracking_uri})
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip().splitlines()[-1] == "['pos', 'neg']"
