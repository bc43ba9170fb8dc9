"""`model.pretrained=`: word vectors (and a language model's LSTM) that initialise a model before fine-tuning.

A source is a `seqlab pretrain` run (`runs:/<id>`), a registered pretraining (`models:/<name>/<version>`), the
folder such a run logs, or a vectors file a user brings: GloVe `.txt` (no header line), word2vec text (a
"<words> <dimensions>" header) or binary (`.bin`), fastText `.vec` (word2vec text). gensim reads them all.

`initialise()` copies the vector of every word of the model's vocabulary (fitted on the training texts) that the
vectors know into the model's word embedding (flat models' `embedding`, the hier_* message encoder's), and an LSTM
pretrained as a language model into the first LSTM that reads those embeddings where the shapes match. Words the
vectors lack keep their random initial rows. Nothing here trains.
"""

from __future__ import annotations

import contextlib
import json
import logging
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from seqlab.errors import ConfigError, DataError

log = logging.getLogger(__name__)

FOLDER = "pretrained"  # the run artifact folder (and registered model data) a pretraining logs
VECTORS_FILE = "vectors.bin"  # word2vec binary: any word2vec/gensim tool reads it
LSTM_FILE = "lstm.npz"  # a language model's LSTM: forward_* (and backward_*) kernel, recurrent_kernel, bias
INFO_FILE = "pretrain.json"  # what was pretrained, on what, with which settings
LOADER_MODULE = "seqlab.pretraining"  # MLflow imports it to load the encoder model (its _load_pyfunc)
ENCODER_MODEL = "encoder"  # the logged MLflow model of a pretraining (registrable: models:/<name>/<version>)


@dataclass
class Pretrained:
    """Word vectors, optionally with a language model's LSTM weights, and where they came from."""

    words: list[str]
    vectors: np.ndarray  # (len(words), dim) float32
    source: str
    lstm: dict[str, np.ndarray] = field(default_factory=dict)  # {"forward": [k, rk, b], "backward": ...}
    info: dict = field(default_factory=dict)
    run_id: str | None = None  # the pretraining's MLflow run, when it came from one
    model_id: str | None = None  # its logged model (MLflow lineage)

    @property
    def dim(self) -> int:
        return int(self.vectors.shape[1])

    def index(self) -> dict[str, int]:
        return {word: i for i, word in enumerate(self.words)}


def resolve(value: str, tracking_uri: str | None = None) -> Pretrained:
    """The vectors `model.pretrained` names. Raises ConfigError for a source that cannot be found."""
    if value.startswith("runs:/") or value.startswith("models:/"):
        return _from_mlflow(value, tracking_uri)
    path = Path(value).expanduser()
    if not path.exists():
        raise ConfigError(f"Config key 'model.pretrained' is {value!r}, which is neither an existing file or folder nor "
                          "an MLflow URI. Expected 'pretrain' (the run's pretrain group, trained or reused), "
                          "runs:/<pretrain run id>, models:/<name>/<version>, or a vectors file (GloVe .txt, "
                          "word2vec .txt/.bin, fastText .vec).")
    if path.is_dir():
        return read_folder(path, source=str(path))
    return read_vectors(path)


def _from_mlflow(uri: str, tracking_uri: str | None) -> Pretrained:
    import mlflow
    from mlflow.exceptions import MlflowException

    run_id = None
    if uri.startswith("runs:/"):
        run_id = uri[len("runs:/"):].strip("/").split("/")[0]
        artifact = uri if uri.rstrip("/").count("/") > 1 else f"runs:/{run_id}/{FOLDER}"
    else:
        artifact = uri
        if tracking_uri:  # the registry lives in the tracking store (seqlab never sets another)
            mlflow.set_registry_uri(tracking_uri)
    with tempfile.TemporaryDirectory(prefix="seqlab-pretrained-") as scratch:
        try:
            local = Path(mlflow.artifacts.download_artifacts(artifact, dst_path=scratch, tracking_uri=tracking_uri))
        except (MlflowException, OSError) as error:
            first = (str(error).splitlines() or [type(error).__name__])[0]
            raise ConfigError(f"Config key 'model.pretrained' is {uri!r}, which MLflow cannot download: {first}. "
                              "Give a `seqlab pretrain` run as runs:/<run id>, a registered pretraining as "
                              "models:/<name>/<version>, or a vectors file.") from None
        folder = next((p.parent for p in local.rglob(INFO_FILE)), None)
        if folder is None:
            raise ConfigError(f"Config key 'model.pretrained' is {uri!r}, but it holds no {INFO_FILE}: it is not "
                              "what `seqlab pretrain` logs (runs:/<id> of a pretrain run, or its registered model).")
        pretrained = read_folder(folder, source=uri)
    pretrained.run_id = pretrained.info.get("run_id", run_id)
    if pretrained.run_id:  # lineage: the pretraining's logged model, which the training run records as its input
        try:
            tags = mlflow.MlflowClient(tracking_uri).get_run(pretrained.run_id).data.tags
            pretrained.model_id = tags.get("seqlab.pretrain_model_id")
        except MlflowException:  # a folder copied from another store: the run is not here
            pretrained.model_id = None
    return pretrained


def read_folder(folder: Path, source: str) -> Pretrained:
    """A pretraining's folder: vectors.bin, pretrain.json and, for a language model, lstm.npz."""
    info_path = folder / INFO_FILE
    info = json.loads(info_path.read_text()) if info_path.exists() else {}
    vectors = folder / VECTORS_FILE
    if not vectors.exists():
        raise ConfigError(f"'{folder}' holds no {VECTORS_FILE}; a pretraining folder has {VECTORS_FILE} and "
                          f"{INFO_FILE} (and {LSTM_FILE} for a language model).")
    pretrained = read_vectors(vectors)
    pretrained.source, pretrained.info = source, info
    lstm = folder / LSTM_FILE
    if lstm.exists():
        with np.load(lstm) as stored:
            for direction in ("forward", "backward"):
                if f"{direction}_kernel" in stored:
                    pretrained.lstm[direction] = [stored[f"{direction}_{name}"]
                                                  for name in ("kernel", "recurrent_kernel", "bias")]
    return pretrained


def read_vectors(path: Path) -> Pretrained:
    """GloVe, word2vec text or binary, or fastText .vec, by content: binary for `.bin`, else text with or without
    the "<count> <dimensions>" header line."""
    from gensim.models import KeyedVectors

    binary = path.suffix == ".bin"
    no_header = False if binary else not _has_header(path)
    try:
        with quiet_gensim():
            vectors = KeyedVectors.load_word2vec_format(str(path), binary=binary, no_header=no_header,
                                                        unicode_errors="replace")
    except (ValueError, EOFError, UnicodeDecodeError, IndexError) as error:
        what = "word2vec binary" if binary else ("GloVe text (word, then its numbers)" if no_header
                                                  else "word2vec/fastText text (a '<count> <dimensions>' line first)")
        raise DataError(f"Cannot read the vectors file '{path}' (model.pretrained) as {what}: {error}. Every line "
                        "must be a word followed by the same number of decimal numbers, separated by spaces.") from None
    if len(vectors) == 0:
        raise DataError(f"The vectors file '{path}' (model.pretrained) holds no vectors.")
    return Pretrained(list(vectors.index_to_key), np.asarray(vectors.vectors, np.float32), source=str(path))


@contextlib.contextmanager
def quiet_gensim():
    """gensim warns "attribute count not present" for vectors without word counts: they need none here."""
    gensim_log = logging.getLogger("gensim")
    level = gensim_log.level
    gensim_log.setLevel(logging.ERROR)
    try:
        yield
    finally:
        gensim_log.setLevel(level)


def _has_header(path: Path) -> bool:
    """word2vec text starts with "<count> <dimensions>"; GloVe starts with a word and its numbers."""
    import gzip

    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rt", encoding="utf-8", errors="replace") as file:
            first = file.readline().split()
    except OSError as error:
        raise DataError(f"Cannot read the vectors file '{path}' (model.pretrained): {error}.") from None
    if not first:
        raise DataError(f"The vectors file '{path}' (model.pretrained) is empty or starts with an empty line; "
                        "expected GloVe lines (word, numbers) or a word2vec '<count> <dimensions>' header.")
    return len(first) == 2 and all(part.isdigit() for part in first)


def write_folder(folder: Path, words: list[str], vectors: np.ndarray, info: dict,
                 lstm: dict[str, list[np.ndarray]] | None = None) -> Path:
    """What `seqlab pretrain` logs: vectors.bin (word2vec binary), pretrain.json, and lstm.npz for an LM."""
    from gensim.models import KeyedVectors

    folder.mkdir(parents=True, exist_ok=True)
    keyed = KeyedVectors(vectors.shape[1])
    keyed.add_vectors(words, vectors.astype(np.float32))
    with quiet_gensim():
        keyed.save_word2vec_format(str(folder / VECTORS_FILE), binary=True)
    (folder / INFO_FILE).write_text(json.dumps(info, indent=2, sort_keys=True))
    if lstm:
        np.savez(folder / LSTM_FILE, **{f"{direction}_{name}": array for direction, weights in lstm.items()
                                        for name, array in zip(("kernel", "recurrent_kernel", "bias"), weights)})
    return folder


# --- initialising a model ---------------------------------------------------------------------------------

@dataclass
class Initialised:
    """What `initialise()` did: the variables it set (for the fine-tuning schedule) and the coverage."""

    variables: list  # the Keras variables holding pretrained values
    found: int  # vocabulary words with a pretrained vector
    vocabulary: int  # words of the model's vocabulary (padding and [UNK] not counted)
    lstm: str  # which LSTM weights were set, or why none

    @property
    def coverage(self) -> float:
        return self.found / max(self.vocabulary, 1)


def embedding_layer(model):
    """The word embedding of a seqlab model: `embedding` (flat models) or the message encoder's."""
    for layer in model.layers:
        if layer.name == "message_encoder":
            return layer.embedding, layer.encoder
        if layer.name == "embedding":
            return layer, _first_lstm(model)
    return None, None


def _first_lstm(model):
    import keras

    for layer in model.layers:
        if isinstance(layer, (keras.layers.LSTM, keras.layers.Bidirectional)):
            return layer
        if isinstance(layer, keras.layers.GRU) or layer.name.startswith("conv1d"):
            return None  # another reader of the embeddings comes first: an LSTM there reads other features
    return None


def initialise(model, vocabulary: list[str], pretrained: Pretrained, model_name: str) -> Initialised:
    """Set the model's word embedding from `pretrained` for the words it knows (and its first LSTM from a language
    model's where the shapes match). Raises ConfigError when the model has no word embedding or the sizes differ."""
    embedding, reader = embedding_layer(model)
    if embedding is None:
        raise ConfigError(f"model={model_name} has no word embedding to initialise (model.pretrained="
                          f"{pretrained.source!r}); pick a model with one (lstm, bilstm, cnn_lstm, fasttext_bigram, "
                          "hier_*) or set model.pretrained=null.")
    table = np.array(embedding.embeddings.numpy())
    if table.shape[1] != pretrained.dim:
        raise ConfigError(f"model.pretrained={pretrained.source!r} has {pretrained.dim}-dimensional vectors, but "
                          f"model={model_name} embeds words in {table.shape[1]} (model.embedding_dim). Set "
                          f"model.embedding_dim={pretrained.dim}.")
    index = pretrained.index()
    found = 0
    for row, word in enumerate(vocabulary[: table.shape[0]]):
        if row < 2 or not word:  # padding (0) and [UNK] (1) keep their rows
            continue
        position = index.get(word)
        if position is not None:
            table[row] = pretrained.vectors[position]
            found += 1
    embedding.embeddings.assign(table)
    variables = [embedding.embeddings]
    lstm_report, lstm_variables = _initialise_lstm(reader, pretrained)
    return Initialised(variables + lstm_variables, found, max(min(len(vocabulary), table.shape[0]) - 2, 0),
                       lstm_report)


def _initialise_lstm(reader, pretrained: Pretrained) -> tuple[str, list]:
    import keras

    if not pretrained.lstm:
        return "none (word vectors only)", []
    if reader is None:
        return "not used: the model's embeddings are not read by an LSTM first", []
    if isinstance(reader, keras.layers.Bidirectional):
        targets = {"forward": reader.forward_layer, "backward": reader.backward_layer}
    else:
        targets = {"forward": reader}
    done, variables = [], []
    for direction, layer in targets.items():
        weights = pretrained.lstm.get(direction)
        if weights is None:
            continue
        shapes = [tuple(w.shape) for w in layer.get_weights()]
        if shapes != [tuple(w.shape) for w in weights]:
            return (f"not used: the pretrained LSTM has {weights[1].shape[0]} units, the model's {layer.name} "
                    f"{shapes[1][0] if len(shapes) > 1 else '?'} (set model units to match)"), []
        layer.set_weights(weights)
        done.append(direction)
        variables += list(layer.trainable_variables)
    return (f"{reader.name} ({' and '.join(done)})" if done else "none"), variables


# --- the registered form: an MLflow pyfunc model holding the folder ---------------------------------------

class PretrainedVectors:
    """`mlflow.pyfunc.load_model(<pretraining>/encoder).predict(DataFrame(word=[...]))` -> the words' vectors (zeros
    and found=False for unknown words); seqlab reads the folder itself when fine-tuning."""

    def __init__(self, pretrained: Pretrained):
        self.pretrained = pretrained

    def predict(self, model_input, params=None):
        import pandas as pd

        words = list(model_input["word"] if "word" in getattr(model_input, "columns", []) else model_input)
        index = self.pretrained.index()
        rows = [index.get(str(word)) for word in words]
        vectors = np.stack([self.pretrained.vectors[r] if r is not None else np.zeros(self.pretrained.dim, np.float32)
                            for r in rows]) if rows else np.zeros((0, self.pretrained.dim), np.float32)
        return pd.DataFrame({"word": words, "found": [r is not None for r in rows],
                             "vector": [v.tolist() for v in vectors]})


def _load_pyfunc(data_path: str) -> PretrainedVectors:
    return PretrainedVectors(read_folder(Path(data_path), source=data_path))
