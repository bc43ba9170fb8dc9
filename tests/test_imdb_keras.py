"""dataset=imdb_keras on a tiny imdb.npz + word index written in keras.datasets.imdb's format."""

import json

import numpy as np
import pytest

from seqlab.data import load_dataset
from seqlab.errors import ConfigError, DataError
from seqlab.config.plan import data_part
from tests.conftest import compose_config

WORDS = ["the", "film", "a", "movie", "great", "awful", "loved", "hated", "wonderful", "boring", "acting", "plot"]
RANK = {word: rank for rank, word in enumerate(WORDS, start=1)}  # rank 1 = most frequent, as in Keras


def review(text: str) -> list[int]:
    return [RANK[word] for word in text.split()]  # plain ints: Keras' loader unpickles no numpy scalars


POSITIVE = ["the film great", "loved the movie", "wonderful acting", "a great plot", "great great film",
            "loved a wonderful plot"]
NEGATIVE = ["the film awful", "hated the movie", "boring acting", "a boring plot", "awful awful film",
            "hated a boring plot"]


def write_imdb_npz(folder, per_class=6, word_index=True):
    """imdb.npz (x_* ragged object arrays of rank lists, y_* 0/1) and imdb_word_index.json in `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    texts = [POSITIVE[i % len(POSITIVE)] for i in range(per_class)] + [NEGATIVE[i % len(NEGATIVE)]
                                                                      for i in range(per_class)]
    x = np.empty(len(texts), dtype=object)
    x[:] = [review(t) for t in texts]
    y = np.array([1] * per_class + [0] * per_class)
    np.savez(folder / "imdb.npz", x_train=x, y_train=y, x_test=x, y_test=y)
    if word_index:
        (folder / "imdb_word_index.json").write_text(json.dumps(RANK))
    return folder / "imdb.npz"


def load(*overrides):
    return load_dataset(data_part(compose_config(["dataset=imdb_keras", *overrides])))


@pytest.mark.unit
def test_ids_are_decoded_to_words_with_labels(tmp_path):
    path = write_imdb_npz(tmp_path / "keras")
    data = load(f"dataset.path={path}", "dataset.num_words=null", "dataset.validation_split=0.25")
    assert data.name == "imdb_keras" and data.class_names == ["neg", "pos"]
    assert len(data.test) == 12 and len(data.train) + len(data.validation) == 12 and len(data.validation) == 3
    by_id = dict(zip(data.test.ids, zip(data.test.texts, data.test.labels)))
    assert by_id["test/0"] == ("the film great", 1)
    assert by_id["test/7"] == ("hated the movie", 0)
    # a folder holding imdb.npz works as well as the file
    assert load(f"dataset.path={path.parent}", "dataset.num_words=null").test.texts == data.test.texts


def keras_reference(path, monkeypatch, **options):
    """(text, label) pairs of keras.datasets.imdb.load_data itself on our file, decoded by its word index."""
    import keras.src.datasets.imdb as keras_imdb

    monkeypatch.setattr(keras_imdb, "get_file", lambda *args, **kwargs: str(path))  # no download, no hash check
    (x, y), _ = keras_imdb.load_data(**options)
    index_from = options.get("index_from", 3)
    words = {rank + index_from: word for word, rank in RANK.items()} | {2: "xxunk"}
    return sorted((" ".join(words[i] for i in ids[1:]), int(label)) for ids, label in zip(x, y))  # ids[0]: start


@pytest.mark.unit
@pytest.mark.parametrize("options", [dict(num_words=8), dict(num_words=8, skip_top=5),
                                     dict(num_words=100, maxlen=4), dict(num_words=10, index_from=2)])
def test_num_words_skip_top_maxlen_and_index_from_act_as_in_keras(tmp_path, monkeypatch, options):
    path = write_imdb_npz(tmp_path / "keras")
    data = load(f"dataset.path={path}", *[f"dataset.{key}={value}" for key, value in options.items()])
    assert sorted(zip(data.test.texts, data.test.labels.tolist())) == keras_reference(path, monkeypatch, **options)
    assert any("xxunk" in text for text in data.test.texts) == (options["num_words"] < 15)


@pytest.mark.unit
def test_num_words_null_keeps_every_word(tmp_path):
    # (Keras' load_data(num_words=None) turns the single highest id into out-of-vocabulary; seqlab keeps it.)
    data = load(f"dataset.path={write_imdb_npz(tmp_path / 'keras')}", "dataset.num_words=null")
    assert not any("xxunk" in text for text in data.test.texts)
    assert {word for text in data.test.texts for word in text.split()} == set(WORDS)


@pytest.mark.unit
def test_bad_files_and_options_are_clear_errors(tmp_path):
    with pytest.raises(DataError, match="neither keras.datasets.imdb's imdb.npz"):
        load(f"dataset.path={tmp_path / 'nowhere'}")
    path = write_imdb_npz(tmp_path / "keras")
    (tmp_path / "keras" / "imdb_word_index.json").write_text(json.dumps({w: r for w, r in RANK.items() if r < 5}))
    with pytest.raises(DataError, match="word id 5.*same release"):
        load(f"dataset.path={path}")
    with pytest.raises(ConfigError, match="dataset.target"):
        load(f"dataset.path={path}", "dataset.target=rating")
    (tmp_path / "broken.npz").write_bytes(b"not a zip")
    with pytest.raises(DataError, match="broken.npz"):
        load(f"dataset.path={tmp_path / 'broken.npz'}")


@pytest.mark.unit
def test_offline_without_a_path_is_a_clear_error(tmp_path, monkeypatch):
    empty = [f"data_dir={tmp_path / 'empty'}", f"cache_dir={tmp_path / 'cache'}"]
    with pytest.raises(DataError, match="dataset.download is false") as caught:
        load(*empty, "dataset.download=false")
    assert "dataset.path" in str(caught.value) and "imdb.npz" in str(caught.value)

    import keras

    def offline(*args, **kwargs):  # what keras.utils.get_file raises without a network
        raise Exception("URL fetch failure on https://storage.googleapis.com/...: None -- network is unreachable")

    monkeypatch.setattr(keras.utils, "get_file", offline)
    with pytest.raises(DataError, match="network is unreachable"):
        load(*empty)
    # the word index alone missing (npz under data_dir) is reported the same way
    write_imdb_npz(tmp_path / "empty", word_index=False)
    with pytest.raises(DataError, match="imdb_word_index.json was not found"):
        load(*empty)


@pytest.mark.integration
def test_flat_models_train_on_it_and_the_logged_model_predicts_raw_text(tmp_path):
    import mlflow
    from mlflow.tracking import MlflowClient

    from seqlab.serving.predict import load as load_logged_model, model_metadata, predict_texts
    from seqlab.workflow.train import train

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    cfg = compose_config(["dataset=imdb_keras", f"dataset.path={write_imdb_npz(tmp_path / 'keras', per_class=24)}",
                          "dataset.num_words=10", "debug=tiny", "model=fasttext_bigram", "preprocess.max_length=6",
                          "trainer.epochs=2", f"tracking.uri={uri}"])
    train(cfg)
    client = MlflowClient(uri)
    [run] = [r for r in client.search_runs([client.get_experiment_by_name("imdb_keras").experiment_id])
             if r.data.params.get("model.name") == "fasttext_bigram"]
    assert run.info.status == "FINISHED" and run.data.tags["dataset"] == "imdb_keras"
    mlflow.set_tracking_uri(uri)
    model = load_logged_model(f"runs:/{run.info.run_id}/model")
    class_names = model_metadata(f"runs:/{run.info.run_id}/model")["class_names"]
    assert class_names == ["neg", "pos"]
    data = load_dataset(data_part(cfg))
    predicted = predict_texts(model, data.test.texts)["label"].map(class_names.index).to_numpy()
    assert np.mean(predicted == data.test.labels) == pytest.approx(run.data.metrics["accuracy/test"], abs=1e-9)
    # raw text with punctuation and capitals goes through the same preprocessing
    assert len(predict_texts(model, ["A WONDERFUL plot, loved it!"])) == 1
