"""Model registry and the tutorial model's exact size."""

import numpy as np

from seqlab.models import MODEL_BUILDERS, build_model, loss_for
from seqlab.preprocess import InputSpec
from tests.conftest import compose_config


def spec(num_classes=2, mask_zero=False, max_length=500):
    return InputSpec(vocab_size=5000, sequence_shape=(max_length,), num_classes=num_classes, mask_zero=mask_zero)


def test_tutorial_lstm_has_213301_parameters():
    model = build_model(compose_config().model, spec())
    assert model.count_params() == 213_301
    assert [type(layer).__name__ for layer in model.layers] == ["InputLayer", "Embedding", "LSTM", "Dense"]


def test_every_registered_model_has_a_config_file():
    from seqlab.cli import config_dir

    files = {p.stem for p in (config_dir() / "model").glob("*.yaml")}
    assert set(MODEL_BUILDERS) <= files


def test_output_and_loss_follow_the_number_of_classes():
    cfg = compose_config(["model.units=8", "model.embedding_dim=4"]).model
    tokens = np.random.default_rng(0).integers(0, 5000, size=(3, 20))
    binary = build_model(cfg, spec(2, max_length=20))
    multi = build_model(cfg, spec(8, max_length=20))
    assert binary(tokens).shape == (3, 1) and loss_for(2) == "binary_crossentropy"
    out = np.asarray(multi(tokens))
    assert out.shape == (3, 8) and np.allclose(out.sum(axis=1), 1, atol=1e-5)
    assert loss_for(8) == "sparse_categorical_crossentropy"


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
