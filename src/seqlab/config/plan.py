"""Resolve, then run: the composed config, validated, becomes one immutable RunPlan; each stage receives its part.

Everything a run decides from its config is decided here, once: length buckets and the padding they need, op
determinism, the weight decay in force, the CPU threads asked for, the pretrained-vector defaults (and whether the
`pretrain` group is used at all), the experiment's name. The plan's `config` is the resolved config, read-only:
the run's params and config.yaml are written from it, so they say what ran. Nothing mutates the caller's config.

Stages and their parts: data loading `plan.data`, the preprocessing `plan.features`, the model builder
`plan.model`, fitting `plan.trainer`, pretrained vectors `plan.pretrained`, the MLflow record `plan.record`.
This is the one module (with seqlab.config.validate) that reads keys of several groups.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Optional

from omegaconf import DictConfig, OmegaConf

from seqlab.config.compose import structured
from seqlab.errors import ConfigError
from seqlab.jobs import current_job
from seqlab.models.catalog import model_info
from seqlab.pretraining.options import PRETRAIN_EXPERIMENT

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DataPlan:
    """What the data sources read: the dataset's keys and where files are, the seed of the train sample and of the
    validation split, the cross-validation fold, and whether messages carry speaker tokens."""

    dataset: DictConfig
    data_dir: str
    cache_dir: Optional[str]
    seed: int
    cv_folds: Optional[int] = None
    cv_fold: Optional[int] = None
    speaker_tokens: bool = False


@dataclass(frozen=True)
class FeaturePlan:
    """What the preprocessing and the input pipeline read."""

    preprocess: DictConfig  # padding as it runs (post with buckets)
    cache_dir: Optional[str]
    bucketing: bool
    bucket_boundaries: Optional[tuple[int, ...]]  # given ones; None: derived from the training lengths
    pad_to_boundaries: bool  # XLA compiles once per shape: batches padded to their bucket's boundary
    metadata: bool  # the dataset's numeric metadata as a second input


@dataclass(frozen=True)
class PretrainedPlan:
    """Initial word vectors: from where, and how they are fine-tuned (None: no pretrained vectors)."""

    source: Optional[str]  # model.pretrained: pretrain | runs:/... | models:/... | a vectors file
    frozen_epochs: Optional[int]
    lr_multiplier: Optional[float]
    pretrain: Optional[DictConfig]  # the pretrain group when `source` is `pretrain`, else None

    @property
    def chained(self) -> bool:
        """The vectors come from this run's own pretrain group (trained first, or a finished one reused)."""
        return self.source == "pretrain"


@dataclass(frozen=True)
class RecordPlan:
    """What the MLflow record reads: where, under which names, and the resolved config its params come from."""

    uri: str
    experiment: str
    run_name: Optional[str]
    log_model: bool
    registered_model: Optional[str]
    system_metrics: bool
    dataset: str
    model: str
    seed: int
    config: DictConfig  # resolved, read-only: params (seqlab.record.naming.compared_params) and config.yaml


@dataclass(frozen=True)
class RuntimePlan:
    """How TensorFlow runs: the device, CPU threads per op, seeds, determinism and precision."""

    device: str  # cpu | gpu
    intra_op_threads: int  # 0: TensorFlow's default, one per core
    threads_asked: bool  # trainer.intra_op_threads was given (not the model's default): say when it cannot apply
    seed: int
    deterministic: bool
    mixed_precision: bool


@dataclass(frozen=True)
class RunPlan:
    config: DictConfig  # the resolved config, read-only
    runtime: RuntimePlan
    data: DataPlan
    features: FeaturePlan
    model: DictConfig
    trainer: DictConfig
    pretrained: PretrainedPlan
    record: RecordPlan
    optimized_metric: str

    def replaced(self, **keys) -> "RunPlan":
        """A new plan with dotted keys set (`trainer.cv_fold=2`): a fold of a cross-validation, the CPU threads
        in force once TensorFlow has started. This plan stays as it is."""
        container = OmegaConf.to_container(self.config)
        config = OmegaConf.create(container)
        for key, value in keys.items():
            OmegaConf.update(config, key, value, merge=False)
        return _build(config, self.runtime.device, self.runtime.threads_asked)

    @property
    def device(self) -> str:
        return self.runtime.device


def resolve(cfg: DictConfig, gpus: int = 0, pretraining: bool = False) -> RunPlan:
    """The run plan of `cfg` (validated by seqlab.config.validate) on a machine with `gpus` GPUs; `pretraining`:
    for `seqlab pretrain`, which runs the pretrain group itself. Raises ConfigError where `cfg` cannot run here."""
    t = cfg.trainer
    if t.device == "gpu" and not gpus:
        raise ConfigError("trainer.device is 'gpu' but TensorFlow sees no GPU on this machine (is the CUDA build "
                          "installed? .venv/bin/pip uninstall -y tensorflow-cpu && .venv/bin/pip install -e '.[gpu]'). "
                          "Use trainer.device=auto or cpu.")
    device = "gpu" if gpus and t.device != "cpu" else "cpu"
    config = OmegaConf.create(OmegaConf.to_container(cfg, resolve=True))
    config.pop("hydra", None)
    info = model_info(config.model.name)
    hierarchical = config.preprocess.name == "hierarchical"
    trainer = config.trainer
    if trainer.bucketing is None:  # a sweep across models batches them alike (seqlab.search.sweep.like_for_like)
        job = current_job()
        default = job.bucketing if job is not None and job.bucketing is not None else info.bucketed
        trainer.bucketing = bool(default) and not hierarchical
    if trainer.bucketing and config.preprocess.padding != "post":
        config.preprocess.padding = "post"  # buckets pad at the end; masks hide it from the model
    if trainer.deterministic is None:
        trainer.deterministic = device == "cpu"
    if trainer.weight_decay is None:
        trainer.weight_decay = default_weight_decay(trainer.optimizer)
    threads_asked = trainer.intra_op_threads is not None
    if not threads_asked:  # recurrent steps are many small ops: two threads split them at a loss
        trainer.intra_op_threads = 1 if device == "cpu" and info.recurrent else 0
    config.tracking.experiment = config.tracking.experiment or (PRETRAIN_EXPERIMENT if pretraining else
                                                                config.dataset.name)
    if not pretraining:
        _resolve_pretrained(config)
    return _build(config, device, threads_asked)


def default_weight_decay(optimizer: str) -> float:
    """What the optimizer decays without trainer.weight_decay: its Keras class's default (adamw's 0.004, else none),
    read from the signature: making an optimizer would start TensorFlow before the runtime is set up."""
    import inspect

    import keras  # only here: the rest of the plan is decided without Keras

    classes = {name.lower(): value for name, value in vars(keras.optimizers).items() if isinstance(value, type)}
    cls = classes.get("adam" if optimizer == "lazy_adam" else optimizer)  # seqlab's lazy_adam: Adam's defaults
    default = inspect.signature(cls).parameters["weight_decay"].default if cls is not None else None
    return float(default or 0.0)


def _resolve_pretrained(config: DictConfig) -> None:
    """Without model.pretrained the pretrain group and the fine-tuning keys do not apply (null, so not logged);
    with it, the fine-tuning keys take their defaults; vectors from elsewhere than the pretrain group drop it."""
    m = config.model
    if not m.pretrained:
        if config.get("pretrain") is not None:
            log.info(f"pretrain={config.pretrain.name} is not used: model.pretrained is null")
        if m.pretrained_frozen_epochs is not None or m.pretrained_lr_multiplier is not None:
            log.info("model.pretrained_frozen_epochs and model.pretrained_lr_multiplier do not apply: "
                     "model.pretrained is null")
        config.pretrain = None
        m.pretrained_frozen_epochs = m.pretrained_lr_multiplier = None
        return
    m.pretrained_frozen_epochs = m.pretrained_frozen_epochs or 0
    m.pretrained_lr_multiplier = 1.0 if m.pretrained_lr_multiplier is None else m.pretrained_lr_multiplier
    if m.pretrained != "pretrain":
        config.pretrain = None


def resume_target(cfg: DictConfig) -> Optional[tuple[str, str, bool]]:
    """(run id, store, takeover) of trainer.resume, or None: the run to continue, read before the plan is resolved
    (the plan is that run's own config)."""
    if not cfg.trainer.resume:
        return None
    return str(cfg.trainer.resume), str(cfg.tracking.uri), bool(cfg.trainer.takeover)


def experiment_name(cfg: DictConfig) -> str:
    """The experiment a config's runs go to: tracking.experiment, else the dataset's name."""
    return cfg.tracking.experiment or cfg.dataset.name


@dataclass(frozen=True)
class StoreTarget:
    """Where a config's runs are recorded: a sweep's parent and its search read this, not the config's groups."""

    uri: str
    experiment: str
    dataset: str


def store_target(cfg: DictConfig) -> StoreTarget:
    return StoreTarget(str(cfg.tracking.uri), experiment_name(cfg), str(cfg.dataset.name))


def data_part(cfg: DictConfig) -> DataPlan:
    """The data part of a config (a run's, or a stored one: an ensemble's members')."""
    t = cfg.trainer
    return DataPlan(dataset=cfg.dataset, data_dir=cfg.data_dir, cache_dir=cfg.cache_dir, seed=t.seed,
                    cv_folds=t.cv_folds, cv_fold=t.cv_fold,
                    speaker_tokens=bool(cfg.preprocess.get("speaker_tokens", False)))


def _build(config: DictConfig, device: str, threads_asked: bool) -> RunPlan:
    """The parts of an already resolved config."""
    config = structured(OmegaConf.to_container(config))  # typed again: the parts keep their schemas
    OmegaConf.set_readonly(config, True)
    t, p, m, r = config.trainer, config.preprocess, config.model, config.tracking
    data = data_part(config)
    features = FeaturePlan(preprocess=p, cache_dir=config.cache_dir, bucketing=bool(t.bucketing),
                           bucket_boundaries=tuple(t.bucket_boundaries) if t.bucket_boundaries is not None else None,
                           pad_to_boundaries=bool(t.jit_compile), metadata=bool(m.metadata))
    pretrained = PretrainedPlan(source=m.pretrained, frozen_epochs=m.pretrained_frozen_epochs,
                                lr_multiplier=m.pretrained_lr_multiplier, pretrain=config.get("pretrain"))
    record = RecordPlan(uri=r.uri, experiment=r.experiment, run_name=r.run_name, log_model=r.log_model,
                        registered_model=r.registered_model, system_metrics=r.system_metrics,
                        dataset=config.dataset.name, model=m.name, seed=t.seed, config=config)
    runtime = RuntimePlan(device=device, intra_op_threads=int(t.intra_op_threads), threads_asked=threads_asked,
                          seed=t.seed, deterministic=bool(t.deterministic), mixed_precision=bool(t.mixed_precision))
    return RunPlan(config=config, runtime=runtime, data=data, features=features, model=m, trainer=t,
                   pretrained=pretrained, record=record, optimized_metric=config.optimized_metric)
