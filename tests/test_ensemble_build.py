"""The ensemble's network nests its members under names of their own: two members of one architecture (two LSTM
runs, whose logged networks are both called `lstm_on_text`) make one model."""

from types import SimpleNamespace

import keras
import numpy as np
import pytest

from seqlab.workflow.ensemble import build_ensemble

pytestmark = pytest.mark.unit


def text_member(positive_words: list[str]):
    """A member as seqlab logs one: raw strings in, P(positive) out, named as every logged LSTM is."""
    text = keras.Input(shape=(), dtype="string", name="text")
    ids = keras.layers.StringLookup(vocabulary=["good", "bad"])(text)
    one_hot = keras.layers.CategoryEncoding(num_tokens=3, output_mode="one_hot")(ids)
    probability = keras.layers.Dense(1, activation="sigmoid")(one_hot)
    network = keras.Model(text, probability, name="lstm_on_text")
    weights = np.array([[0.0], [2.0 if "good" in positive_words else -2.0], [-2.0]], np.float32)
    network.layers[-1].set_weights([weights, np.zeros(1, np.float32)])
    return SimpleNamespace(classifier=SimpleNamespace(model=network, metadata_columns=[]))


def test_two_members_of_one_architecture_make_one_ensemble_of_their_mean():
    members = [text_member(["good"]), text_member([])]
    network, columns = build_ensemble(members)
    texts = np.array(["good", "bad"], dtype=object)
    expected = np.mean([m.classifier.model.predict(texts, verbose=0) for m in members], axis=0)
    assert columns == [] and np.allclose(network.predict(texts, verbose=0), expected, atol=1e-6)
    assert {layer.name for layer in network.layers} >= {"member_1", "member_2"}
