"""Every option of every group: importing the modules that declare them fills seqlab.schema.registry."""

from __future__ import annotations

from seqlab.data import catalog as _datasets  # noqa: F401
from seqlab.features import options as _preprocessings  # noqa: F401
from seqlab.models import catalog as _models  # noqa: F401
from seqlab.pretraining import options as _pretrainings  # noqa: F401
from seqlab.schema.registry import OPTIONS, option_schema

__all__ = ["OPTIONS", "option_schema", "group_schema"]


def group_schema(group: str, node) -> type:
    """The dataclass that `node` (a composed group) follows: its option's, or the group's one schema."""
    from seqlab.schema.root import FIXED_GROUPS

    if group in FIXED_GROUPS:
        return FIXED_GROUPS[group]
    return option_schema(group, node.get("name"))
