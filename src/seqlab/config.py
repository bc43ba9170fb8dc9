"""Structured config schema (typed defaults for every group) and the checks Hydra cannot express.

Hydra merges the YAML files of `conf/` into `SeqlabConfig`, so an unknown key or a value of the wrong
type stops the run at composition. `validate()` then checks ranges and allowed values, naming the key.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import DictConfig, OmegaConf

from seqlab.errors import ConfigError


@dataclass
class DatasetConfig:
    name: str = "imdb"
    # imdb: `sentiment` (2 classes) or `rating` (8 classes); thread datasets: `label`.
    target: str = "sentiment"
    path: Optional[str] = None  # a file or folder; else looked up under data_dir, else downloaded
    test_path: Optional[str] = None
    download: bool = True
    max_train: Optional[int] = None
    max_test: Optional[int] = None
    validation_split: float = 0.1
    # thread files with their own validation split: official | holdout (of train) | auto (official unless it lacks classes)
    validation_source: str = "auto"
    test_split: float = 0.2  # custom files without test_path
    text_column: Optional[str] = None
    label_column: Optional[str] = None
    messages_column: Optional[str] = None
    thread_id_column: Optional[str] = None
    speaker_column: Optional[str] = None
    metadata_columns: Optional[list[str]] = None
    encoding: str = "utf-8"
    on_bad_lines: str = "error"  # error | skip
    # keras.datasets.imdb options (dataset=imdb_keras)
    num_words: Optional[int] = None
    maxlen: Optional[int] = None
    skip_top: int = 0
    index_from: int = 3


@dataclass
class PreprocessConfig:
    name: str = "words"
    vocab_size: int = 5000
    max_length: int = 500
    padding: str = "pre"
    truncating: str = "pre"
    # hierarchical inputs: units (messages or sentences) x words per unit
    max_units: int = 16
    max_unit_length: int = 32
    keep: str = "first"  # first | last units when a thread has more than max_units
    speaker_tokens: bool = False


@dataclass
class ModelConfig:
    name: str = "lstm"
    embedding_dim: int = 32
    units: int = 100
    layers: int = 1
    dropout: float = 0.0
    recurrent_dropout: float = 0.0
    embedding_dropout: float = 0.0
    filters: int = 32
    kernel_size: int = 3
    pool_size: int = 2
    attention_units: int = 64
    message_units: int = 32
    ngram_buckets: int = 0
    ngrams: int = 2
    metadata: bool = False


@dataclass
class TrainerConfig:
    epochs: int = 3
    batch_size: int = 64
    optimizer: str = "adam"
    learning_rate: float = 0.001
    clipnorm: Optional[float] = None
    early_stopping: Optional[int] = None  # patience in epochs on trainer.monitor; null = off
    monitor: str = "val_loss"  # what early stopping watches and restores the best epoch of: val_loss | val_accuracy
    seed: int = 42
    device: str = "auto"  # auto | cpu | gpu
    mixed_precision: bool = False  # mixed_float16 on GPU, mixed_bfloat16 on CPU; the output layer stays float32
    jit_compile: bool = False  # XLA
    # Length buckets (post padding, masks on): null = on for the models where it keeps accuracy (seqlab.pipeline)
    bucketing: Optional[bool] = None
    bucket_boundaries: Optional[list[int]] = None  # null = derived from the training lengths
    deterministic: Optional[bool] = None  # null = on for CPU, off for GPU
    # Threads one CPU op may use: null = 1 for models with recurrent layers on CPU (their steps are many small ops),
    # TensorFlow's default (0: one per core) otherwise; logged as what ran
    intra_op_threads: Optional[int] = None
    class_weight: Optional[str] = None  # null | balanced
    progress: bool = True  # Keras progress bar
    checkpoint: bool = True  # back up the training state into the run after each epoch (trainer.resume needs it)
    resume: Optional[str] = None  # a run id: continue that MLflow run from its last checkpoint


@dataclass
class TrackingConfig:
    uri: str = "sqlite:///mlflow.db"
    experiment: Optional[str] = None  # default: the dataset name
    run_name: Optional[str] = None
    log_model: bool = True
    sweep: Optional[str] = None  # a --multirun's name (its parent run); the same name continues it


@dataclass
class SeqlabConfig:
    dataset: DatasetConfig = field(default_factory=DatasetConfig)
    preprocess: PreprocessConfig = field(default_factory=PreprocessConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    data_dir: str = "data"
    cache_dir: Optional[str] = None  # default: $SEQLAB_CACHE_DIR or ~/.cache/seqlab
    # The metric `train()` returns to Hydra sweepers (searches use val_accuracy, never test).
    optimized_metric: str = "test_accuracy"


def register_configs() -> None:
    """Make the schema available to `conf/config.yaml` as `seqlab_schema`."""
    ConfigStore.instance().store(name="seqlab_schema", node=SeqlabConfig)


def _allowed(key: str, value: Any, allowed: list[Any]) -> None:
    if value not in allowed:
        raise ConfigError(f"Config key '{key}' is {value!r}; allowed values are {', '.join(map(repr, allowed))}.")


def _in_range(key: str, value: Any, low: float, high: float | None = None, *, high_open: bool = False,
              low_open: bool = False) -> None:
    if value is None:
        return
    too_low = value <= low if low_open else value < low
    too_high = high is not None and (value >= high if high_open else value > high)
    if too_low or too_high:
        low_bracket = "(" if low_open else "["
        high_text = "inf)" if high is None else (f"{high})" if high_open else f"{high}]")
        raise ConfigError(f"Config key '{key}' is {value!r}; it must lie in {low_bracket}{low}, {high_text}.")


OPTIMIZERS = ["adam", "lazy_adam", "adamw", "rmsprop", "sgd", "nadam", "adagrad"]
METRICS = ["test_accuracy", "test_f1_macro", "test_loss", "val_accuracy", "val_loss"]
MONITORS = ["val_loss", "val_accuracy"]  # what early stopping can watch (the metrics every model logs)


def validate(cfg: DictConfig) -> None:
    """Check ranges and allowed values that the typed schema cannot express. Raises ConfigError."""
    _check_known_keys(cfg)
    d, p, m, t = cfg.dataset, cfg.preprocess, cfg.model, cfg.trainer
    _in_range("dataset.max_train", d.max_train, 1)
    _in_range("dataset.max_test", d.max_test, 1)
    _in_range("dataset.validation_split", d.validation_split, 0, 1, low_open=True, high_open=True)
    _in_range("dataset.test_split", d.test_split, 0, 1, low_open=True, high_open=True)
    _allowed("dataset.on_bad_lines", d.on_bad_lines, ["error", "skip"])
    _allowed("dataset.validation_source", d.validation_source, ["auto", "official", "holdout"])
    _in_range("dataset.num_words", d.num_words, 1)
    _in_range("dataset.maxlen", d.maxlen, 1)
    _in_range("dataset.skip_top", d.skip_top, 0)
    _in_range("dataset.index_from", d.index_from, 0)
    _in_range("preprocess.vocab_size", p.vocab_size, 2)
    _in_range("preprocess.max_length", p.max_length, 1)
    _in_range("preprocess.max_units", p.max_units, 1)
    _in_range("preprocess.max_unit_length", p.max_unit_length, 1)
    _allowed("preprocess.padding", p.padding, ["pre", "post"])
    _allowed("preprocess.truncating", p.truncating, ["pre", "post"])
    _allowed("preprocess.keep", p.keep, ["first", "last"])
    for key in ("dropout", "recurrent_dropout", "embedding_dropout"):
        _in_range(f"model.{key}", m[key], 0, 1, high_open=True)
    for key in ("embedding_dim", "units", "layers", "filters", "kernel_size", "pool_size", "attention_units",
                "message_units"):
        _in_range(f"model.{key}", m[key], 1)
    _in_range("model.ngram_buckets", m.ngram_buckets, 0)
    _in_range("model.ngrams", m.ngrams, 1, 3)
    _in_range("trainer.epochs", t.epochs, 1)
    _in_range("trainer.batch_size", t.batch_size, 1)
    _in_range("trainer.learning_rate", t.learning_rate, 0, low_open=True)
    _in_range("trainer.clipnorm", t.clipnorm, 0, low_open=True)
    _in_range("trainer.early_stopping", t.early_stopping, 0)
    _in_range("trainer.intra_op_threads", t.intra_op_threads, 0)
    _allowed("trainer.monitor", t.monitor, MONITORS)
    _allowed("trainer.optimizer", t.optimizer, OPTIMIZERS)
    _allowed("trainer.device", t.device, ["auto", "cpu", "gpu"])
    _allowed("trainer.class_weight", t.class_weight, [None, "balanced"])
    _allowed("optimized_metric", cfg.optimized_metric, METRICS)
    from seqlab.models import MODEL_BUILDERS  # last and late: the registry imports Keras (seconds)

    _allowed("model.name", m.name, sorted(MODEL_BUILDERS))
    _check_model_inputs(cfg)


def _check_model_inputs(cfg: DictConfig) -> None:
    """Hierarchical models need units x words (preprocess=hierarchical, which their configs select); the metadata
    input needs a dataset with metadata columns."""
    from seqlab.models import HIERARCHICAL_MODELS

    m, p = cfg.model, cfg.preprocess
    hierarchical_model = m.name in HIERARCHICAL_MODELS
    if hierarchical_model != (p.name == "hierarchical"):
        reads = "units (messages or sentences) x words" if hierarchical_model else "one sequence of words"
        needs = "preprocess=hierarchical" if hierarchical_model else "a flat preprocessing such as preprocess=words"
        raise ConfigError(f"model={m.name} reads {reads} per example, but preprocess is {p.name!r}; it needs {needs}. "
                          "Drop the preprocess override (each model's config picks its own), or pick another model.")
    if m.metadata and not cfg.dataset.metadata_columns:
        raise ConfigError(f"Config key 'model.metadata' is true, but dataset {cfg.dataset.name!r} has no metadata "
                          "columns (dataset.metadata_columns is empty). Use a dataset with numeric metadata "
                          "(persuasion, chitchat, dailydialog), name them with dataset.metadata_columns=[a,b] for "
                          "dataset=custom, or set model.metadata=false.")


def _check_known_keys(cfg: DictConfig) -> None:
    """`+group.key=value` appends keys past the typed schema; a misspelt key must not pass silently."""
    from dataclasses import fields

    for group, schema in (("dataset", DatasetConfig), ("preprocess", PreprocessConfig), ("model", ModelConfig),
                          ("trainer", TrainerConfig), ("tracking", TrackingConfig)):
        known = {f.name for f in fields(schema)}
        unknown = sorted(set(cfg[group].keys()) - known)
        if unknown:
            raise ConfigError(f"Unknown config key '{group}.{unknown[0]}'; the keys of '{group}' are "
                              f"{', '.join(sorted(known))}.")


def to_flat_dict(cfg: DictConfig) -> dict[str, Any]:
    """The resolved config as {'model.name': 'lstm', ...} for MLflow params (Hydra's own node left out)."""
    container = OmegaConf.to_container(cfg, resolve=True)
    flat: dict[str, Any] = {}

    def walk(prefix: str, node: Any) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                walk(f"{prefix}.{key}" if prefix else str(key), value)
        else:
            flat[prefix] = node

    walk("", {k: v for k, v in container.items() if k != "hydra"})
    return flat
