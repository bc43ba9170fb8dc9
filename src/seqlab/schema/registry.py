"""The one registry of config-group options: `register_option(group, name, schema)` for a dataset source, a
preprocessing, a model or a pretraining. Each option owns exactly the keys of its dataclass: Hydra's schema for
`conf/<group>/<name>.yaml` (stored as `<group>_<name>_schema` by seqlab.config.compose) and the rules the walker
checks. The modules that declare options import this one; seqlab.config.options imports them all."""

from __future__ import annotations

import dataclasses

from seqlab.errors import ConfigError

GROUPS = ("dataset", "preprocess", "model", "pretrain")
OPTIONS: dict[str, dict[str, type]] = {group: {} for group in GROUPS}
TRAITS: dict[str, dict[str, dict]] = {group: {} for group in GROUPS}  # what the group's code needs to know of each


def register_option(group: str, name: str, schema: type, **traits) -> type:
    """Make `schema` (a dataclass) option `name` of `group`, with the `traits` its group's code reads (a dataset's
    loader module); returns the schema."""
    if group not in OPTIONS:
        raise TypeError(f"unknown config group {group!r}; groups with options: {', '.join(GROUPS)}")
    if not dataclasses.is_dataclass(schema):
        raise TypeError(f"{group} option {name!r}: its schema {schema!r} must be a dataclass")
    OPTIONS[group][name] = schema
    TRAITS[group][name] = traits
    return schema


def option_schema(group: str, name: object) -> type:
    """The dataclass of `group`'s option `name`. Raises ConfigError naming the key and the known options."""
    options = OPTIONS[group]
    if name not in options:
        raise ConfigError(f"Config key '{group}.name' is {name!r}; known options are {', '.join(sorted(options))}.")
    return options[name]
