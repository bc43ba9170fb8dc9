"""`seqlab predict MODEL_URI (--text ... | --input FILE) [--output FILE.csv]`: labels for raw text.

The logged model holds its preprocessing, so it takes raw strings; it is an MLflow pyfunc model
(seqlab.serving.pyfunc.TextClassifier, built by seqlab.serving.pyfunc._load_pyfunc), loaded and called as any MLflow client
would, so `seqlab predict`, `mlflow models serve` and batch scoring share one prediction path. Predictions go to
stdout, or with --output to that CSV file (with the probability of every class) and a one-line summary to stderr;
status lines go to stderr. --output never replaces the --input file, and an existing file only with --overwrite.
Ids are written as the input wrote them (seqlab.data.tables.written); a thread is one per id, by the rule of labels.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd

from seqlab.data.common import join_messages
from seqlab.data.labels import thread_keys
from seqlab.data.tables import metadata_values, read_table, written
from seqlab.data.texts import as_text, message_text
from seqlab.errors import DataError, SeqlabError

log = logging.getLogger(__name__)

TEXT_COLUMNS = ("text", "review", "sentence", "content")
THREAD_COLUMNS = ("messages",)
ID_COLUMNS = ("id", "thread_id", "review_id")


def read_inputs(path: str, column: str | None = None,
                speaker_tokens: bool = False) -> tuple[list[str], list[str] | None]:
    """Texts (threads joined into one string, with speaker words where the model was trained so) and ids."""
    texts, ids, _ = read_examples(path, column, speaker_tokens)
    return texts, ids


def read_examples(path: str, column: str | None = None, speaker_tokens: bool = False):
    """(texts, ids or None, one table row per example for the metadata columns) from --input, read as training
    reads a custom file: a text column, a messages column (lists, or JSON lists in a CSV), or one row per message
    grouped into threads by `thread_id` in file order (one prediction per thread)."""
    file = Path(path)
    if not file.is_file():
        raise DataError(f"--input file '{file}' does not exist.")
    suffix = file.suffix.lower()
    if suffix in (".txt", ""):
        try:
            texts = file.read_text(encoding="utf-8").splitlines()
        except UnicodeDecodeError as error:
            raise DataError(f"--input '{file}' is not UTF-8 text (byte {error.start}: {error.reason}); convert it "
                            "(e.g. iconv -f latin1 -t utf-8) or give a CSV/JSONL/Parquet file.") from None
        return [t for t in texts if t.strip()], None, pd.DataFrame()
    frame = read_table(file)  # the reader of dataset=custom: every format training reads
    if column is None and "messages" not in frame.columns and {"thread_id", "text"} <= set(frame.columns):
        keys, rows = thread_keys(frame, "thread_id", file)  # JSON 1, "1" and 1.0 are one thread, as in training
        if len(set(keys)) < len(keys):  # one row per message
            return _per_message(rows, keys, speaker_tokens)
    candidates = [column] if column else [*TEXT_COLUMNS, *THREAD_COLUMNS]
    found = next((c for c in candidates if c in frame.columns), None)
    if found is None:
        raise DataError(f"--input '{file}' has no {'column ' + repr(column) if column else 'text or messages column'}"
                        f"; its columns are {', '.join(map(str, frame.columns))}. Name one with --column.")
    thread = found in THREAD_COLUMNS
    try:
        texts = [as_text(value, speaker_tokens, thread) for value in frame[found]]
    except TypeError as error:
        raise DataError(f"--input '{file}' column {found!r}: {error}.") from None
    id_column = next((c for c in ID_COLUMNS if c in frame.columns), None)
    # as written: '00123' keeps its zeros, a missing id is empty (not 'nan'), an integer never becomes '7.0'
    ids = None if id_column is None else [written(value) or "" for value in frame[id_column]]
    return texts, ids, frame


def _per_message(frame: pd.DataFrame, keys: list[str], speaker_tokens: bool):
    speakers = frame["speaker"] if "speaker" in frame.columns else [None] * len(frame)
    lines = [message_text(t, speaker_tokens, s) for t, s in zip(frame["text"], speakers)]
    groups = frame.assign(_line=lines, _seqlab_key=keys).groupby("_seqlab_key", sort=False)
    texts = [join_messages([line for line in group["_line"] if line]) for _, group in groups]
    ids = [written(group["thread_id"].iloc[0]) for _, group in groups]  # as its first row writes it
    return texts, ids, groups.first().reset_index(drop=True)


def read_metadata(frame: pd.DataFrame, columns: list[str], path: str) -> np.ndarray:
    """The numeric metadata columns a model.metadata=true model takes, read as training reads them
    (seqlab.data.tables.metadata_values: missing and infinite values are NaN, imputed by the model)."""
    return metadata_values(frame, columns, f"--input '{path}'")


class KerasFlavorModel:
    """A model that an earlier seqlab logged with MLflow's Keras flavor only (no seqlab.serving.pyfunc.TextClassifier in
    it), predicted by the same TextClassifier.predict as the models logged now."""

    def __init__(self, model_uri: str, logged: dict):
        import mlflow

        import seqlab.serving.keras_objects  # noqa: F401  registers what the saved model names
        from seqlab.serving.pyfunc import TextClassifier

        # Safe mode (Keras' default, made explicit): a model file cannot run arbitrary Python (lambdas) on load.
        network = mlflow.keras.load_model(model_uri, load_model_kwargs={"safe_mode": True})
        outputs = int(network.output_shape[-1])
        class_names = logged.get("class_names") or [str(i) for i in range(max(outputs, 2))]
        self.classifier = TextClassifier(class_names, logged.get("metadata_columns"), logged.get("speaker_tokens"),
                                         model=network)

    def predict(self, data, params=None) -> pd.DataFrame:
        return self.classifier.predict(data, params)


def load(model_uri: str):
    """The logged model, with `predict(DataFrame, params)` as mlflow.pyfunc.load_model gives it (for a model of an
    earlier seqlab, logged with the Keras flavor only: the same TextClassifier.predict around its network)."""
    import mlflow

    try:
        info = mlflow.models.get_model_info(model_uri)
        if "keras" in info.flavors:
            return KerasFlavorModel(model_uri, info.metadata or {})
        return mlflow.pyfunc.load_model(model_uri)
    except Exception as error:  # MLflow raises several types for a bad URI or a missing run
        raise SeqlabError(f"Cannot load model {model_uri!r}: {str(error).splitlines()[0]}. Give runs:/<run_id>/model, "
                          "models:/<name>/<version>, models:/<name>@<alias> or a local model folder, with the store "
                          "it was logged to (--tracking-uri, default $MLFLOW_TRACKING_URI or sqlite:///mlflow.db)."
                          ) from None


def model_metadata(model_uri: str) -> dict:
    """What the model was logged with: class_names, metadata_columns, speaker_tokens ({} when unreadable)."""
    import mlflow

    try:
        return mlflow.models.get_model_info(model_uri).metadata or {}
    except Exception:  # load() reports a bad URI with the full message
        return {}


def predict_texts(model, texts: list[str], batch_size: int = 256,
                  metadata: pd.DataFrame | None = None) -> pd.DataFrame:
    """`label`, `probability` (of that label) and `probability_<class>` per class, one row per text; `metadata`:
    the numeric columns (raw numbers, NaN allowed) of a model logged with model.metadata=true."""
    frame = pd.DataFrame({"text": list(texts)})
    if metadata is not None:
        frame = frame.join(metadata.reset_index(drop=True))
    return model.predict(frame, params={"batch_size": batch_size})

