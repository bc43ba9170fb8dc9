"""The logged model: the trained network with the preprocessing in front of it, as an MLflow pyfunc model that takes
raw text (seqlab.serving.pyfunc loads it), with a column-named signature and an input example."""

from __future__ import annotations

import tempfile
from pathlib import Path

import keras
import mlflow
import numpy as np
import pandas as pd
import tensorflow as tf
from mlflow.models import ModelSignature
from mlflow.types.schema import AnyType, ColSpec, ParamSchema, ParamSpec, Schema

from seqlab.features.preprocess import MetadataPreprocessor
from seqlab.record.failures import named_failure
from seqlab.serving import pyfunc as serving


def log_model(model: keras.Model, preprocessor, data, metadata: MetadataPreprocessor | None = None,
              step: int = 0, model_name: str | None = None):
    """Log the network with the preprocessing in front of it as an MLflow pyfunc model (seqlab.serving.pyfunc), which
    takes a DataFrame of raw strings (and, with metadata, raw numbers: the imputation and scaling fitted on train
    are layers of the model too). MLflow links the run's metrics at `step` (the epoch whose weights the model
    holds) to the logged model. Returns its ModelInfo (model_id, model_uri), e.g. to register it."""
    text = keras.Input(shape=(), dtype="string", name="text")
    if metadata is None:
        inputs, network_inputs = text, preprocessor.apply(text)
    else:
        numbers = keras.Input(shape=(metadata.dim,), dtype="float32", name="metadata")
        inputs = {"text": text, "metadata": numbers}
        network_inputs = {"tokens": preprocessor.apply(text), "metadata": metadata.apply(numbers)}
    end_to_end = keras.Model(inputs, model(network_inputs), name=f"{model.name}_on_text")
    classifier = serving.TextClassifier(data.class_names, metadata.names if metadata else [],
                                        getattr(preprocessor.cfg, "speaker_tokens", False))
    return log_end_to_end(end_to_end, classifier, data, step, model_name or model.name)


def log_end_to_end(end_to_end: keras.Model, classifier, data, step: int, model_name: str):
    """Log `end_to_end` (raw strings, and metadata numbers, in; probabilities out) as the run's pyfunc model."""
    columns = classifier.metadata_columns
    example = pd.DataFrame({serving.TEXT_COLUMN: list(data.test.texts[:2])})
    if columns:
        example = example.join(pd.DataFrame(np.asarray(data.test.metadata[:2], np.float64), columns=columns))
    # text or messages (a thread), both optional in the schema: MLflow drops the columns a signature lacks
    signature = ModelSignature(
        inputs=Schema([ColSpec("string", serving.TEXT_COLUMN, required=False),
                       ColSpec(AnyType(), serving.THREAD_COLUMN, required=False),
                       *(ColSpec("double", column) for column in columns)]),
        outputs=Schema([ColSpec("string", "label"),
                        *(ColSpec("double", name) for name in classifier.output_columns[1:])]),
        params=ParamSchema([ParamSpec("batch_size", "long", serving.DEFAULT_BATCH_SIZE)]))
    requirements = [f"tensorflow=={tf.__version__}", f"keras=={keras.__version__}", f"mlflow=={mlflow.__version__}"]
    # the description MLflow's UI shows on the logged model's page is this tag (Markdown)
    tags = {"mlflow.note.content": serving.description(model_name, data.name, classifier)}
    with tempfile.TemporaryDirectory(prefix="seqlab-model-") as scratch, \
            named_failure("record the model (artifact 'model') in the MLflow run"):
        # MLflow's custom-flavor path: the folder (model.keras and classifier.json) is copied into the model and
        # seqlab.serving.pyfunc._load_pyfunc reads it back; nothing is pickled
        folder = serving.write_model_data(Path(scratch) / serving.DATA_FOLDER, classifier, end_to_end)
        return mlflow.pyfunc.log_model(
            name="model", loader_module=serving.LOADER_MODULE, data_path=str(folder),
            signature=signature, input_example=example, pip_requirements=requirements,
            metadata=serving.model_metadata(classifier, data.name), tags=tags, step=step)
