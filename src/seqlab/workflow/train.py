"""`train(cfg)`: validate the composed config, resolve it once into the run plan, then run it: one training run
(seqlab.workflow.run) or, with trainer.cv_folds, a cross-validation (seqlab.workflow.cross_validation).

Hydra's entry point (seqlab.cli.entry) wraps this; tests call it with composed configs. It returns the plan's
`optimized_metric` so that Hydra sweepers can optimise it. The caller's config is never changed.
"""

from __future__ import annotations

from typing import Any

from omegaconf import DictConfig

from seqlab.config.plan import RunPlan, resolve, resume_target
from seqlab.config.validate import validate
from seqlab.record.resume import resumable_run, resumed_config
from seqlab.training.runtime import gpu_count
from seqlab.workflow.cross_validation import cross_validate
from seqlab.workflow.run import train_run


def train(cfg: DictConfig) -> float:
    """Train and evaluate one model (or, with trainer.cv_folds, cross-validate it); returns optimized_metric."""
    validate(cfg)
    plan, resumed = plan_run(cfg)
    if plan.trainer.cv_folds and plan.trainer.cv_fold is None:
        return cross_validate(plan)
    return train_run(plan, resumed).objective


def plan_run(cfg: DictConfig) -> tuple[RunPlan, Any]:
    """The run plan; with trainer.resume, of the config the run started with (and that run)."""
    resumed, target = None, resume_target(cfg)
    if target is not None:  # continue that run, with the config it was started with
        resumed = resumable_run(*target)
        cfg = resumed_config(cfg, resumed)
        validate(cfg)
    return resolve(cfg, gpus=gpu_count()), resumed
