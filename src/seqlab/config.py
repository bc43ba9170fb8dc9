"""The config schema and the checks Hydra cannot express.

Each option of the `dataset`, `preprocess` and `model` groups owns exactly its keys: its dataclass (next to the
code that reads it: `seqlab.data.SOURCES`, `seqlab.models.MODELS`, the preprocessings below) is stored as
`<group>_<option>_schema` and `conf/<group>/<option>.yaml` starts from it. So an unknown key for that option, or a
value of the wrong type, stops the run at composition with the option's keys listed, and the logged params are
exactly the keys the run used. `validate()` then checks ranges and allowed values, naming the key. Nothing here
imports Keras: a bad config is reported in about a second.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, ListConfig, OmegaConf

from seqlab.errors import ConfigError
from seqlab.metrics import canonical

# Keys that say where things are, how a run is named or shown, not what was trained: never params, never part
# of what makes two runs different (seqlab compare, seed groups, run names).
LOCATION_KEYS = ("tracking.", "hparams_search.", "data_dir", "cache_dir", "trainer.progress", "trainer.resume",
                 "trainer.takeover")


def config_dir() -> Path:
    """`conf/` of the source checkout (editable install) or the copy shipped inside the package."""
    here = Path(__file__).resolve().parent
    for candidate in (here.parents[1] / "conf", here / "conf"):
        if (candidate / "config.yaml").exists():
            return candidate
    raise ConfigError("seqlab cannot find its conf/ folder (config.yaml); reinstall it with 'make install'.")


def is_location_key(key: str) -> bool:
    return key.startswith(LOCATION_KEYS)


@dataclass
class PreprocessConfig:
    name: str = MISSING
    vocab_size: int = 5000
    padding: str = "pre"  # pre | post (post turns masking on)
    truncating: str = "pre"  # pre | post
    speaker_tokens: bool = False  # each message starts with its speaker as a word (threads)
    tokenizer: str = "words"  # words | wordpiece (subwords learned from the training texts: seqlab.wordpiece)


@dataclass
class WordsConfig(PreprocessConfig):
    """One sequence of word ids per example."""

    max_length: int = 500


@dataclass
class UnitsConfig(PreprocessConfig):
    """Units (messages or sentences) x words per example, for hierarchical models."""

    vocab_size: int = 20000
    max_units: int = 32
    max_unit_length: int = 32
    keep: str = "first"  # first | last units when a thread has more than max_units
    padding: str = "post"
    truncating: str = "post"


# preprocess.name -> its config (seqlab.preprocess.PREPROCESSORS has the code; it imports Keras)
PREPROCESSINGS = {"words": WordsConfig, "subword": WordsConfig, "hierarchical": UnitsConfig}


@dataclass
class TrainerConfig:
    epochs: int = 3
    batch_size: int = 64
    optimizer: str = "adam"
    learning_rate: float = 0.001  # the peak with a schedule
    schedule: str = "constant"  # constant | warmup_cosine | one_cycle (seqlab.optimizers.learning_rate_schedule)
    warmup: float = 0.1  # the share of all steps spent rising to learning_rate (warmup_cosine, one_cycle)
    weight_decay: Optional[float] = None  # decoupled (AdamW-style) for any optimizer; null: the optimizer's default
    label_smoothing: float = 0.0  # targets move this far towards uniform (loss only; accuracy is unchanged)
    clipnorm: Optional[float] = None
    early_stopping: Optional[int] = None  # patience in epochs on trainer.monitor; null = off
    monitor: str = "loss/val"  # what early stopping watches and restores the best epoch of: loss/val | accuracy/val
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
    takeover: bool = False  # resume a RUNNING run whose process was on another host (gone: a lost node, a killed job)
    # k-fold cross-validation: k runs nested under one holding mean and std; never the test split
    cv_folds: Optional[int] = None
    cv_fold: Optional[int] = None  # train only this fold (0-based) of cv_folds; null with cv_folds: all of them


@dataclass
class TrackingConfig:
    uri: str = "sqlite:///mlflow.db"
    experiment: Optional[str] = None  # default: the dataset name
    run_name: Optional[str] = None
    log_model: bool = True
    sweep: Optional[str] = None  # a --multirun's name (its parent run); the same name continues it
    system_metrics: bool = True  # MLflow's CPU, memory, disk, network (and GPU) metrics, every 10 s
    registered_model: Optional[str] = None  # register each run's model under this name; a sweep's best: @champion


@dataclass
class SearchConfig:
    storage: Optional[str] = None  # the Optuna study's storage (hparams_search=optuna): a journal file or a database URL


@dataclass
class SeqlabConfig:
    dataset: Any = MISSING  # the chosen option's schema (dataset_<name>_schema)
    preprocess: Any = MISSING
    model: Any = MISSING
    pretrain: Any = None  # a pretrain option (seqlab.pretrain) or null; used by model.pretrained=pretrain
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    hparams_search: Optional[SearchConfig] = None  # set by hparams_search=optuna (conf/hparams_search/)
    data_dir: str = "data"
    cache_dir: Optional[str] = None  # default: $SEQLAB_CACHE_DIR or ~/.cache/seqlab
    # The metric `train()` returns to Hydra sweepers (searches use accuracy/val, never a test metric).
    optimized_metric: str = "accuracy/test"


def option_schemas() -> dict[str, dict[str, type]]:
    """{group: {option: its config dataclass}} for the groups whose options own their keys."""
    from seqlab.data import SOURCES
    from seqlab.models import MODELS
    from seqlab.pretrain import PRETRAININGS

    return {"dataset": {name: source.config for name, source in SOURCES.items()},
            "preprocess": dict(PREPROCESSINGS),
            "model": {name: info.config for name, info in MODELS.items()},
            "pretrain": dict(PRETRAININGS)}


def schema_name(group: str, option: str) -> str:
    """What `conf/<group>/<option>.yaml` names in its defaults list: a root-level config, so that `--help` does not
    list the schemas as config groups of their own."""
    return f"{group}_{option}_schema"


def register_configs() -> None:
    """The root schema as `seqlab_schema` and each option's as `<group>_<option>_schema` (conf/ files use them)."""
    store = ConfigStore.instance()
    store.store(name="seqlab_schema", node=SeqlabConfig)
    for group, options in option_schemas().items():
        for name, schema in options.items():
            store.store(name=schema_name(group, name), node=schema)


def structured(container: dict) -> DictConfig:
    """A plain config (a run's stored config.yaml) typed by the root schema and its options' schemas."""
    typed = OmegaConf.structured(SeqlabConfig)
    schemas = option_schemas()
    for group, options in schemas.items():
        if group == "pretrain" and container.get(group) is None:
            continue  # optional group
        name = (container.get(group) or {}).get("name")
        if name not in options:
            raise ConfigError(f"Config key '{group}.name' is {name!r}; known options are {', '.join(sorted(options))}.")
        typed[group] = OmegaConf.structured(options[name])
    return OmegaConf.merge(typed, container)


def _allowed(key: str, value: Any, allowed: list[Any], given: Any = None) -> None:
    if value not in allowed:
        raise ConfigError(f"Config key '{key}' is {given if given is not None else value!r}; allowed values are "
                          f"{', '.join(map(repr, allowed))}.")


def _in_range(key: str, value: Any, low: float, high: float | None = None, *, high_open: bool = False,
              low_open: bool = False, why: str = "") -> None:
    if value is None:
        return
    _finite(key, value)  # NaN compares false with every bound: it would pass any range
    too_low = value <= low if low_open else value < low
    too_high = high is not None and (value >= high if high_open else value > high)
    if too_low or too_high:
        low_bracket = "(" if low_open else "["
        high_text = "inf)" if high is None else (f"{high})" if high_open else f"{high}]")
        raise ConfigError(f"Config key '{key}' is {value!r}; it must lie in {low_bracket}{low}, {high_text}"
                          f"{f' ({why})' if why else ''}.")


def _finite(key: str, value: Any) -> None:
    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(f"Config key '{key}' is {value}; it must be a finite number.")


OPTIMIZERS = ["adam", "lazy_adam", "adamw", "rmsprop", "sgd", "nadam", "adagrad"]
SCHEDULES = ["constant", "warmup_cosine", "one_cycle"]
# seqlab.metrics names; the names of seqlab 0.1 (test_accuracy, val_loss) are accepted too
METRICS = ["accuracy/test", "f1_macro/test", "loss/test", "accuracy/val", "loss/val"]
MONITORS = ["loss/val", "accuracy/val"]  # what early stopping can watch (the metrics every model logs)


# Range rules by key name, for whichever options have the key.
RATES = ("dropout", "recurrent_dropout", "embedding_dropout")  # [0, 1)
SPLITS = ("validation_split", "test_split")  # (0, 1)
AT_LEAST_ONE = ("max_train", "max_test", "num_words", "maxlen", "max_length", "max_units",
                "max_unit_length", "embedding_dim", "units", "layers", "filters", "kernel_size", "pool_size",
                "attention_units", "message_units", "heads", "ff_dim", "max_positions")
AT_LEAST_ZERO = ("skip_top", "index_from", "ngram_buckets")
# Seeds reach numpy.random.seed, which takes 0..2**32-1 only (keys named seed or ending in _seed, every group).
SEED_RANGE = (0, 2**32 - 1)
# Sizes, counts and ids end up in TensorFlow int32 shapes and tensors: larger ones crash inside TensorFlow.
INT32_MAX = 2**31 - 1
# A fixed bound, not a multiple of this machine's cores: a config (a sweep's, a stored run's on resume) must be valid
# wherever it runs. 1024 is above the hardware threads of any current server (2 x 192 cores x 2), and TensorFlow
# aborted (SIGABRT, minutes later) when asked for 100000.
MAX_THREADS = 1024
# TextVectorization's vocabulary holds the padding ("") and [UNK] first: 3 is the smallest that still has a word
# (4 with tokenizer=wordpiece, whose vocabulary also holds the message separator as a special token).
MIN_VOCAB_SIZE = 3
CHOICES = {"on_bad_lines": ["error", "skip"], "validation_source": ["auto", "official", "holdout"],
           "padding": ["pre", "post"], "truncating": ["pre", "post"], "keep": ["first", "last"],
           "pooling": ["mean", "cls"], "tokenizer": ["words", "wordpiece"]}


def validate(cfg: DictConfig) -> None:
    """Check ranges and allowed values that the typed schema cannot express. Raises ConfigError."""
    _check_known_keys(cfg)
    _check_numbers(cfg)
    for group in ("dataset", "preprocess", "model"):
        node = cfg[group]
        for key in node:
            value, full = node[key], f"{group}.{key}"
            if key in RATES:
                _in_range(full, value, 0, 1, high_open=True)
            elif key in SPLITS:
                _in_range(full, value, 0, 1, low_open=True, high_open=True)
            elif key in AT_LEAST_ONE:
                _in_range(full, value, 1)
            elif key in AT_LEAST_ZERO:
                _in_range(full, value, 0)
            elif key in CHOICES:
                _allowed(full, value, CHOICES[key])
    if "vocab_size" in cfg.preprocess:
        wordpiece = cfg.preprocess.get("tokenizer") == "wordpiece"  # which also keeps the message separator whole
        _in_range("preprocess.vocab_size", cfg.preprocess.vocab_size, MIN_VOCAB_SIZE + wordpiece,
                  why=("the padding, the out-of-vocabulary token and the message separator take the first three"
                       if wordpiece else "the padding and the out-of-vocabulary token take the first two")
                  + " entries; one word at least must remain")
    if "ngrams" in cfg.model:
        _in_range("model.ngrams", cfg.model.ngrams, 1, 3)
    t = cfg.trainer
    _in_range("trainer.epochs", t.epochs, 1)
    _in_range("trainer.batch_size", t.batch_size, 1)
    _in_range("trainer.learning_rate", t.learning_rate, 0, low_open=True)
    _in_range("trainer.clipnorm", t.clipnorm, 0, low_open=True)
    _allowed("trainer.schedule", t.schedule, SCHEDULES)
    _in_range("trainer.warmup", t.warmup, 0, 1, high_open=True)
    _in_range("trainer.weight_decay", t.weight_decay, 0)
    _in_range("trainer.label_smoothing", t.label_smoothing, 0, 1, high_open=True)
    _in_range("trainer.early_stopping", t.early_stopping, 0)
    _in_range("trainer.intra_op_threads", t.intra_op_threads, 0, MAX_THREADS,
              why="0: TensorFlow's default, one per core; the bound is above any machine's cores, and TensorFlow "
                  "aborts on huge counts")
    if t.bucket_boundaries is not None:
        boundaries = list(t.bucket_boundaries)
        if not boundaries or any(b < 1 for b in boundaries) or boundaries != sorted(set(boundaries)):
            raise ConfigError(f"Config key 'trainer.bucket_boundaries' is {boundaries}; it must be a strictly "
                              "increasing list of positive lengths (e.g. [64,128,256]), or null to derive them from "
                              "the training lengths.")
    _in_range("trainer.cv_folds", t.cv_folds, 2)
    if t.cv_fold is not None:
        if t.cv_folds is None:
            raise ConfigError(f"Config key 'trainer.cv_fold' is {t.cv_fold}, but trainer.cv_folds is null: give the "
                              "number of folds too (e.g. trainer.cv_folds=5 trainer.cv_fold=0).")
        _in_range("trainer.cv_fold", t.cv_fold, 0, t.cv_folds - 1)
    if t.cv_folds is not None and (t.resume or cfg.tracking.registered_model):
        raise ConfigError("trainer.cv_folds: a cross-validation trains no final model (trainer.resume and "
                          "tracking.registered_model need one); train the chosen config without cv_folds for that.")
    _allowed("trainer.monitor", canonical(t.monitor), MONITORS, t.monitor)
    _allowed("trainer.optimizer", t.optimizer, OPTIMIZERS)
    _allowed("trainer.device", t.device, ["auto", "cpu", "gpu"])
    _allowed("trainer.class_weight", t.class_weight, [None, "balanced"])
    _allowed("optimized_metric", canonical(cfg.optimized_metric), METRICS, cfg.optimized_metric)
    if cfg.tracking.registered_model and not cfg.tracking.log_model:
        raise ConfigError(f"Config key 'tracking.registered_model' is {cfg.tracking.registered_model!r}, but "
                          "tracking.log_model is false: there is no model to register. Set tracking.log_model=true "
                          "or tracking.registered_model=null.")
    _check_model_inputs(cfg)
    _check_pretrained(cfg)


def _check_pretrained(cfg: DictConfig) -> None:
    from seqlab.pretrain import validate_pretrain

    m = cfg.model
    validate_pretrain(cfg)
    _in_range("model.pretrained_frozen_epochs", m.pretrained_frozen_epochs, 0)
    _in_range("model.pretrained_lr_multiplier", m.pretrained_lr_multiplier, 0)
    if not m.pretrained:
        return
    if "embedding_dim" not in m:
        raise ConfigError(f"Config key 'model.pretrained' is {m.pretrained!r}, but model={m.name} has no word "
                          "embedding to initialise; pick a model with one (lstm, bilstm, cnn_lstm, fasttext_bigram, "
                          "hier_*) or set model.pretrained=null.")
    if m.pretrained == "pretrain" and cfg.get("pretrain") is None:
        raise ConfigError("Config key 'model.pretrained' is 'pretrain', which fine-tunes from the run's pretrain "
                          "group, but no pretraining is selected. Add pretrain=word2vec (or pretrain=lm), or name a "
                          "pretraining run (runs:/<id>) or a vectors file.")
    if m.pretrained == "pretrain" and cfg.pretrain.embedding_dim != m.embedding_dim:
        raise ConfigError(f"pretrain.embedding_dim is {cfg.pretrain.embedding_dim} but model.embedding_dim is "
                          f"{m.embedding_dim}: the pretrained vectors initialise the model's embedding, so they must "
                          f"match. Set pretrain.embedding_dim={m.embedding_dim} (or model.embedding_dim="
                          f"{cfg.pretrain.embedding_dim}).")


def _check_model_inputs(cfg: DictConfig) -> None:
    """Hierarchical models need units x words (preprocess=hierarchical, which their configs select); the metadata
    input needs a dataset with metadata columns."""
    from seqlab.models import model_info

    m, p = cfg.model, cfg.preprocess
    hierarchical_model = model_info(m.name).hierarchical
    if hierarchical_model != (p.name == "hierarchical"):
        reads = "units (messages or sentences) x words" if hierarchical_model else "one sequence of words"
        needs = "preprocess=hierarchical" if hierarchical_model else "a flat preprocessing such as preprocess=words"
        raise ConfigError(f"model={m.name} reads {reads} per example, but preprocess is {p.name!r}; it needs {needs}. "
                          "Drop the preprocess override (each model's config picks its own), or pick another model.")
    if m.metadata and not cfg.dataset.get("metadata_columns"):
        raise ConfigError(f"Config key 'model.metadata' is true, but dataset {cfg.dataset.name!r} has no metadata "
                          "columns (dataset.metadata_columns is empty). Use a dataset with numeric metadata "
                          "(persuasion, chitchat, dailydialog), name them with dataset.metadata_columns=[a,b] for "
                          "dataset=custom, or set model.metadata=false.")


def _check_numbers(cfg: DictConfig) -> None:
    """Rules for every number of every group, whatever its key: finite floats, seeds numpy takes, int32 sizes."""
    for group in ("dataset", "preprocess", "model", "pretrain", "trainer"):
        node = cfg.get(group)
        if node is None:
            continue  # pretrain=null
        for key in node:
            value, full = node[key], f"{group}.{key}"
            values = list(value) if isinstance(value, ListConfig) else [value]
            for item in values:
                if isinstance(item, bool) or not isinstance(item, (int, float)):
                    continue
                _finite(full, item)
                if key == "seed" or key.endswith("_seed"):
                    if not SEED_RANGE[0] <= item <= SEED_RANGE[1]:
                        raise ConfigError(f"Config key '{full}' is {item}; a seed must be a whole number from "
                                          f"{SEED_RANGE[0]} to {SEED_RANGE[1]} (2**32-1, numpy's limit).")
                elif isinstance(item, int) and item > INT32_MAX:  # too low: the per-key ranges below say so
                    raise ConfigError(f"Config key '{full}' is {item}; it must be at most {INT32_MAX} (2**31-1: "
                                      "TensorFlow holds sizes and counts as 32-bit integers).")


def _check_known_keys(cfg: DictConfig) -> None:
    """`+group.key=value` appends keys past the typed schema; a misspelt key must not pass silently."""
    known_root = {f.name for f in fields(SeqlabConfig)} | {"hydra"}  # Hydra's node, where the callback sees it
    unknown_root = sorted(set(cfg.keys()) - known_root)
    if unknown_root:
        key = unknown_root[0]
        raise ConfigError(f"Unknown config key '{key}'; "
                          f"the keys of the root config are {', '.join(sorted(known_root - {'hydra'}))}.")
    if isinstance(cfg.get("hparams_search"), DictConfig):
        unknown = sorted(set(cfg.hparams_search.keys()) - {f.name for f in fields(SearchConfig)})
        if unknown:
            raise ConfigError(f"Unknown config key 'hparams_search.{unknown[0]}'; the keys of 'hparams_search' are "
                              f"{', '.join(f.name for f in fields(SearchConfig))}.")
    schemas = option_schemas()
    for group in ("dataset", "preprocess", "model", "pretrain", "trainer", "tracking"):
        if cfg.get(group) is None:
            continue  # pretrain=null
        name = cfg[group].get("name")
        if group in schemas and name not in schemas[group]:
            raise ConfigError(f"Config key '{group}.name' is {name!r}; known options are "
                              f"{', '.join(sorted(schemas[group]))}.")
        schema = schemas[group][name] if group in schemas else {"trainer": TrainerConfig,
                                                                "tracking": TrackingConfig}[group]
        known = [f.name for f in fields(schema)]
        unknown = sorted(set(cfg[group].keys()) - set(known))
        if unknown:
            what = f"{group}={name}" if group in schemas else f"'{group}'"
            raise ConfigError(f"Unknown config key '{group}.{unknown[0]}'; the keys of {what} are {', '.join(known)}.")


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
