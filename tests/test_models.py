"""Model registry, the tutorial models' exact sizes, and every flat architecture: one training step, saving
with its preprocessing, outputs and losses for 2 and 8 classes, and masking."""

import keras
import numpy as np
import pytest

from seqlab.models.catalog import MODELS, build_model
from seqlab.models.layers import loss_for
from seqlab.features.preprocess import InputSpec, WordPreprocessor
from seqlab.training.optimizers import make_optimizer
from tests.conftest import FLAT_MODELS, compose_config, tiny_model

# The architectures the tutorial and the README promise; the parametrized tests take every registered model.
PROMISED = ["lstm", "lstm_dropout", "lstm_recurrent_dropout", "cnn_lstm", "bilstm", "gru", "stacked_lstm",
            "lstm_no_embedding", "attention_bilstm", "fasttext_bigram"]
# Models that read both ends of the sequence (or average it) mask padding whichever side it is on.
ALWAYS_MASKED = [name for name in FLAT_MODELS if MODELS[name].masks_padding]
TEXTS = ["a wonderful film with great acting", "a terrible film with awful acting", "loved it", "hated it",
         "great story", "boring and dull"]


def spec(num_classes=2, mask_zero=False, max_length=500):
    return InputSpec(vocab_size=5000, sequence_shape=(max_length,), num_classes=num_classes, mask_zero=mask_zero)


@pytest.mark.unit
def test_tutorial_lstm_has_213301_parameters():
    model = build_model(compose_config().model, spec())
    assert model.count_params() == 213_301
    assert [type(layer).__name__ for layer in model.layers] == ["InputLayer", "Embedding", "LSTM", "Dense"]


@pytest.mark.unit
def test_every_registered_model_has_a_config_file():
    from seqlab.config.compose import config_dir

    files = {p.stem for p in (config_dir() / "model").glob("*.yaml")}
    assert set(MODELS) <= files


@pytest.mark.unit
@pytest.mark.parametrize("name", FLAT_MODELS)
def test_output_and_loss_follow_the_number_of_classes(name):
    keras.utils.set_random_seed(0)  # the initial weights, whatever ran before in this process
    cfg = compose_config(tiny_model(name, {"units": 8, "embedding_dim": 4, "ngram_buckets": 64})).model
    tokens = np.random.default_rng(0).integers(0, 5000, size=(3, 20))
    binary_model, multi_model = build_model(cfg, spec(2, max_length=20)), build_model(cfg, spec(8, max_length=20))
    binary, multi = np.asarray(binary_model(tokens)), np.asarray(multi_model(tokens))
    assert binary.shape == (3, 1) and np.all((binary > 0) & (binary < 1)) and loss_for(2) == "binary_crossentropy"
    assert multi.shape == (3, 8) and np.allclose(multi.sum(axis=1), 1, atol=1e-5)
    assert loss_for(8) == "sparse_categorical_crossentropy"
    # the losses accept these outputs with integer labels: about log 2 and log 8 before training
    binary_model.compile(loss=loss_for(2))
    multi_model.compile(loss=loss_for(8))
    binary_loss = binary_model.compute_loss(tokens, np.array([0, 1, 1]), binary)
    multi_loss = multi_model.compute_loss(tokens, np.array([0, 5, 7]), multi)
    assert abs(float(binary_loss) - np.log(2)) < 0.3 and abs(float(multi_loss) - np.log(8)) < 0.5


@pytest.mark.unit
def test_post_padding_is_masked():
    """With post padding, padding positions do not change the output: 3 words + 9 pads == 3 words alone."""
    cfg = compose_config(["model.units=8", "model.embedding_dim=4"]).model
    masked = build_model(cfg, spec(2, mask_zero=True, max_length=12))
    alone = build_model(cfg, spec(2, mask_zero=False, max_length=3))
    unmasked = build_model(cfg, spec(2, mask_zero=False, max_length=12))
    alone.set_weights(masked.get_weights())
    unmasked.set_weights(masked.get_weights())
    padded = np.array([[5, 6, 7] + [0] * 9])
    three = np.array([[5, 6, 7]])
    assert np.allclose(masked(padded), alone(three), atol=1e-6)
    assert not np.allclose(unmasked(padded), alone(three), atol=1e-6)  # without the mask, padding leaks in


def tiny_model_config(name, *overrides):
    return compose_config([*tiny_model(name), *overrides]).model


@pytest.mark.unit
def test_every_flat_architecture_is_registered():
    assert set(PROMISED) <= set(FLAT_MODELS)
    assert {"bilstm", "attention_bilstm", "fasttext_bigram", "transformer"} <= set(ALWAYS_MASKED)


@pytest.mark.unit
def test_tutorial_variants_keep_the_tutorials_shapes():
    assert build_model(compose_config(["model=cnn_lstm"]).model, spec()).count_params() == 216_405
    dropout = build_model(compose_config(["model=lstm_dropout"]).model, spec())
    assert [type(layer).__name__ for layer in dropout.layers] == ["InputLayer", "Embedding", "Dropout", "Dropout",
                                                                  "LSTM", "Dropout", "Dense"]
    assert dropout.get_layer("word_dropout").noise_shape == (None, None, 1)  # whole word vectors
    recurrent = build_model(compose_config(["model=lstm_recurrent_dropout"]).model, spec()).get_layer("lstm")
    assert (recurrent.dropout, recurrent.recurrent_dropout, recurrent.units) == (0.2, 0.2, 100)
    stacked = build_model(compose_config(["model=stacked_lstm", "model.layers=3"]).model, spec())
    lstms = [layer for layer in stacked.layers if isinstance(layer, keras.layers.LSTM)]
    assert [layer.return_sequences for layer in lstms] == [True, True, False]
    assert any(isinstance(layer, keras.layers.GRU) for layer in build_model(compose_config(["model=gru"]).model,
                                                                            spec()).layers)
    bilstm = build_model(compose_config(["model=bilstm"]).model, spec()).get_layer("bilstm")
    assert isinstance(bilstm, keras.layers.Bidirectional) and bilstm.forward_layer.units == 64
    no_embedding = build_model(compose_config(["model=lstm_no_embedding"]).model, spec())
    assert not any(isinstance(layer, keras.layers.Embedding) for layer in no_embedding.layers)


@pytest.mark.integration
@pytest.mark.parametrize("name", FLAT_MODELS)
def test_each_model_trains_one_step_and_saves_with_its_preprocessing(name, tmp_path):
    cfg = compose_config([*tiny_model(name), "preprocess.vocab_size=40", "preprocess.max_length=8",
                          "preprocess.padding=post", "trainer.clipnorm=1.0"])
    preprocessor = WordPreprocessor(cfg.preprocess).fit(TEXTS)
    model = build_model(cfg.model, spec(2, mask_zero=True, max_length=8))
    optimizer = make_optimizer(cfg.trainer)
    assert optimizer.clipnorm == 1.0
    model.compile(optimizer=optimizer, loss=loss_for(2), run_eagerly=True)  # eager: no tracing for one step
    tokens = preprocessor.encode(TEXTS)
    before = [weight.copy() for weight in model.get_weights()]
    loss = model.train_on_batch(tokens, np.arange(len(TEXTS)) % 2)
    assert np.isfinite(loss)
    assert any(not np.allclose(a, b) for a, b in zip(before, model.get_weights()))  # the step changed weights

    # as train.log_model logs it: raw strings in, probabilities out; loads back in Keras' safe mode
    text = keras.Input(shape=(), dtype="string", name="text")
    end_to_end = keras.Model(text, model(preprocessor.apply(text)))
    end_to_end.save(tmp_path / "model.keras")
    loaded = keras.saving.load_model(tmp_path / "model.keras")
    strings = keras.ops.convert_to_tensor(TEXTS + ["an unseen review"])
    expected = np.asarray(end_to_end(strings))
    assert expected.shape == (len(TEXTS) + 1, 1)
    assert np.allclose(loaded(strings), expected, atol=1e-6)


def same_output_with_and_without_padding(name, padding):
    """Output for 4 words + 8 padding ids against the same weights on the 4 words alone."""
    cfg = tiny_model_config(name)
    padded_model = build_model(cfg, spec(2, mask_zero=padding == "post", max_length=12))
    alone_model = build_model(cfg, spec(2, mask_zero=padding == "post", max_length=4))
    alone_model.set_weights(padded_model.get_weights())
    words = [5, 6, 7, 8]
    padded = np.array([words + [0] * 8] if padding == "post" else [[0] * 8 + words])
    return np.allclose(padded_model(padded), alone_model(np.array([words])), atol=1e-6)


@pytest.mark.unit
@pytest.mark.parametrize("name", FLAT_MODELS)
def test_padding_positions_do_not_change_the_output(name):
    assert same_output_with_and_without_padding(name, "post")
    if name in ALWAYS_MASKED:
        assert same_output_with_and_without_padding(name, "pre")


@pytest.mark.unit
@pytest.mark.parametrize("name", FLAT_MODELS)
def test_a_text_without_words_gets_a_finite_answer(name):
    """An empty or all-punctuation text is all padding: the answer must still be probabilities, not NaN."""
    model = build_model(tiny_model_config(name), spec(2, mask_zero=True, max_length=6))
    assert np.isfinite(model(np.zeros((2, 6), np.int32))).all()


@pytest.mark.unit
def test_unmasked_pre_padding_leaks_into_the_tutorial_models():
    """Pre padding keeps the tutorial's unmasked models (and cuDNN): there the padding does count."""
    assert not same_output_with_and_without_padding("lstm", "pre")
    assert not same_output_with_and_without_padding("cnn_lstm", "pre")


@pytest.mark.unit
def test_attention_weights_are_a_distribution_over_the_words_only():
    model = build_model(tiny_model_config("attention_bilstm"), spec(2, max_length=10))
    probe = keras.Model(model.input, model.get_layer("attention_weights").output)
    tokens = np.array([[0, 0, 0, 4, 9, 2, 7, 3, 3, 1], [6, 2, 0, 0, 0, 0, 0, 0, 0, 0]])
    weights = np.asarray(probe(tokens))[..., 0]
    assert np.allclose(weights.sum(axis=1), 1, atol=1e-6)
    assert np.all(weights[tokens == 0] == 0) and np.all(weights[tokens != 0] > 0)


@pytest.mark.unit
def test_fasttext_bigrams_see_word_order_and_unigrams_do_not():
    tokens = np.array([[3, 9, 4, 0, 0], [4, 9, 3, 0, 0]])  # the same words, reversed

    def outputs(buckets):
        cfg = tiny_model_config("fasttext_bigram", f"model.ngram_buckets={buckets}")
        model = build_model(cfg, spec(2, max_length=5))
        return np.asarray(model(tokens))[:, 0]

    unigrams, bigrams = outputs(0), outputs(64)
    assert np.isclose(unigrams[0], unigrams[1], atol=1e-6)
    assert not np.isclose(bigrams[0], bigrams[1], atol=1e-6)
    assert compose_config(["model=fasttext_bigram"]).model.ngram_buckets == 2**20
    model = build_model(tiny_model_config("fasttext_bigram", "model.ngram_buckets=100"), spec())
    assert model.get_layer("embedding").input_dim == 5000 + 100  # word rows, then bigram rows


@pytest.mark.unit
def test_fasttext_trigrams_see_what_bigrams_cannot():
    # the same words and the same word pairs, in a different order: only a trigram tells them apart
    tokens = np.array([[1, 2, 1, 3, 1, 0], [1, 3, 1, 2, 1, 0]])

    def outputs(ngrams):
        cfg = tiny_model_config("fasttext_bigram", "model.ngram_buckets=4096", f"model.ngrams={ngrams}")
        model = build_model(cfg, spec(2, max_length=6))
        ids = keras.Model(model.input, model.get_layer("embedding").input)(tokens)
        return np.asarray(model(tokens))[:, 0], np.asarray(ids)

    (bigrams, bigram_ids), (trigrams, trigram_ids) = outputs(2), outputs(3)
    assert np.isclose(bigrams[0], bigrams[1], atol=1e-6)
    assert not np.isclose(trigrams[0], trigrams[1], atol=1e-6)
    # 6 word ids, 5 bigram ids, 4 trigram ids; n-grams touching padding are 0 (masked)
    assert bigram_ids.shape == (2, 11) and trigram_ids.shape == (2, 15)
    assert np.count_nonzero(trigram_ids[0, 11:]) == 3 and trigram_ids[0, -1] == 0
    assert np.array_equal(trigram_ids[:, :11], bigram_ids)


@pytest.mark.unit
def test_word_dropout_drops_whole_word_vectors():
    model = build_model(tiny_model_config("lstm_dropout", "model.embedding_dropout=0.5"), spec(2, max_length=50))
    embedded = model.get_layer("embedding")(np.arange(1, 51)[None, :])
    dropped = np.asarray(model.get_layer("word_dropout")(embedded, training=True))[0]
    zero_rows = np.all(dropped == 0, axis=1)
    assert 5 < zero_rows.sum() < 45  # some words dropped, some kept
    assert np.allclose(dropped[~zero_rows], 2 * np.asarray(embedded)[0][~zero_rows], atol=1e-6)


@pytest.mark.unit
def test_flat_models_refuse_hierarchical_inputs():
    from seqlab.errors import ConfigError

    hierarchical = InputSpec(vocab_size=50, sequence_shape=(4, 6), num_classes=2, mask_zero=True)
    with pytest.raises(ConfigError, match="preprocess=words"):
        build_model(tiny_model_config("bilstm"), hierarchical)


@pytest.mark.integration
def test_rating_target_trains_an_eight_class_model(tiny_aclimdb, tracking_uri):
    import mlflow
    from mlflow.tracking import MlflowClient

    from seqlab.workflow.train import train

    cfg = compose_config([f"dataset.path={tiny_aclimdb}", "dataset.target=rating", "debug=tiny", "model=cnn_lstm",
                          "preprocess.padding=post", "tracking.log_model=false", f"tracking.uri={tracking_uri}"])
    train(cfg)
    client = MlflowClient(tracking_uri)
    [run] = client.search_runs([client.get_experiment_by_name("imdb").experiment_id])
    assert run.info.status == "FINISHED"
    assert 0 <= run.data.metrics["f1_macro/test"] <= 1 and "roc_auc/test" not in run.data.metrics  # 8 classes
    report = open(mlflow.artifacts.download_artifacts(run_id=run.info.run_id, artifact_path="classification_report.txt",
                                                      tracking_uri=tracking_uri)).read()
    assert all(f"\n{rating:>12}" in report for rating in ("1", "4", "7", "10"))


def _two_adam_steps(optimizer, ids_per_step, densify=False):
    """An embedding trained on the given word ids, a step per list: (weights, gradient type of the table).

    `densify` hands the optimizer the dense gradient (Keras' Adam squares the sparse gradient's slices before
    summing a repeated word's, which is not Adam)."""
    import tensorflow as tf

    from seqlab.models.layers import RowGatherEmbedding

    keras.utils.set_random_seed(0)
    embedding = RowGatherEmbedding(10, 3)
    embedding.build((None, None))
    optimizer.build(embedding.trainable_variables)
    for ids in ids_per_step:
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(tf.square(embedding(tf.constant([ids])) - 1.0))
        gradients = tape.gradient(loss, embedding.trainable_variables)
        gradient_type = type(gradients[0]).__name__
        gradients = [tf.convert_to_tensor(g) for g in gradients] if densify else gradients
        optimizer.apply_gradients(zip(gradients, embedding.trainable_variables))
    return np.asarray(embedding.embeddings), gradient_type if ids_per_step else None


@pytest.mark.unit
def test_lazy_adam_matches_adam_on_rows_it_sees_and_leaves_the_others_alone():
    from seqlab.training.optimizers import LazyAdam

    every_row = [list(range(10)) + [3, 3], list(range(10))]  # duplicates are summed, as Adam sums them
    lazy, gradient_type = _two_adam_steps(LazyAdam(learning_rate=0.1), every_row)
    dense, _ = _two_adam_steps(keras.optimizers.Adam(learning_rate=0.1), every_row, densify=True)
    assert gradient_type == "IndexedSlices"  # the lookup keeps the gradient sparse
    np.testing.assert_allclose(lazy, dense, rtol=1e-5, atol=1e-6)

    initial, _ = _two_adam_steps(LazyAdam(learning_rate=0.1), [])
    lazy, _ = _two_adam_steps(LazyAdam(learning_rate=0.1), [[1, 2], [2]])
    dense, _ = _two_adam_steps(keras.optimizers.Adam(learning_rate=0.1), [[1, 2], [2]], densify=True)
    assert not np.allclose(dense[1], lazy[1])  # Adam's momentum moves row 1 in step 2; lazy Adam does not
    np.testing.assert_array_equal(lazy[5:], initial[5:])  # rows never seen are never written


@pytest.mark.integration
def test_lazy_adam_is_a_trainer_optimizer_and_fasttext_trains_with_it():
    cfg = compose_config(["model=fasttext_bigram", "model.ngram_buckets=64", "trainer.optimizer=lazy_adam"])
    model = build_model(cfg.model, spec(2, mask_zero=True, max_length=8))
    model.compile(optimizer=make_optimizer(cfg.trainer), loss=loss_for(2))
    tokens = np.array([[5, 6, 7, 0, 0, 0, 0, 0], [9, 8, 0, 0, 0, 0, 0, 0]] * 8)
    labels = np.array([1, 0] * 8)
    before = model.evaluate(tokens, labels, verbose=0)
    model.fit(tokens, labels, epochs=20, batch_size=4, verbose=0)
    assert model.evaluate(tokens, labels, verbose=0) < before - 0.05


@pytest.mark.slow
def test_a_model_compiled_with_lazy_adam_loads_in_a_fresh_process(tmp_path):
    """The logged model's loader (seqlab.serving.pyfunc._load_pyfunc) imports seqlab's layers and
    preprocessing only; the saved inner network names its optimizer, LazyAdam."""
    import subprocess
    import sys

    cfg = compose_config(["model=fasttext_bigram", "model.ngram_buckets=64", "trainer.optimizer=lazy_adam",
                          "preprocess.vocab_size=40", "preprocess.max_length=8", "preprocess.padding=post"])
    preprocessor = WordPreprocessor(cfg.preprocess).fit(TEXTS)
    model = build_model(cfg.model, spec(2, mask_zero=True, max_length=8))
    model.compile(optimizer=make_optimizer(cfg.trainer), loss=loss_for(2))
    model.train_on_batch(preprocessor.encode(TEXTS), np.arange(len(TEXTS)) % 2)
    text = keras.Input(shape=(), dtype="string", name="text")
    keras.Model(text, model(preprocessor.apply(text))).save(tmp_path / "model.keras")
    script = ("import keras, seqlab.serving.keras_objects; "
              f"m = keras.saving.load_model({str(tmp_path / 'model.keras')!r}, safe_mode=True); "
              "print(m.predict(keras.ops.convert_to_tensor(['loved it']), verbose=0).shape)")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-800:]
    assert done.stdout.strip().endswith("(1, 1)")
