"""A run's dataset splits as MLflow dataset inputs (the UI's Dataset column)."""

from __future__ import annotations

import hashlib
import re
import warnings

import numpy as np
from mlflow.exceptions import MlflowException


def log_dataset(data) -> None:
    """The splits as MLflow dataset inputs (the UI's Dataset column): name, source, a digest of the examples read,
    rows, the schema (text, label, metadata columns) and the target. The digest covers every text and label of the
    split, so that two runs with the same digest read the same examples."""
    import mlflow.data
    import pandas as pd

    for context, split in (("train", data.train), ("validation", data.validation), ("test", data.test)):
        frame = pd.DataFrame({"text": split.texts, "label": [data.class_names[i] for i in split.labels]})
        for number, name in enumerate(data.metadata_names if split.metadata is not None else []):
            frame[name] = split.metadata[:, number]
        digest = hashlib.sha256()
        for text in split.texts:
            digest.update(text.encode("utf-8", "surrogatepass") + b"\0")
        digest.update(np.asarray(split.labels, np.int64).tobytes())
        with warnings.catch_warnings():  # MLflow registers two local sources for one path, and says so each time
            warnings.simplefilter("ignore")
            dataset = mlflow.data.from_pandas(frame, source=data.source or data.name, targets="label",
                                              name=data.name, digest=digest.hexdigest()[:16])
        for attempt in range(3):
            try:
                mlflow.log_input(dataset, context=context)
                break
            except MlflowException as error:  # parallel jobs inserting the same new dataset row: it exists now
                if attempt == 2 or not re.search(r"duplicate key|UNIQUE constraint", str(error), re.IGNORECASE):
                    raise
