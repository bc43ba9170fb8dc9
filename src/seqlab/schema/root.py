"""The root config and the groups that have one schema (trainer, tracking, hparams_search), with their rules.

The `dataset`, `preprocess`, `model` and `pretrain` groups hold whichever option was picked: its dataclass is
registered next to the code that reads it (seqlab.schema.registry).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

from omegaconf import MISSING

from seqlab.errors import ConfigError
from seqlab.metrics import canonical
from seqlab.schema.rules import positive, rule

# Keys that say where things are, how a run is named or shown, not what was trained: never params, never part
# of what makes two runs different (seqlab compare, seed groups, run names).
LOCATION_KEYS = ("tracking.", "hparams_search.", "data_dir", "cache_dir", "trainer.progress", "trainer.resume",
                 "trainer.takeover")

OPTIMIZERS = ["adam", "lazy_adam", "adamw", "rmsprop", "sgd", "nadam", "adagrad"]
SCHEDULES = ["constant", "warmup_cosine", "one_cycle"]
# seqlab.metrics names; the names of seqlab 0.1 (test_accuracy, val_loss) are accepted too
METRICS = ["accuracy/test", "f1_macro/test", "loss/test", "accuracy/val", "loss/val"]
MONITORS = ["loss/val", "accuracy/val"]  # what early stopping can watch (the metrics every model logs)
# A fixed bound, not a multiple of this machine's cores: a config (a sweep's, a stored run's on resume) must be valid
# wherever it runs. 1024 is above the hardware threads of any current server (2 x 192 cores x 2), and TensorFlow
# aborted (SIGABRT, minutes later) when asked for 100000.
MAX_THREADS = 1024


def is_location_key(key: str) -> bool:
    return key.startswith(LOCATION_KEYS)


@dataclass
class TrainerConfig:
    epochs: int = positive(3)
    batch_size: int = positive(64)
    optimizer: str = rule("adam", choices=OPTIMIZERS)
    learning_rate: float = rule(0.001, low=0, low_open=True)  # the peak with a schedule
    schedule: str = rule("constant", choices=SCHEDULES)  # seqlab.training.optimizers.learning_rate_schedule
    warmup: float = rule(0.1, low=0, high=1, high_open=True)  # share of all steps rising to learning_rate
    weight_decay: Optional[float] = rule(None, low=0)  # decoupled (AdamW-style); null: the optimizer's default
    label_smoothing: float = rule(0.0, low=0, high=1, high_open=True)  # targets move this far towards uniform
    clipnorm: Optional[float] = rule(None, low=0, low_open=True)
    early_stopping: Optional[int] = rule(None, low=0)  # patience in epochs on trainer.monitor; null = off
    # what early stopping watches and restores the best epoch of
    monitor: str = rule("loss/val", choices=MONITORS, normalize=canonical)
    seed: int = rule(42, seed=True)
    device: str = rule("auto", choices=["auto", "cpu", "gpu"])
    mixed_precision: bool = False  # mixed_float16 on GPU, mixed_bfloat16 on CPU; the output layer stays float32
    jit_compile: bool = False  # XLA
    # Length buckets (post padding, masks on): null = on for the models where it keeps accuracy (the model's trait)
    bucketing: Optional[bool] = None
    bucket_boundaries: Optional[list[int]] = None  # null = derived from the training lengths
    deterministic: Optional[bool] = None  # null = on for CPU, off for GPU
    # Threads one CPU op may use: null = 1 for models with recurrent layers on CPU (their steps are many small ops),
    # TensorFlow's default (0: one per core) otherwise; logged as what ran
    intra_op_threads: Optional[int] = rule(
        None, low=0, high=MAX_THREADS, why="0: TensorFlow's default, one per core; the bound is above any machine's "
                                            "cores, and TensorFlow aborts on huge counts")
    class_weight: Optional[str] = rule(None, choices=[None, "balanced"])
    progress: bool = True  # Keras progress bar
    checkpoint: bool = True  # back up the training state into the run after each epoch (trainer.resume needs it)
    resume: Optional[str] = None  # a run id: continue that MLflow run from its last checkpoint
    takeover: bool = False  # resume a RUNNING run whose process was on another host (gone: a lost node, a killed job)
    # k-fold cross-validation: k runs nested under one holding mean and std; never the test split
    cv_folds: Optional[int] = rule(None, low=2)
    cv_fold: Optional[int] = rule(None, low=0)  # train only this fold (0-based) of cv_folds; null: all of them

    @staticmethod
    def check(t: Any) -> None:
        """The trainer's rules that involve two of its keys, or a list's shape."""
        if t.bucket_boundaries is not None:
            boundaries = list(t.bucket_boundaries)
            if not boundaries or any(b < 1 for b in boundaries) or boundaries != sorted(set(boundaries)):
                raise ConfigError(f"Config key 'trainer.bucket_boundaries' is {boundaries}; it must be a strictly "
                                  "increasing list of positive lengths (e.g. [64,128,256]), or null to derive them "
                                  "from the training lengths.")
        if t.cv_fold is not None:
            if t.cv_folds is None:
                raise ConfigError(f"Config key 'trainer.cv_fold' is {t.cv_fold}, but trainer.cv_folds is null: give "
                                  "the number of folds too (e.g. trainer.cv_folds=5 trainer.cv_fold=0).")
            if t.cv_fold > t.cv_folds - 1:
                raise ConfigError(f"Config key 'trainer.cv_fold' is {t.cv_fold}; it must lie in [0, "
                                  f"{t.cv_folds - 1}].")


@dataclass
class TrackingConfig:
    uri: str = "sqlite:///mlflow.db"
    experiment: Optional[str] = None  # default: the dataset name
    run_name: Optional[str] = None
    log_model: bool = True
    sweep: Optional[str] = None  # a --multirun's name (its parent run); the same name continues it
    system_metrics: bool = True  # MLflow's CPU, memory, disk, network (and GPU) metrics, every 10 s
    registered_model: Optional[str] = None  # register each run's model under this name; a sweep's best: @champion

    @staticmethod
    def check(t: Any) -> None:
        if t.registered_model and not t.log_model:
            raise ConfigError(f"Config key 'tracking.registered_model' is {t.registered_model!r}, but "
                              "tracking.log_model is false: there is no model to register. Set tracking.log_model=true "
                              "or tracking.registered_model=null.")


@dataclass
class SearchConfig:
    storage: Optional[str] = None  # the Optuna study's storage (hparams_search=optuna): a journal file or a database URL


@dataclass
class SeqlabConfig:
    dataset: Any = MISSING  # the chosen option's schema (dataset_<name>_schema)
    preprocess: Any = MISSING
    model: Any = MISSING
    pretrain: Any = None  # a pretrain option or null; used by model.pretrained=pretrain
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    hparams_search: Optional[SearchConfig] = None  # set by hparams_search=optuna (conf/hparams_search/)
    data_dir: str = "data"
    cache_dir: Optional[str] = None  # default: $SEQLAB_CACHE_DIR or ~/.cache/seqlab
    # The metric `train()` returns to Hydra sweepers (searches use accuracy/val, never a test metric).
    optimized_metric: str = rule("accuracy/test", choices=METRICS, normalize=canonical)


# The groups with one schema each (the others hold a registered option)
FIXED_GROUPS = {"trainer": TrainerConfig, "tracking": TrackingConfig, "hparams_search": SearchConfig}
