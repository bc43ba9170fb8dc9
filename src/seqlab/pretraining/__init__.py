"""Pretraining on unlabeled text (`seqlab pretrain`, `model.pretrained`): options.py (the pretrain group), the
trainers, pretrain.py (the run), vectors.py (reading and using pretrained vectors). MLflow loads a pretraining's
encoder model by importing this package and calling its `_load_pyfunc`."""

from seqlab.pretraining.vectors import _load_pyfunc  # noqa: F401
