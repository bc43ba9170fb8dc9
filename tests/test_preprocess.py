"""Word ids: padding and truncating as pad_sequences does, vocabulary fitted on train only."""

import numpy as np
import pytest
from omegaconf import OmegaConf

from seqlab.features.preprocess import WordPreprocessor

pytestmark = pytest.mark.unit

TRAIN = ["one two three four five six", "one two", "Seven, eight!<br />nine"]


def encoder(padding, truncating, max_length=4):
    cfg = OmegaConf.create(dict(name="words", vocab_size=50, max_length=max_length, padding=padding,
                                truncating=truncating))
    return WordPreprocessor(cfg).fit(TRAIN)


def ids(pre, words):
    vocabulary = pre.vectorizer.get_vocabulary()
    return [vocabulary.index(w) for w in words]


@pytest.mark.parametrize("padding, truncating, long_words, short_row", [
    ("pre", "pre", ["three", "four", "five", "six"], lambda i: [0, 0, 0, i]),
    ("post", "post", ["one", "two", "three", "four"], lambda i: [i, 0, 0, 0]),
    ("pre", "post", ["one", "two", "three", "four"], lambda i: [0, 0, 0, i]),
    ("post", "pre", ["three", "four", "five", "six"], lambda i: [i, 0, 0, 0]),
])
def test_padding_and_truncating(padding, truncating, long_words, short_row):
    pre = encoder(padding, truncating)
    out = pre.encode(["one two three four five six", "two"])
    assert out.shape == (2, 4) and out.dtype == np.int32
    assert out[0].tolist() == ids(pre, long_words)
    assert out[1].tolist() == short_row(ids(pre, ["two"])[0])


def test_exact_length_and_empty_texts():
    pre = encoder("pre", "pre")
    out = pre.encode(["one two three four", ""])
    assert out[0].tolist() == ids(pre, ["one", "two", "three", "four"])
    assert out[1].tolist() == [0, 0, 0, 0]


def test_standardization_lowercases_and_strips_html_and_punctuation():
    pre = encoder("post", "post", max_length=6)
    vocabulary = pre.vectorizer.get_vocabulary()
    assert {"seven", "eight", "nine"} <= set(vocabulary)
    assert not any(("<" in w or "," in w or "!" in w) for w in vocabulary)
    assert "br" not in vocabulary


def test_vocabulary_comes_from_training_texts_only():
    pre = encoder("post", "post")
    out = pre.encode(["unseenword one"])
    assert out[0].tolist() == [1, ids(pre, ["one"])[0], 0, 0]  # 1 = out-of-vocabulary
    assert "unseenword" not in pre.vectorizer.get_vocabulary()
    assert pre.mask_zero and not encoder("pre", "pre").mask_zero


def test_unicode_line_separators_never_reach_the_saved_vocabulary(tmp_path):
    """A token holding U+2028 or U+0085 would split the vocabulary file on saving: the model must reload."""
    import keras

    cfg = OmegaConf.create(dict(name="words", vocab_size=50, max_length=5, padding="pre", truncating="pre"))
    texts = ["oh\u2028 oh\x85 oh\x1e oh\r\noh caf\u00e9\u00a0film", "oh\u2029 no"]
    pre = WordPreprocessor(cfg).fit(texts)
    vocabulary = pre.vectorizer.get_vocabulary()
    assert all(len(str(token).splitlines()) <= 1 for token in vocabulary)
    assert len(set(vocabulary)) == len(vocabulary) and "café" in vocabulary
    text = keras.Input(shape=(), dtype="string")
    model = keras.Model(text, pre.apply(text))
    model.save(tmp_path / "m.keras")
    reloaded = keras.saving.load_model(tmp_path / "m.keras")
    sample = np.asarray(texts, dtype=object)
    assert (reloaded.predict(sample, verbose=0) == model.predict(sample, verbose=0)).all()
