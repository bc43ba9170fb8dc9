"""The names of the metrics a run records in MLflow: `<quantity>/<split>`.

The MLflow UI puts the charts of metrics that share a prefix in one section: `accuracy/train`, `accuracy/val`
and `accuracy/test` side by side, `loss/*` in another, and the bookkeeping (`time/*`) apart. Keras reports
`accuracy` and `val_accuracy`; runs of seqlab 0.1 logged those names and `test_accuracy`, which `canonical`
maps to today's, so that `seqlab compare` reads old runs and users may type either.
"""

from __future__ import annotations

SPLITS = ("train", "val", "test")
# What every model is compiled with: Keras reports each per epoch on train and validation (`accuracy/train`,
# `accuracy/val`), and seqlab.training.callbacks.EpochLogger records them as `<name>/<split>`. A new per-epoch
# metric is its Keras name added here.
EPOCH_METRICS = ("accuracy",)
TIME = ("epochs", "epoch_seconds", "train_seconds", "prepare_seconds")  # bookkeeping: section time/
QUANTITIES = (*EPOCH_METRICS, "loss", "f1_macro", "roc_auc")


def keras_name(name: str) -> str:
    """`val_accuracy` (as Keras logs and EarlyStopping monitors it) -> `accuracy/val`; `loss` -> `loss/train`."""
    for split, prefix in (("val", "val_"), ("test", "test_")):
        if name.startswith(prefix):
            return f"{name[len(prefix):]}/{split}"
    if name in TIME:
        return f"time/{name}"
    return f"{name}/train" if name in QUANTITIES else name


LEGACY = {old: keras_name(old) for old in (*QUANTITIES, *(f"{split}_{q}" for split in ("val", "test")
                                                           for q in QUANTITIES), *TIME)}


def canonical(name: str) -> str:
    """Today's name for a metric name of either generation (`test_accuracy` -> `accuracy/test`)."""
    return LEGACY.get(name, name)


def to_keras(name: str) -> str:
    """`accuracy/val` -> `val_accuracy`: the name Keras' callbacks (EarlyStopping) know."""
    quantity, _, split = canonical(name).partition("/")
    return {"train": quantity, "val": f"val_{quantity}", "test": f"test_{quantity}"}.get(split, name)


def higher_is_better(name: str) -> bool:
    return not canonical(name).startswith(("loss/", "time/"))


def validation_metric(optimized_metric: str) -> str:
    """The validation metric that picks a sweep's best run: never a test metric (that would leak the test split)."""
    return "loss/val" if canonical(optimized_metric).startswith("loss/") else "accuracy/val"
