"""Chat threads: the real thread datasets, hierarchical batches, harmless empty message slots, metadata scaled
with train statistics only, and one short epoch of each hierarchical model on a few hundred real threads."""

import json
from pathlib import Path

import keras
import mlflow
import numpy as np
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient
from omegaconf import OmegaConf

from seqlab.workflow import train as train_module
from seqlab.config.validate import validate
from seqlab.data import load_dataset
from seqlab.errors import ConfigError
from seqlab.models.catalog import build_model
from seqlab.models.layers import MessageEncoder
from seqlab.serving.predict import load, predict_texts, read_examples, read_inputs, read_metadata
from seqlab.features.preprocess import HierarchicalPreprocessor, InputSpec, MetadataPreprocessor
from seqlab.config.plan import data_part
from tests.conftest import HIERARCHICAL_MODELS, REAL_DATA, compose_config, tiny_model

THREADS = REAL_DATA / "threads"


@pytest.fixture(scope="session")
def threads_dir() -> Path:
    if not (THREADS / "persuasionforgood_donation.jsonl.gz").exists():
        pytest.skip(f"thread data not found under {THREADS} (set SEQLAB_DATA_DIR to the shared data folder)")
    return REAL_DATA


def real(name, data_dir, *overrides):
    return load_dataset(data_part(compose_config([f"dataset={name}", f"data_dir={data_dir}", *overrides])))


# --- the real thread datasets -------------------------------------------------------------------------

@pytest.mark.slow
def test_persuasion_uses_the_file_split_and_its_numeric_traits(threads_dir):
    data = real("persuasion", threads_dir)
    assert (len(data.train), len(data.validation), len(data.test)) == (711, 153, 153)
    assert data.class_names == ["donated", "not_donated"]
    assert len(data.metadata_names) == 26 and "label_donation_usd" not in data.metadata_names  # the target
    assert data.train.metadata.shape == (711, 26) and np.isnan(data.train.metadata).any()  # missing traits
    assert all("\n" in text for text in data.train.texts[:20])  # messages joined by "\n"


@pytest.mark.slow
def test_dailydialog_holds_validation_out_of_train_because_the_official_one_lacks_topics(threads_dir, caplog):
    caplog.set_level("INFO", logger="seqlab")
    data = real("dailydialog", threads_dir)
    assert data.num_classes == 10 and len(data.test) == 1000
    assert "has no Attitude & Emotion, Culture & Education, School Life threads" in caplog.text
    assert len(data.train) + len(data.validation) == 11118 + 1000
    assert sorted(set(data.validation.labels)) == list(range(10))  # stratified: every topic
    assert not set(data.validation.ids) & set(data.train.ids)
    official = real("dailydialog", threads_dir, "dataset.validation_source=official")
    assert len(official.validation) == 1000 and len(set(official.validation.labels)) == 7


@pytest.mark.slow
def test_speaker_tokens_and_chitchat_caps(threads_dir):
    data = real("chitchat", threads_dir, "preprocess.speaker_tokens=true", "dataset.max_train=100",
                "dataset.max_test=50")
    assert data.num_classes == 34 and len(data.test) == 50
    assert (len(data.train), len(data.validation)) == (100, 10)  # official validation, sampled like train
    first_words = {line.split()[0] for text in data.train.texts for line in text.split("\n")}
    assert first_words == {"xxspka", "xxspkb"}


# --- hierarchical preprocessing ---------------------------------------------------------------------

def hierarchical(max_units=3, max_unit_length=4, keep="first", vocab_size=50):
    return OmegaConf.create(dict(name="hierarchical", vocab_size=vocab_size, max_length=5, padding="post",
                                 truncating="post", max_units=max_units, max_unit_length=max_unit_length, keep=keep,
                                 speaker_tokens=False))


TRAIN = ["hello there friend\nhow are you today my friend\n!!!\nfine thanks",
         "A great film. Really great! <br />Bad end?"]


@pytest.mark.unit
def test_hierarchical_batches_are_units_by_words_with_empty_slots_last():
    pre = HierarchicalPreprocessor(hierarchical()).fit(TRAIN)
    vocabulary = pre.vectorizer.get_vocabulary()
    ids = lambda words: [vocabulary.index(w) for w in words.split()]  # noqa: E731
    batch = pre.encode([*TRAIN, "", "one"])
    assert batch.shape == (4, 3, 4) and batch.dtype == np.int32
    # a thread's messages, the "!!!" line (no words) dropped, words cut to 4 (post)
    assert batch[0].tolist() == [ids("hello there friend") + [0], ids("how are you today"), ids("fine thanks") + [0, 0]]
    # a text without line breaks: its sentences
    assert batch[1].tolist() == [ids("a great film") + [0], ids("really great") + [0, 0], ids("bad end") + [0, 0]]
    assert not batch[2].any()  # an empty text: empty slots only
    assert batch[3, 0, 0] == 1 and not batch[3, 1:].any()  # out-of-vocabulary word, then empty slots
    assert "xxsep" not in vocabulary and "one" not in vocabulary  # fitted on the training units only
    last = HierarchicalPreprocessor(hierarchical(max_units=2, keep="last"))
    last.vectorizer.set_vocabulary(vocabulary)
    assert last.encode(TRAIN[:1])[0].tolist() == [ids("how are you today"), ids("fine thanks") + [0, 0]]


@pytest.mark.unit
def test_logged_preprocessing_round_trips(tmp_path):
    pre = HierarchicalPreprocessor(hierarchical()).fit(TRAIN)
    text = keras.Input(shape=(), dtype="string")
    model = keras.Model(text, pre.apply(text))
    model.save(tmp_path / "units.keras")
    reloaded = keras.saving.load_model(tmp_path / "units.keras")
    assert (reloaded.predict(np.asarray(TRAIN, object), verbose=0) == pre.encode(TRAIN)).all()


# --- empty message slots ----------------------------------------------------------------------------

def hier_model(name, max_units, seed=3):
    keras.utils.set_random_seed(seed)
    sizes = dict(embedding_dim=8, message_units=5, units=6, filters=7, kernel_size=3, heads=2, ff_dim=8)
    cfg = compose_config([*tiny_model(name, sizes), "model.dropout=0.0"]).model
    spec = InputSpec(vocab_size=40, sequence_shape=(max_units, 6), num_classes=3, mask_zero=True)
    return build_model(cfg, spec)


def threads_batch(rng, max_units):
    """Threads of 1-4 messages (words post-padded), then empty slots, as preprocess=hierarchical gives them."""
    batch = np.zeros((6, max_units, 6), np.int32)
    for row in range(6):
        for slot in range(rng.integers(1, 5)):
            length = rng.integers(1, 7)
            batch[row, slot, :length] = rng.integers(1, 40, length)
    return batch


@pytest.mark.unit
@pytest.mark.parametrize("name", HIERARCHICAL_MODELS)
def test_empty_message_slots_never_change_a_prediction(name):
    rng = np.random.default_rng(0)
    short = hier_model(name, max_units=4)
    wide = hier_model(name, max_units=12, seed=99)
    wide.set_weights(short.get_weights())  # the same network, eight more empty slots
    batch = threads_batch(rng, 4)
    padded = np.concatenate([batch, np.zeros((6, 8, 6), np.int32)], axis=1)
    expected = short.predict(batch, verbose=0)
    assert np.allclose(wide.predict(padded, verbose=0), expected, atol=1e-6)
    # what fills an empty slot's position never matters either: only the slots before it count
    assert np.isfinite(short.predict(np.zeros((2, 4, 6), np.int32), verbose=0)).all()  # an empty thread


@pytest.mark.unit
def test_message_encoder_matches_embedding_and_bilstm_per_message_with_zeros_in_empty_slots():
    keras.utils.set_random_seed(1)
    encoder = MessageEncoder(vocab_size=40, embedding_dim=8, units=5)
    batch = threads_batch(np.random.default_rng(1), 5)
    vectors = keras.ops.convert_to_numpy(encoder(batch))
    assert vectors.shape == (6, 5, 10)
    present = batch.any(axis=-1)
    assert not vectors[~present].any()  # exactly zero
    row, slot = np.argwhere(present)[-1]
    message = batch[row, slot][None]
    alone = encoder.encoder(encoder.embedding(message))  # Embedding -> BiLSTM on this message alone
    assert np.allclose(vectors[row, slot], keras.ops.convert_to_numpy(alone)[0], atol=1e-6)


# --- metadata -------------------------------------------------------------------------------------

@pytest.mark.unit
def test_metadata_is_imputed_and_scaled_with_train_statistics_only():
    train = np.array([[1.0, 10.0, 7.0], [3.0, np.nan, 7.0], [np.nan, 30.0, 7.0]], np.float32)
    test = np.array([[5.0, np.nan, 9.0], [np.nan, 40.0, 7.0]], np.float32)
    scaler = MetadataPreprocessor(["a", "b", "c"]).fit(train)
    mean, std = np.array([2.0, 20.0, 7.0]), np.array([1.0, 10.0, 1.0])  # c is constant: scale 1
    assert np.allclose(scaler.encode(test), [[(5 - 2) / 1, 0.0, 2.0], [0.0, (40 - 20) / 10, 0.0]])
    encoded_train = scaler.encode(train)
    assert np.allclose(encoded_train, np.nan_to_num((train - mean) / std))  # missing -> the train mean -> 0
    refit = MetadataPreprocessor(["a", "b", "c"]).fit(np.concatenate([train, test]))
    assert not np.allclose(refit.encode(test), scaler.encode(test))  # the statistics really are train's


@pytest.mark.unit
def test_metadata_input_composes_with_flat_models_too():
    cfg = compose_config(["dataset=persuasion", "model=bilstm", "model.metadata=true"])
    validate(cfg)
    spec = InputSpec(vocab_size=50, sequence_shape=(8,), num_classes=2, mask_zero=True, metadata_dim=26)
    model = build_model(cfg.model, spec)
    assert sorted(i.name for i in model.inputs) == ["metadata", "tokens"]
    outputs = model.predict({"tokens": np.ones((3, 8), np.int32), "metadata": np.zeros((3, 26), np.float32)}, verbose=0)
    assert outputs.shape == (3, 1)


@pytest.mark.unit
def test_hierarchical_models_select_their_preprocessing():
    cfg = compose_config(["model=hier_conv", "dataset=chitchat"])
    assert cfg.preprocess.name == "hierarchical"
    validate(cfg)
    with pytest.raises(ConfigError, match=r"model=hier_lstm reads units .* needs preprocess=hierarchical"):
        validate(compose_config(["model=hier_lstm", "preprocess=words"]))
    with pytest.raises(ConfigError, match=r"model=lstm reads one sequence of words"):
        validate(compose_config(["preprocess=hierarchical"]))


# --- one short epoch on real threads ------------------------------------------------------------------



@pytest.mark.slow
def test_hier_conv_on_dailydialog_with_balanced_class_weights(threads_dir, tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    cfg = compose_config(["dataset=dailydialog", "model=hier_conv", f"data_dir={threads_dir}", "debug=tiny",
                          "trainer.class_weight=balanced", "tracking.log_model=false", f"tracking.uri={uri}"])
    train_module.train(cfg)
    client = MlflowClient(uri)
    [run] = client.search_runs([client.get_experiment_by_name("dailydialog").experiment_id])
    assert run.info.status == "FINISHED" and run.data.params["preprocess.name"] == "hierarchical"
    assert 0 <= run.data.metrics["f1_macro/test"] <= 1
    report = mlflow.artifacts.load_text(f"{run.info.artifact_uri}/classification_report.txt")
    assert "Culture & Education" in report and "macro avg" in report  # per-class report


@pytest.mark.slow
def test_hier_lstm_with_metadata_on_persuasion_logs_a_model_that_predicts_from_a_file(threads_dir, tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    cfg = compose_config(["dataset=persuasion", "model=hier_lstm", "model.metadata=true", f"data_dir={threads_dir}",
                          "debug=tiny", f"tracking.uri={uri}"])
    train_module.train(cfg)
    client = MlflowClient(uri)
    [run] = client.search_runs([client.get_experiment_by_name("persuasion").experiment_id])
    assert run.info.status == "FINISHED"
    mlflow.set_tracking_uri(uri)
    model = load(f"runs:/{run.info.run_id}/model")
    class_names = model.metadata.metadata["class_names"]
    assert class_names == ["donated", "not_donated"]
    # the imputation and scaling fitted on train travel inside the model (the Keras model of seqlab's pyfunc model)
    data = load_dataset(data_part(cfg))
    scale = model.get_raw_model().get_layer("scale_metadata")
    train_mean = np.nanmean(data.train.metadata.astype(np.float64), axis=0)
    assert np.allclose(np.ravel(keras.ops.convert_to_numpy(scale.mean)), train_mean, rtol=1e-5)
    # seqlab predict's path: a JSONL of raw threads with their metadata columns, NaN included
    rows = pd.read_json(THREADS / "persuasionforgood_donation.jsonl.gz", lines=True)
    rows = rows[rows["split"] == "test"].head(5)
    rows.to_json(tmp_path / "threads.jsonl", orient="records", lines=True)
    texts, ids, frame = read_examples(str(tmp_path / "threads.jsonl"))
    metadata = read_metadata(frame, data.metadata_names, "threads.jsonl")
    assert ids == rows["thread_id"].tolist() and metadata.shape == (5, 26)
    full = real("persuasion", threads_dir)
    position = {thread_id: i for i, thread_id in enumerate(full.test.ids)}
    assert texts == [full.test.texts[position[i]] for i in ids]  # the same strings training saw
    assert np.allclose(metadata, full.test.metadata[[position[i] for i in ids]], equal_nan=True)
    predictions = predict_texts(model, texts, metadata=pd.DataFrame(metadata, columns=data.metadata_names))
    assert set(predictions["label"]) <= set(class_names) and predictions["probability"].between(0.5, 1).all()
    # raw text and raw numbers in, the test accuracy of the run out
    on_test = predict_texts(model, data.test.texts, metadata=pd.DataFrame(data.test.metadata,
                                                                          columns=data.metadata_names))
    accuracy = np.mean(on_test["label"].to_numpy() == np.asarray(class_names)[data.test.labels])
    assert accuracy == pytest.approx(run.data.metrics["accuracy/test"], abs=1e-6)


@pytest.mark.unit
def test_predict_reads_thread_files_as_training_does(tmp_path):
    """A CSV's JSON message lists and a one-row-per-message file give the strings training builds from them."""
    from seqlab.data.texts import thread_text

    messages = [[{"speaker": "A", "text": "Hi there!"}, {"speaker": "B", "text": "Hello."}],
                [{"speaker": "A", "text": "Any plans?"}, {"speaker": "B", "text": "None."},
                 {"speaker": "A", "text": "Same."}]]
    pd.DataFrame({"id": ["t1", "t2"], "messages": [json.dumps(m) for m in messages]}).to_csv(
        tmp_path / "threads.csv", index=False)
    texts, ids = read_inputs(str(tmp_path / "threads.csv"), speaker_tokens=True)
    assert ids == ["t1", "t2"] and texts == [thread_text(m, speaker_tokens=True) for m in messages]
    assert texts[0].count("\n") == 1 and "xxspk" in texts[0]

    rows = [{"thread_id": tid, "speaker": m["speaker"], "text": m["text"], "age": age}
            for tid, thread, age in (("t2", messages[1], 30.0), ("t1", messages[0], 40.0)) for m in thread]
    pd.DataFrame(rows).to_csv(tmp_path / "per_message.csv", index=False)
    texts, ids, frame = read_examples(str(tmp_path / "per_message.csv"))
    assert ids == ["t2", "t1"]  # threads in file order, one prediction each
    assert texts == [thread_text(messages[1]), thread_text(messages[0])]
    assert read_metadata(frame, ["age"], "per_message.csv").ravel().tolist() == [30.0, 40.0]
