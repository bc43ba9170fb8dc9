"""Hydra's side of the schema: the root and every option stored in Hydra's ConfigStore (`conf/<group>/<option>.yaml`
starts from `<group>_<option>_schema`), a stored config typed again, and the flat view of a config."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import DictConfig, OmegaConf

from seqlab.config.options import OPTIONS, option_schema
from seqlab.errors import ConfigError
from seqlab.schema.root import SeqlabConfig


def config_dir() -> Path:
    """`conf/` of the source checkout (editable install) or the copy shipped inside the package."""
    here = Path(__file__).resolve().parent.parent
    for candidate in (here.parents[1] / "conf", here / "conf"):
        if (candidate / "config.yaml").exists():
            return candidate
    raise ConfigError("seqlab cannot find its conf/ folder (config.yaml); reinstall it with 'make install'.")


def schema_name(group: str, option: str) -> str:
    """What `conf/<group>/<option>.yaml` names in its defaults list: a root-level config, so that `--help` does not
    list the schemas as config groups of their own."""
    return f"{group}_{option}_schema"


def register_configs() -> None:
    """The root schema as `seqlab_schema` and each option's as `<group>_<option>_schema` (conf/ files use them)."""
    store = ConfigStore.instance()
    store.store(name="seqlab_schema", node=SeqlabConfig)
    for group, options in OPTIONS.items():
        for name, schema in options.items():
            store.store(name=schema_name(group, name), node=schema)


def structured(container: dict) -> DictConfig:
    """A plain config (a run's stored config.yaml) typed by the root schema and its options' schemas."""
    typed = OmegaConf.structured(SeqlabConfig)
    for group in OPTIONS:
        if group == "pretrain" and container.get(group) is None:
            continue  # optional group
        typed[group] = OmegaConf.structured(option_schema(group, (container.get(group) or {}).get("name")))
    return OmegaConf.merge(typed, container)


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
