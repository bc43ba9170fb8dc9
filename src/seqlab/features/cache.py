"""The tokenized-data cache: tokenizing 50,000 reviews takes seconds, so the encoded splits and the fitted vocabulary\nare kept on disk under the cache dir, keyed by what the encoding depends on, and a sweep's later runs load them."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
import zipfile
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf
from omegaconf import OmegaConf

import seqlab
from seqlab.data.common import cache_root
from seqlab.features.preprocess import make_preprocessor

log = logging.getLogger(__name__)


def encode_splits(features, data) -> tuple[object, list[np.ndarray], bool]:
    """(fitted preprocessor, [train, validation, test] word ids, whether they came from the cache), for `features`
    (the plan's FeaturePlan).

    The key covers everything the encoding depends on: the texts of every split (so the data files, the
    dataset options and the seed, through the sampling they select), the preprocess config and the
    seqlab/TensorFlow versions. The fitted vocabulary is cached too, so a cached run logs the same model.
    """
    preprocessor = make_preprocessor(features.preprocess)
    splits = (data.train, data.validation, data.test)
    if not hasattr(preprocessor, "vectorizer"):  # fitted state other than a vocabulary: not cacheable here
        preprocessor.fit(data.train.texts)
        return preprocessor, [preprocessor.encode(split.texts) for split in splits], False
    path = cache_root(features.cache_dir) / "tokens" / f"{cache_key(features.preprocess, splits)}.npz"
    cached = _read(path)
    if cached is not None:
        vocabulary, arrays = cached
        preprocessor.vectorizer.set_vocabulary(vocabulary)
        return preprocessor, arrays, True
    preprocessor.fit(data.train.texts)
    arrays = [preprocessor.encode(split.texts) for split in splits]
    _write(path, preprocessor.vectorizer.get_vocabulary(), arrays, features.preprocess.vocab_size)
    return preprocessor, arrays, False


def cache_key(preprocess_cfg, splits) -> str:
    digest = hashlib.sha256(json.dumps({
        "seqlab": seqlab.__version__, "tensorflow": tf.__version__, "keras": keras.__version__,
        "preprocess": OmegaConf.to_container(preprocess_cfg, resolve=True)}, sort_keys=True).encode())
    for split in splits:
        digest.update(f"|{len(split.texts)}|".encode())
        digest.update("\x00".join(split.texts).encode("utf-8", "surrogatepass"))
    return digest.hexdigest()[:24]


SPLITS = ("train", "validation", "test")


def _read(path: Path):
    """(vocabulary, arrays) from a cache file, or None when it is missing or unreadable (then rewritten)."""
    if not path.exists():
        return None
    try:
        with np.load(path) as stored:
            vocabulary = json.loads(stored["vocabulary"].tobytes().decode("utf-8"))
            return vocabulary, [stored[name].astype(np.int32) for name in SPLITS]
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
        return None


def _write(path: Path, vocabulary: list[str], arrays: list[np.ndarray], vocab_size: int) -> None:
    """Written to a temporary file and renamed: parallel sweep jobs never read half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    dtype = np.uint16 if vocab_size <= np.iinfo(np.uint16).max else np.int32  # halves the file for the usual sizes
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=".tokens-", suffix=".npz")
    try:
        with os.fdopen(handle, "wb") as file:
            np.savez(file, vocabulary=np.frombuffer(json.dumps(vocabulary).encode("utf-8"), np.uint8),
                     **{name: array.astype(dtype) for name, array in zip(SPLITS, arrays)})
        os.chmod(temporary, 0o644)  # mkstemp makes it private; the cache is as readable as its folder
        os.replace(temporary, path)
    except OSError as error:  # a full or read-only cache costs the next run time, never this run
        Path(temporary).unlink(missing_ok=True)
        log.warning(f"could not write the tokenized-data cache {path}: {error}")
