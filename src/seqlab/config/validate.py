"""The one check of a composed config, before anything runs: unknown keys, each field's rule (seqlab.schema.rules,
declared on the dataclass fields), each group's own cross-field check, and the rules between groups below.

Raises ConfigError naming the key. Nothing here imports Keras: a bad config is reported in about a second.
"""

from __future__ import annotations

from dataclasses import fields

from omegaconf import DictConfig

from seqlab.config.options import group_schema
from seqlab.errors import ConfigError
from seqlab.models.catalog import model_info
from seqlab.schema.root import SeqlabConfig
from seqlab.schema.rules import check_fields

GROUPS = ("dataset", "preprocess", "model", "pretrain", "trainer", "tracking", "hparams_search")


def validate(cfg: DictConfig) -> None:
    """Check every key of `cfg` (a composed config). Raises ConfigError."""
    check_known_keys(cfg)
    check_fields(cfg, SeqlabConfig, "")  # the root's own keys (optimized_metric, data_dir)
    for group in GROUPS:
        node = cfg.get(group)
        if not isinstance(node, DictConfig):
            continue  # pretrain=null, no hparams_search
        schema = group_schema(group, node)
        check_fields(node, schema, group)
        if hasattr(schema, "check"):
            schema.check(node)
    check_between_groups(cfg)


def check_known_keys(cfg: DictConfig) -> None:
    """`+group.key=value` appends keys past the typed schema; a misspelt key must not pass silently."""
    known_root = {f.name for f in fields(SeqlabConfig)} | {"hydra"}  # Hydra's node, where the callback sees it
    unknown_root = sorted(set(cfg.keys()) - known_root)
    if unknown_root:
        raise ConfigError(f"Unknown config key '{unknown_root[0]}'; "
                          f"the keys of the root config are {', '.join(sorted(known_root - {'hydra'}))}.")
    for group in GROUPS:
        node = cfg.get(group)
        if not isinstance(node, DictConfig):
            continue
        schema = group_schema(group, node)
        known = [f.name for f in fields(schema)]
        unknown = sorted(set(node.keys()) - set(known))
        if unknown:
            what = f"'{group}'" if "name" not in known else f"{group}={node.name}"
            raise ConfigError(f"Unknown config key '{group}.{unknown[0]}'; the keys of {what} are {', '.join(known)}.")


def check_between_groups(cfg: DictConfig) -> None:
    """The rules that involve two groups."""
    t, m, p = cfg.trainer, cfg.model, cfg.preprocess
    if t.cv_folds is not None and (t.resume or cfg.tracking.registered_model):
        raise ConfigError("trainer.cv_folds: a cross-validation trains no final model (trainer.resume and "
                          "tracking.registered_model need one); train the chosen config without cv_folds for that.")
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
    if t.bucketing and p.name == "hierarchical":
        raise ConfigError(f"trainer.bucketing=true needs one sequence of words per example, but preprocess="
                          f"{p.name} gives units x words (hierarchical inputs are already short per unit). Set "
                          "trainer.bucketing=false or leave it null.")
    check_pretrained(cfg)


def check_pretrained(cfg: DictConfig) -> None:
    m = cfg.model
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
