"""`TextClassifier`: a seqlab model as an MLflow pyfunc model, which any MLflow client can load and serve.

`seqlab train` logs it with `mlflow.pyfunc.log_model`: the end-to-end Keras file (preprocessing layers in front
of the network, so raw strings in) is its artifact `keras_model`; the class names, metadata columns and whether
threads carry speaker tokens are attributes of the pickled instance. The class lives in the installed seqlab
package, so cloudpickle stores a reference to it: loading needs seqlab installed, not imported by the caller.

    model = mlflow.pyfunc.load_model("runs:/<run_id>/model")
    model.predict(pd.DataFrame({"text": ["A wonderful film.", "Dull."]}))
    # -> columns label, probability, probability_<class name> for each class
"""

from __future__ import annotations

import mlflow.pyfunc
import numpy as np
import pandas as pd

from seqlab.data.custom import as_text
from seqlab.evaluate import class_probabilities

TEXT_COLUMN = "text"
THREAD_COLUMN = "messages"
DEFAULT_BATCH_SIZE = 256
KERAS_ARTIFACT = "keras_model"


def probability_column(class_name: str) -> str:
    """The output column holding the probability of class `class_name`."""
    return f"probability_{class_name}"


class TextClassifier(mlflow.pyfunc.PythonModel):
    """Labels and class probabilities for raw texts or threads, with the metadata numbers for models trained with
    `model.metadata=true`.

    Args:
        class_names: the class of each output position, in the order of training's labels.
        metadata_columns: the numeric columns the model also takes (empty: text only).
        speaker_tokens: whether threads were read with speaker words (preprocess.speaker_tokens), as a thread
            given as messages must be read the same way.
    """

    def __init__(self, class_names: list[str], metadata_columns: list[str] | None = None,
                 speaker_tokens: bool = False):
        self.class_names = [str(name) for name in class_names]
        self.metadata_columns = list(metadata_columns or [])
        self.speaker_tokens = bool(speaker_tokens)
        self.model = None  # the Keras model, loaded by load_context (never pickled)

    def __getstate__(self):
        # Only the attributes travel in the pickle; the network travels as the .keras artifact.
        return {**self.__dict__, "model": None}

    def load_context(self, context):
        import keras

        import seqlab.models.layers  # noqa: F401  registers seqlab's serializable layers, which the file names
        import seqlab.preprocess  # noqa: F401

        # Safe mode (Keras' default, made explicit): a model file cannot run arbitrary Python (lambdas) on load.
        self.model = keras.saving.load_model(context.artifacts[KERAS_ARTIFACT], safe_mode=True)

    @property
    def output_columns(self) -> list[str]:
        return ["label", "probability", *map(probability_column, self.class_names)]

    def predict(self, context, model_input: pd.DataFrame, params=None):
        """`model_input`: a DataFrame with a `text` column (raw strings) or a `messages` column (threads), plus the
        metadata columns for a metadata model (NaN allowed: the model imputes it); or texts as a list, a NumPy
        array or a Series. `params`: {"batch_size": n} (default 256). Returns a DataFrame, one row per input:
        `label` (a class name), `probability` (of that label) and `probability_<class name>` for each class.

        The DataFrame type hint tells MLflow to leave the input as it is (its signature checks the columns).
        """
        if self.model is None:
            raise ValueError("TextClassifier has no Keras model: load it with mlflow.pyfunc.load_model, which "
                             "calls load_context.")
        batch_size = int((params or {}).get("batch_size", DEFAULT_BATCH_SIZE))
        if batch_size < 1:
            raise ValueError(f"params batch_size must be a positive number, not {batch_size}.")
        texts, metadata, index = self.read_input(model_input)
        probabilities = self.probabilities(texts, metadata, batch_size)
        predicted = probabilities.argmax(axis=1)
        columns = {"label": [self.class_names[i] for i in predicted],
                   "probability": probabilities[np.arange(len(predicted)), predicted]}
        columns |= {probability_column(name): probabilities[:, i] for i, name in enumerate(self.class_names)}
        return pd.DataFrame(columns, index=index)

    def read_input(self, model_input) -> tuple[list[str], np.ndarray | None, pd.Index | None]:
        """(texts, metadata as float32 or None, the input's index or None) from what predict accepts."""
        if isinstance(model_input, dict):
            model_input = pd.DataFrame(model_input)
        if not isinstance(model_input, pd.DataFrame):
            if isinstance(model_input, str):  # one text, not its characters
                model_input = [model_input]
            if not isinstance(model_input, (list, tuple, np.ndarray, pd.Series)):
                raise ValueError(f"The model takes a pandas DataFrame with a {self.expected_columns()}, or a list "
                                 f"of texts; got {type(model_input).__name__}.")
            if self.metadata_columns:
                raise ValueError(f"This model also takes numeric metadata: give a pandas DataFrame with a "
                                 f"{self.expected_columns()}, not a bare list of texts.")
            index = model_input.index if isinstance(model_input, pd.Series) else None
            return [as_text(value, self.speaker_tokens) for value in model_input], None, index
        frame = model_input
        if TEXT_COLUMN in frame.columns:
            texts = [as_text(value, self.speaker_tokens) for value in frame[TEXT_COLUMN]]
        elif THREAD_COLUMN in frame.columns:
            try:
                texts = [as_text(value, self.speaker_tokens, thread=True) for value in frame[THREAD_COLUMN]]
            except (TypeError, RecursionError) as error:
                raise ValueError(f"Column {THREAD_COLUMN!r}: {error}.") from None
        else:
            given = ", ".join(map(repr, frame.columns)) or "none"
            raise ValueError(f"The model takes a DataFrame with a {self.expected_columns()}; the input's columns: "
                             f"{given}. (MLflow drops the columns that the model's signature does not name, such "
                             "as the unnamed one a bare list of texts becomes: name it, {\"text\": [...]}.)")
        return texts, self.read_metadata(frame), frame.index

    def read_metadata(self, frame: pd.DataFrame) -> np.ndarray | None:
        if not self.metadata_columns:
            return None
        missing = [column for column in self.metadata_columns if column not in frame.columns]
        if missing:
            raise ValueError(f"The model also takes the numeric metadata columns {', '.join(self.metadata_columns)} "
                             f"(NaN where unknown); the input lacks {', '.join(missing)}.")
        raw = frame[self.metadata_columns]
        values = raw.apply(pd.to_numeric, errors="coerce")
        not_numbers = (values.isna() & raw.notna()).to_numpy()
        if not_numbers.any():
            row, column = map(int, np.argwhere(not_numbers)[0])
            raise ValueError(f"Row {row + 1}: metadata column {self.metadata_columns[column]!r} holds "
                             f"{str(raw.iloc[row, column])[:50]!r}, not a number.")
        return values.to_numpy(np.float32)

    def expected_columns(self) -> str:
        text = (f"{TEXT_COLUMN!r} column (raw text) or a {THREAD_COLUMN!r} column (a thread: a list of strings or "
                "of {text, speaker} records, or its JSON)")
        if self.metadata_columns:
            text += f" and the numeric columns {', '.join(self.metadata_columns)} (NaN allowed)"
        return text

    def probabilities(self, texts: list[str], metadata: np.ndarray | None, batch_size: int) -> np.ndarray:
        """(n, classes) probabilities, `batch_size` examples per call of the network."""
        strings = np.asarray(texts, dtype=object).reshape(-1)
        batches = []
        for start in range(0, len(strings), batch_size):
            batch = strings[start:start + batch_size]
            if metadata is not None:
                batch = {"text": batch, "metadata": metadata[start:start + batch_size]}
            # predict_on_batch, not predict(): Keras' tf.data path for string arrays logs a TensorFlow "E0000 ...
            # use_unbounded_threadpool" line when op determinism and one thread per op are on, as in training.
            batches.append(class_probabilities(self.model.predict_on_batch(batch)))
        if not batches:
            return np.zeros((0, len(self.class_names)))
        return np.concatenate(batches)


def description(model_name: str, dataset: str, classifier: TextClassifier) -> str:
    """What the logged model is and takes, in Markdown (the Description of its page in the MLflow UI)."""
    inputs = ("a DataFrame with a `text` column (raw text) or a `messages` column (a thread: a list of strings or "
              "of {text, speaker} records, or its JSON)")
    if classifier.metadata_columns:
        inputs += (f", and the numeric columns {', '.join(f'`{c}`' for c in classifier.metadata_columns)} "
                   "(NaN allowed: the model imputes the training mean)")
    return (f"seqlab `{model_name}` classifier trained on `{dataset}`: {len(classifier.class_names)} classes "
            f"({', '.join(classifier.class_names)}).\n\n"
            f"Input: {inputs}.\n\n"
            f"Output: `label` (the predicted class), `probability` (of that label) and one "
            f"`probability_<class>` column per class.\n\n"
            "Loading needs the seqlab package installed (`mlflow.pyfunc.load_model`, or `mlflow models serve "
            "--env-manager local` from seqlab's environment).")


def model_metadata(classifier: TextClassifier, dataset: str) -> dict:
    """The MLmodel `metadata` seqlab logs: what `seqlab predict` reads before loading the model."""
    return {"class_names": classifier.class_names, "dataset": dataset,
            "metadata_columns": classifier.metadata_columns, "speaker_tokens": classifier.speaker_tokens}

