"""Rules on config fields: a range or a set of choices declared where the field is declared, checked by one walker.

    dropout: float = rule(0.0, low=0, high=1, high_open=True)
    padding: str = rule("pre", choices=["pre", "post"])
    seed: int = rule(42, seed=True)

`check_fields(node, schema, group)` walks a composed group (a DictConfig or a plain dict) against its dataclass and
raises ConfigError naming the first key that breaks its rule. Every number of every field also passes the rules
that hold whatever the key: a finite float, an int that TensorFlow's int32 shapes hold. Rules that involve two
fields or two groups are checks next to the group's dataclass (a `check` classmethod) or in seqlab.config.validate.
Nothing here imports more than the standard library and OmegaConf: a bad config is reported in about a second.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, Callable, Optional, Sequence

from omegaconf import MISSING, ListConfig

from seqlab.errors import ConfigError

# Seeds reach numpy.random.seed, which takes 0..2**32-1 only.
SEED_RANGE = (0, 2**32 - 1)
# Sizes, counts and ids end up in TensorFlow int32 shapes and tensors: larger ones crash inside TensorFlow.
INT32_MAX = 2**31 - 1
RULE = "seqlab.rule"  # the field metadata key


@dataclass(frozen=True)
class Rule:
    low: Optional[float] = None
    high: Optional[float] = None
    low_open: bool = False
    high_open: bool = False
    choices: Optional[tuple] = None
    seed: bool = False  # a numpy seed: 0..2**32-1
    why: str = ""  # said after the range when a value is refused
    normalize: Optional[Callable[[Any], Any]] = None  # applied before the choices are checked (metric aliases)

    def check(self, key: str, value: Any) -> None:
        if value is None:
            return
        for item in (list(value) if isinstance(value, (list, tuple, ListConfig)) else [value]):
            if self.seed:
                check_seed(key, item)
            if self.low is not None or self.high is not None:
                in_range(key, item, self.low, self.high, low_open=self.low_open, high_open=self.high_open,
                         why=self.why)
            if self.choices is not None:
                allowed(key, self.normalize(item) if self.normalize else item, list(self.choices), given=item)


def rule(default: Any = MISSING, *, default_factory: Callable | None = None, low: float | None = None,
         high: float | None = None, low_open: bool = False, high_open: bool = False,
         choices: Sequence | None = None, seed: bool = False, why: str = "",
         normalize: Callable[[Any], Any] | None = None) -> Any:
    """A dataclass field with its rule (for a list, the rule holds for each item)."""
    metadata = {RULE: Rule(low, high, low_open, high_open, tuple(choices) if choices is not None else None, seed, why,
                           normalize)}
    if default_factory is not None:
        return field(default_factory=default_factory, metadata=metadata)
    return field(default=default, metadata=metadata)


def rate(default: float, **options) -> Any:
    """A dropout-like rate in [0, 1)."""
    return rule(default, low=0, high=1, high_open=True, **options)


def positive(default: Any, **options) -> Any:
    """A size or count of at least 1 (null where the field allows it)."""
    return rule(default, low=1, **options)


def rule_of(schema_field: dataclasses.Field) -> Rule | None:
    return schema_field.metadata.get(RULE)


def check_fields(node: Any, schema: type, prefix: str) -> None:
    """Every field of `schema` present in `node` against its rule, and every number against the general ones."""
    for schema_field in dataclasses.fields(schema):
        if schema_field.name not in node:
            continue
        value, key = node[schema_field.name], f"{prefix}.{schema_field.name}" if prefix else schema_field.name
        found = rule_of(schema_field)
        check_number(key, value, seed=found is not None and found.seed)
        if found is not None:
            found.check(key, value)


def check_number(key: str, value: Any, seed: bool = False) -> None:
    """Whatever the key: a finite float; an int at most 2**31-1 (a seed's own rule allows up to 2**32-1)."""
    for item in (list(value) if isinstance(value, (list, tuple, ListConfig)) else [value]):
        if isinstance(item, bool) or not isinstance(item, (int, float)):
            continue
        finite(key, item)
        if isinstance(item, int) and item > INT32_MAX and not seed:
            raise ConfigError(f"Config key '{key}' is {item}; it must be at most {INT32_MAX} (2**31-1: "
                              "TensorFlow holds sizes and counts as 32-bit integers).")


def check_seed(key: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not SEED_RANGE[0] <= value <= SEED_RANGE[1]:
        raise ConfigError(f"Config key '{key}' is {value}; a seed must be a whole number from "
                          f"{SEED_RANGE[0]} to {SEED_RANGE[1]} (2**32-1, numpy's limit).")


def allowed(key: str, value: Any, choices: list[Any], given: Any = None) -> None:
    if value not in choices:
        raise ConfigError(f"Config key '{key}' is {given if given is not None else value!r}; allowed values are "
                          f"{', '.join(map(repr, choices))}.")


def in_range(key: str, value: Any, low: float | None, high: float | None = None, *, high_open: bool = False,
             low_open: bool = False, why: str = "") -> None:
    if value is None:
        return
    finite(key, value)  # NaN compares false with every bound: it would pass any range
    too_low = low is not None and (value <= low if low_open else value < low)
    too_high = high is not None and (value >= high if high_open else value > high)
    if too_low or too_high:
        low_text = "(-inf" if low is None else f"{'(' if low_open else '['}{low}"
        high_text = "inf)" if high is None else (f"{high})" if high_open else f"{high}]")
        raise ConfigError(f"Config key '{key}' is {value!r}; it must lie in {low_text}, {high_text}"
                          f"{f' ({why})' if why else ''}.")


def finite(key: str, value: Any) -> None:
    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(f"Config key '{key}' is {value}; it must be a finite number.")
