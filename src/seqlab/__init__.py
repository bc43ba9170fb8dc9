"""seqlab: config-driven experiment runner for sequence classification.

Importing seqlab sets the environment defaults that must be in place before TensorFlow is imported, whichever
entry imports it first (`seqlab`, the tests, a notebook); a value the user set wins.
"""

import os

__version__ = "0.1.0"

# TensorFlow's C++ start-up and hardware lines (oneDNN notes, CPU features, absl's pre-init note) are not for
# users; real failures still reach them as Python exceptions. 3 hides C++ INFO, WARNING and ERROR lines.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
# MLflow draws a progress bar per artifact download, six for one `predict` from a local store: noise here.
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")

from seqlab.tensorflow_logs import filter_tensorflow_import  # noqa: E402  after the defaults it reads

filter_tensorflow_import()
