"""Serving: the logged model (export.py writes it, pyfunc.py is what MLflow loads), and prediction from raw text
(predict.py). MLflow loads a logged model by importing this package and calling its `_load_pyfunc`: the loader's
name stays `seqlab.serving` whatever module holds it, so that models logged by every seqlab version load."""

from seqlab.serving.pyfunc import _load_pyfunc  # noqa: F401
