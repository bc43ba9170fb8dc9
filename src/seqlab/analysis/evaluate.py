"""Test-set metrics, the per-class report and the plots logged with every run.

pyplot and sklearn.metrics are imported where used: they cost about a second of `seqlab train` start-up,
and are needed only after training.
"""

from __future__ import annotations

import numpy as np


def class_probabilities(outputs: np.ndarray) -> np.ndarray:
    """(n, classes) probabilities from a sigmoid (n, 1) or softmax (n, k) output."""
    outputs = np.asarray(outputs, dtype=np.float64)
    if outputs.ndim == 1 or outputs.shape[1] == 1:
        positive = outputs.reshape(-1)
        return np.stack([1.0 - positive, positive], axis=1)
    return outputs / outputs.sum(axis=1, keepdims=True)  # a float32 softmax sums to 1 only within ~1e-7


def test_metrics(labels: np.ndarray, outputs: np.ndarray, class_names: list[str], split: str = "test",
                 title: str = ""):
    """Metrics dict (`accuracy/test`, ...: seqlab.metrics names), classification report text and confusion-matrix
    figure (titled `title`, the run and model) for one split."""
    from sklearn.metrics import accuracy_score, classification_report, f1_score, log_loss, roc_auc_score

    probabilities = class_probabilities(outputs)
    predicted = probabilities.argmax(axis=1)
    classes = list(range(len(class_names)))
    metrics = {
        f"loss/{split}": float(log_loss(labels, np.clip(probabilities, 1e-7, 1 - 1e-7), labels=classes)),
        f"accuracy/{split}": float(accuracy_score(labels, predicted)),
        f"f1_macro/{split}": float(f1_score(labels, predicted, labels=classes, average="macro", zero_division=0)),
    }
    if len(class_names) == 2 and len(np.unique(labels)) == 2:
        metrics[f"roc_auc/{split}"] = float(roc_auc_score(labels, probabilities[:, 1]))
    report = classification_report(labels, predicted, labels=classes, target_names=class_names, digits=4,
                                   zero_division=0)
    return metrics, report, confusion_matrix_figure(labels, predicted, class_names, title, split)


def pyplot():
    """matplotlib's pyplot on the Agg backend (files only: runs happen on servers and in sweeps)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def close_figures(*figures) -> None:
    """Forget logged figures: sweeps run many jobs in one process, and pyplot keeps every open figure."""
    for figure in figures:
        pyplot().close(figure)


def confusion_matrix_figure(labels, predicted, class_names, title: str = "", split: str = "test"):
    from sklearn.metrics import ConfusionMatrixDisplay

    plt = pyplot()
    size = max(4.0, 0.6 * len(class_names) + 2)
    figure, axes = plt.subplots(figsize=(size, size))
    ConfusionMatrixDisplay.from_predictions(labels, predicted, labels=list(range(len(class_names))),
                                            display_labels=class_names, ax=axes, colorbar=False,
                                            xticks_rotation=45 if len(class_names) > 4 else "horizontal")
    axes.set_title("\n".join(filter(None, [title, f"confusion matrix on the {split} split ({len(labels)} examples)"])),
                   fontsize=10)
    figure.tight_layout()
    return figure


def learning_curves_figure(history: dict[str, list[float]], title: str = "", kept_epoch: int | None = None):
    """Loss and accuracy per epoch (Keras' history names), training against validation, on MLflow's step axis
    (epoch index from 0), the epoch whose weights were kept marked; titled `title` (the run and model)."""
    from matplotlib.ticker import MaxNLocator

    plt = pyplot()
    figure, axes = plt.subplots(1, 2, figsize=(10, 4))
    for axis, metric in zip(axes, ("loss", "accuracy")):
        for key, split, style in ((metric, "train", "o-"), (f"val_{metric}", "val", "s--")):
            if key in history:
                axis.plot(np.arange(len(history[key])), history[key], style, label=f"{metric}/{split}")
        if kept_epoch is not None:
            axis.axvline(kept_epoch, color="grey", linestyle=":", label=f"kept (step {kept_epoch})")
        axis.set_xlabel("step (epoch index, as in MLflow)")
        axis.xaxis.set_major_locator(MaxNLocator(integer=True))  # epochs are whole
        axis.set_title(metric)
        axis.grid(alpha=0.3)
        axis.legend()
    if title:
        figure.suptitle(title, fontsize=11)
    figure.tight_layout()
    return figure
