"""trainer.cv_folds: k training runs, one per fold of train (and of an official validation split), nested under a
parent run that holds the mean and std of their validation metrics. No run touches the test split."""

from __future__ import annotations

import logging

import mlflow
import numpy as np

from seqlab.config.plan import RunPlan
from seqlab.record.failures import named_failure
from seqlab.record.lifecycle import run_lifecycle
from seqlab.record.naming import log_identity, run_name, run_tags
from seqlab.record.store import configure
from seqlab.workflow.run import train_run

log = logging.getLogger(__name__)


def cross_validate(plan: RunPlan) -> float:
    """Train each fold (its own plan: trainer.cv_fold set) under one parent run; returns the folds' mean of
    optimized_metric (its validation side)."""
    folds, record = int(plan.trainer.cv_folds), plan.record
    experiment_id = configure(record.uri, record.experiment, record.dataset)
    tags = {**run_tags(record), "cv.role": "parent", "cv.folds": str(folds)}
    with run_lifecycle(experiment_id, run_name=run_name(record, experiment_id), tags=tags) as parent:
        log_identity(record)
        log.info(f"{folds}-fold cross-validation under MLflow run {parent.info.run_id}")
        outcomes = []
        for fold in range(folds):
            fold_plan = plan.replaced(**{"trainer.cv_fold": fold,
                                         "tracking.run_name": f"{parent.info.run_name} fold {fold}"})
            outcomes.append(train_run(fold_plan, cv_parent=parent.info.run_id))
        summary = {}
        for key in sorted(set.intersection(*(set(o.validation) for o in outcomes))):
            values = np.array([o.validation[key] for o in outcomes])
            summary[key], summary[f"{key}_std"] = float(values.mean()), float(values.std(ddof=1))
        objective = float(np.mean([o.objective for o in outcomes]))
        with named_failure(f"record the cross-validation summary in MLflow run {parent.info.run_id}"):
            mlflow.log_metrics(summary)
            mlflow.set_tag("cv.objective", ", ".join(f"{o.objective:.4f}" for o in outcomes))
        shown = ", ".join(f"{key} {summary[key]:.4f} ± {summary[key + '_std']:.4f}" for key in summary
                          if not key.endswith("_std"))
        log.info(f"{folds}-fold cross-validation: {shown} (mean ± std over folds)")
    return objective

