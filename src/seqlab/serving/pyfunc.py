"""`TextClassifier`: a seqlab model as an MLflow pyfunc model, which any MLflow client can load and serve.

`seqlab train` logs it with `mlflow.pyfunc.log_model(loader_module="seqlab.serving", data_path=...)`, MLflow's
custom-flavor path, in which nothing is pickled: the model's `data/classifier` folder holds the end-to-end Keras
file `model.keras` (preprocessing layers in front of the network, so raw strings in) and `classifier.json` (the
class names, the metadata columns and whether threads carry speaker tokens). MLflow loads it by importing this
package (seqlab.serving, a name kept across versions) and calling `_load_pyfunc(data_path)`, which reads the JSON and loads the Keras file in Keras' safe mode:
loading needs seqlab installed, not imported by the caller.

    model = mlflow.pyfunc.load_model("runs:/<run_id>/model")
    model.predict(pd.DataFrame({"text": ["A wonderful film.", "Dull."]}))
    # -> columns label, probability, probability_<class name> for each class
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from seqlab.analysis.evaluate import class_probabilities
from seqlab.data.tables import metadata_values
from seqlab.data.texts import as_text

TEXT_COLUMN = "text"
THREAD_COLUMN = "messages"
DEFAULT_BATCH_SIZE = 256
LOADER_MODULE = "seqlab.serving"  # whose _load_pyfunc MLflow calls: the name logged models keep (also 0.1's)
DATA_FOLDER = "classifier"  # the data_path folder; MLflow copies it to data/classifier in the logged model
KERAS_FILE = "model.keras"
ATTRIBUTES_FILE = "classifier.json"


def probability_column(class_name: str) -> str:
    """The output column holding the probability of class `class_name`."""
    return f"probability_{class_name}"


def write_model_data(folder: str | Path, classifier: TextClassifier, network) -> Path:
    """Write what `_load_pyfunc` reads into `folder` (created; its name becomes the folder under the logged
    model's data/): the Keras model `network` as model.keras and the classifier's attributes as JSON."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    network.save(folder / KERAS_FILE)
    (folder / ATTRIBUTES_FILE).write_text(json.dumps(classifier.attributes(), indent=2) + "\n", encoding="utf-8")
    return folder


def _load_pyfunc(data_path: str) -> TextClassifier:
    """MLflow's loader for seqlab's models (the `loader_module` in MLmodel): the classifier of the folder
    `write_model_data` wrote, its Keras model loaded in safe mode. Nothing is unpickled."""
    import keras

    import seqlab.serving.keras_objects  # noqa: F401  registers what the saved model names

    folder = Path(data_path)
    try:
        attributes = json.loads((folder / ATTRIBUTES_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise ValueError(f"Cannot read the seqlab model's {ATTRIBUTES_FILE} in {folder}: {error}") from None
    if not isinstance(attributes, dict) or not isinstance(attributes.get("class_names"), list):
        raise ValueError(f"The seqlab model's {folder / ATTRIBUTES_FILE} holds no list of class_names.")
    classifier = TextClassifier(attributes["class_names"], attributes.get("metadata_columns"),
                                attributes.get("speaker_tokens", False))
    # Safe mode (Keras' default, made explicit): a model file cannot run arbitrary Python (lambdas) on load.
    classifier.model = keras.saving.load_model(folder / KERAS_FILE, safe_mode=True)
    return classifier


class TextClassifier:
    """Labels and class probabilities for raw texts or threads, with the metadata numbers for models trained with
    `model.metadata=true`: what `mlflow.pyfunc.load_model` wraps (through `_load_pyfunc`).

    Args:
        class_names: the class of each output position, in the order of training's labels.
        metadata_columns: the numeric columns the model also takes (empty: text only).
        speaker_tokens: whether threads were read with speaker words (preprocess.speaker_tokens), as a thread
            given as messages must be read the same way.
        model: the end-to-end Keras model (raw strings in), or None until loaded.
    """

    def __init__(self, class_names: list[str], metadata_columns: list[str] | None = None,
                 speaker_tokens: bool = False, model=None):
        self.class_names = [str(name) for name in class_names]
        self.metadata_columns = list(metadata_columns or [])
        self.speaker_tokens = bool(speaker_tokens)
        self.model = model

    def attributes(self) -> dict:
        """What classifier.json holds: everything but the Keras model."""
        return {"class_names": self.class_names, "metadata_columns": self.metadata_columns,
                "speaker_tokens": self.speaker_tokens}

    def get_raw_model(self):
        """The Keras model (MLflow's `PyFuncModel.get_raw_model()` returns it)."""
        return self.model

    @property
    def output_columns(self) -> list[str]:
        return ["label", "probability", *map(probability_column, self.class_names)]

    def predict(self, model_input: pd.DataFrame, params=None):
        """`model_input`: a DataFrame with a `text` column (raw strings) or a `messages` column (threads), plus the
        metadata columns for a metadata model (NaN allowed: the model imputes it); or texts as a list, a NumPy
        array or a Series. `params`: {"batch_size": n} (default 256). Returns a DataFrame, one row per input:
        `label` (a class name), `probability` (of that label) and `probability_<class name>` for each class.

        MLflow's PyFuncModel.predict checks the input against the signature and passes `params` (this method
        takes them by name).
        """
        if self.model is None:
            raise ValueError("TextClassifier has no Keras model: load it with mlflow.pyfunc.load_model, which "
                             "calls seqlab.serving.pyfunc._load_pyfunc.")
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
        return metadata_values(frame, self.metadata_columns, "the input", ValueError) if self.metadata_columns else None

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

