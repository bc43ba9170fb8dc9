"""A search's trial inside its job: the callback that reports each epoch's validation metric to the trial and stops
the run where Optuna's pruner says (seqlab.search.study runs the search)."""

from __future__ import annotations

from seqlab.jobs import current_trial
from seqlab.metrics import canonical, to_keras
from seqlab.training.callbacks import OptunaPruning


def search_pruning(optimized_metric: str, is_fold: bool = False) -> OptunaPruning | None:
    """In a search's job, a callback reporting the validation side of `optimized_metric` to its trial; None outside
    searches and for cross-validation folds (k folds would report the same epochs k times)."""
    link = current_trial()
    if link is None or is_fold:
        return None
    from seqlab.search.study import job_trial  # Optuna: imported in a search's jobs only

    monitor = canonical(optimized_metric).replace("/test", "/val")
    return OptunaPruning(job_trial(link), monitor, to_keras(monitor))
