"""The Transformer encoders, subword units, learning-rate schedules and optimiser options, residual stacks.

Every registered model is also built, trained a step, saved and loaded by the parametrized tests of test_models.py,
test_pipeline.py and test_threads.py; ensembles are tested with the logged models of test_serving.py.
"""

import math

import keras
import numpy as np
import pytest
import tensorflow as tf
from mlflow.tracking import MlflowClient

from seqlab.workflow import train as train_module
from seqlab.training.callbacks import LEARNING_RATE
from seqlab.errors import ConfigError
from seqlab.models.catalog import build_model
from seqlab.training.optimizers import OneCycle, learning_rate_schedule, make_loss
from seqlab.features.preprocess import InputSpec, WordPreprocessor
from seqlab.features.wordpiece import pieces_of
from seqlab.training.optimizers import make_optimizer
from tests.conftest import compose_config, tiny_model

WORDS = [5, 6, 7, 8]


def transformer(*overrides, max_length=12):
    cfg = compose_config([*tiny_model("transformer"), "model.dropout=0.0", *overrides]).model
    keras.utils.set_random_seed(4)
    return build_model(cfg, InputSpec(vocab_size=40, sequence_shape=(None,), num_classes=3, mask_zero=True,
                                      max_length=max_length))


# --- Transformer -----------------------------------------------------------------------------------------

@pytest.mark.unit
@pytest.mark.parametrize("pooling", ["mean", "cls"])
def test_padding_never_changes_a_transformers_output_on_either_side_or_in_any_amount(pooling):
    model = transformer(f"model.pooling={pooling}", "model.layers=2")
    alone = np.asarray(model(np.array([WORDS])))
    for padded in ([WORDS + [0] * 8], [[0] * 8 + WORDS], [[0] * 3 + WORDS + [0] * 5]):
        assert np.allclose(model(np.array(padded)), alone, atol=1e-5), padded
    other = np.asarray(model(np.array([[8, 7, 6, 5]])))  # ...while the words and their order do count
    assert not np.allclose(other, alone, atol=1e-4)


@pytest.mark.unit
def test_a_transformer_has_the_blocks_and_widths_it_is_configured_with():
    model = transformer("model.layers=3", "model.embedding_dim=8", "model.heads=2", "model.ff_dim=16")
    blocks = [layer for layer in model.layers if layer.name.startswith("encoder_")]
    assert len(blocks) == 3
    assert blocks[0].attention.num_heads == 2 and blocks[0].feed_forward.units == 16
    assert model.get_layer("embedding").output_dim == 8


@pytest.mark.unit
def test_heads_that_do_not_divide_the_width_are_a_config_error_naming_both_keys():
    with pytest.raises(ConfigError, match=r"model\.heads' is 3,.*width 8 \(model\.embedding_dim\)"):
        transformer("model.embedding_dim=8", "model.heads=3")
    with pytest.raises(ConfigError, match=r"model\.pooling"):
        from seqlab.config.validate import validate

        validate(compose_config(["model=transformer", "model.pooling=max"]))


# --- subword units ---------------------------------------------------------------------------------------

TRAIN = ["the film was wonderful and moving", "a wonderful cast in a moving story", "the story was boring",
         "boring and slow, the cast was wasted", "watching it was a pleasure", "unwatchable and boring"] * 4


def subword(vocab_size=100, **keys):
    cfg = compose_config(["preprocess=subword", f"preprocess.vocab_size={vocab_size}", "preprocess.max_length=16",
                          *(f"preprocess.{k}={v}" for k, v in keys.items())]).preprocess
    return WordPreprocessor(cfg).fit(TRAIN)


@pytest.mark.unit
def test_a_subword_vocabulary_is_learned_from_the_training_texts_only_and_covers_unseen_words():
    preprocessor = subword()
    vocabulary = preprocessor.vectorizer.get_vocabulary()
    assert vocabulary[:2] == ["", "[UNK]"] and len(vocabulary) <= 100
    assert "wonderful" in vocabulary  # frequent training words stay whole
    pieces = pieces_of(preprocessor.vectorizer, "Wonderfully watchable!")  # words training never saw
    assert "[UNK]" not in pieces and pieces[0] == "wonderful" and all(p.startswith("##") for p in pieces[1:2])
    assert "".join(p.removeprefix("##") for p in pieces) == "wonderfullywatchable"
    ids = preprocessor.encode(["Wonderfully watchable!", ""])
    assert ids.shape == (2, 16) and (ids[1] == 0).all()  # pre padding, as preprocess=words pads
    assert (ids[0, :16 - len(pieces)] == 0).all() and (ids[0, 16 - len(pieces):] > 1).all()


@pytest.mark.unit
def test_the_in_model_split_is_the_greedy_longest_match_that_huggingface_tokenizers_makes():
    from tokenizers import Tokenizer, models, pre_tokenizers

    layer = subword(vocab_size=45).vectorizer
    vocabulary = layer.get_vocabulary()
    reference = Tokenizer(models.WordPiece({piece: i for i, piece in enumerate(vocabulary[1:])}, unk_token="[UNK]"))
    reference.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    for text in [*TRAIN[:6], "wastefulness and pleasures", "moviegoers"]:
        assert pieces_of(layer, text) == reference.encode(text.replace(",", " ")).tokens, text


@pytest.mark.unit
def test_a_character_no_piece_covers_becomes_unknown_alone():
    pieces = pieces_of(subword().vectorizer, "boringжstory")  # a letter no training text has
    assert pieces.count("[UNK]") == 1 and pieces[0] == "boring"


# --- schedules, optimisers, label smoothing ------------------------------------------------------------

def trainer(**keys):
    return compose_config([f"trainer.{k}={v}" for k, v in keys.items()]).trainer


@pytest.mark.unit
def test_warmup_cosine_rises_linearly_then_falls_as_half_a_cosine():
    schedule = learning_rate_schedule(trainer(schedule="warmup_cosine", learning_rate=0.01, warmup=0.1, epochs=2),
                                      steps_per_epoch=50)  # 100 steps, 10 of warmup
    values = {step: float(schedule(step)) for step in (0, 5, 10, 55, 100)}
    assert values[0] == 0 and values[5] == pytest.approx(0.005) and values[10] == pytest.approx(0.01)
    assert values[55] == pytest.approx(0.005, abs=1e-6) and values[100] == pytest.approx(0, abs=1e-9)


@pytest.mark.unit
def test_one_cycle_starts_at_a_25th_peaks_after_warmup_and_ends_near_zero():
    schedule = learning_rate_schedule(trainer(schedule="one_cycle", learning_rate=0.01, warmup=0.25, epochs=4),
                                      steps_per_epoch=25)  # 100 steps: 25 up, 74 down
    assert isinstance(schedule, OneCycle)
    assert float(schedule(0)) == pytest.approx(0.0004, rel=1e-5)
    assert float(schedule(25)) == pytest.approx(0.01, rel=1e-5)
    assert float(schedule(25 + 37)) == pytest.approx((0.01 + 0.0004e-4) / 2, rel=1e-4)
    assert float(schedule(99)) == pytest.approx(0.0004e-4, rel=1e-3)
    assert keras.optimizers.schedules.deserialize(keras.optimizers.schedules.serialize(schedule)).get_config() == \
        schedule.get_config()
    assert learning_rate_schedule(trainer(learning_rate=0.003), steps_per_epoch=10) == 0.003  # constant: a float


@pytest.mark.unit
def test_label_smoothing_moves_the_targets_towards_uniform():
    probabilities = np.array([[0.7, 0.2, 0.1], [0.1, 0.1, 0.8]], np.float32)
    labels = np.array([0, 2])
    smoothed = np.eye(3)[labels] * 0.8 + 0.2 / 3
    expected = -(smoothed * np.log(probabilities)).sum(axis=1).mean()
    assert float(make_loss(3, 0.2)(labels, probabilities)) == pytest.approx(expected, rel=1e-5)
    binary = float(make_loss(2, 0.2)(np.array([[1.0]]), np.array([[0.9]], np.float32)))
    assert binary == pytest.approx(-(0.9 * math.log(0.9) + 0.1 * math.log(0.1)), rel=1e-4)
    assert make_loss(3) == "sparse_categorical_crossentropy" and make_loss(2) == "binary_crossentropy"


@pytest.mark.unit
def test_weight_decay_is_decoupled_and_adamw_keeps_its_default_when_null():
    decayed = make_optimizer(trainer(optimizer="adam", weight_decay=0.1))
    assert decayed.weight_decay == 0.1
    assert make_optimizer(trainer(optimizer="adamw")).weight_decay == pytest.approx(0.004)
    with pytest.raises(ConfigError, match="trainer.schedule"):
        from seqlab.config.validate import validate

        validate(compose_config(["trainer.schedule=step"]))


@pytest.mark.slow
def test_a_scheduled_run_records_its_optimiser_and_the_learning_rate_of_every_epoch(real_data_dir, tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    cfg = compose_config([f"data_dir={real_data_dir}", "debug=tiny", "model=gru", "model.layers=2",
                          "model.residual=true", "trainer.epochs=2", "trainer.batch_size=50",
                          "trainer.schedule=one_cycle", "trainer.optimizer=adamw", "trainer.weight_decay=0.05",
                          "trainer.label_smoothing=0.1", "trainer.learning_rate=0.01", "tracking.log_model=false",
                          "trainer.checkpoint=false", f"tracking.uri={uri}", "tracking.experiment=schedules"])
    train_module.train(cfg)
    client = MlflowClient(uri)
    [run] = client.search_runs([client.get_experiment_by_name("schedules").experiment_id])
    params = run.data.params
    assert (params["trainer.schedule"], params["trainer.optimizer"], params["trainer.weight_decay"],
            params["trainer.label_smoothing"], params["model.residual"]) == ("one_cycle", "adamw", "0.05", "0.1", "True")
    steps_per_epoch = math.ceil(180 / 50)  # debug=tiny's 200 examples less the 10% validation split
    expected = OneCycle(0.01, 2 * steps_per_epoch, warmup=cfg.trainer.warmup)
    history = sorted(client.get_metric_history(run.info.run_id, LEARNING_RATE), key=lambda m: m.step)
    assert [m.step for m in history] == [0, 1]
    assert [m.value for m in history] == pytest.approx([float(expected((e + 1) * steps_per_epoch)) for e in (0, 1)])


# --- residual stacks ---------------------------------------------------------------------------------------

@pytest.mark.integration
@pytest.mark.parametrize("name", ["stacked_lstm", "gru"])
def test_residual_stacks_add_each_layers_input_and_still_ignore_post_padding(name, tmp_path):
    cfg = compose_config([*tiny_model(name), "model.layers=3", "model.residual=true"]).model
    spec = InputSpec(vocab_size=40, sequence_shape=(None,), num_classes=2, mask_zero=True)
    model = build_model(cfg, spec)
    prefix = name.removeprefix("stacked_")
    assert [layer.name for layer in model.layers if isinstance(layer, keras.layers.Add)] == [
        f"{prefix}_2_residual", f"{prefix}_3_residual"]
    padded = np.array([WORDS + [0] * 8])
    last_input = keras.Model(model.input, model.get_layer(f"{prefix}_3_input_last").output)
    previous = keras.Model(model.input, model.get_layer(f"{prefix}_2_residual").output)
    assert np.allclose(last_input(padded), np.asarray(previous(padded))[:, len(WORDS) - 1], atol=1e-6)  # last word
    model.compile(optimizer="adam", loss="binary_crossentropy")
    model.train_on_batch(np.repeat(padded, 4, axis=0), np.array([0, 1, 0, 1]))
    model.save(tmp_path / "model.keras")
    loaded = keras.saving.load_model(tmp_path / "model.keras")
    assert np.allclose(loaded(padded), model(padded), atol=1e-6)
    assert np.allclose(model(padded), model(np.array([WORDS])), atol=1e-6)


@pytest.mark.unit
def test_tensorflow_is_the_only_tokenizer_at_prediction_time():
    """The logged subword model needs no Python tokenizer: the split is TensorFlow ops in the saved model."""
    layer = subword().vectorizer
    graph = tf.function(layer).get_concrete_function(tf.TensorSpec([None], tf.string)).graph
    assert {op.type for op in graph.get_operations()} & {"PyFunc", "EagerPyFunc"} == set()
