"""Labels and thread ids: one rule for every format.

A label or thread id is text; text that reads as a decimal number names that number, by its shortest spelling
('01', '1.0', JSON 1.0 -> '1'; '1.50' -> '1.5'), so a class or a thread is the same whatever file holds it.
"""

from __future__ import annotations

import logging
import re
from decimal import Context, Decimal
from pathlib import Path

import numpy as np
import pandas as pd

from seqlab.data.tables import written

log = logging.getLogger(__name__)

NUMBER = re.compile(r"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")  # ASCII digits only


def label_order(label: str):
    """Numeric labels in numeric order ('2' before '10'), then the others alphabetically."""
    try:
        return (0, float(label), label)
    except ValueError:
        return (1, 0.0, label)


def canonical(text: str) -> str:
    """The name of a label or thread id: text stripped, and text that reads as a decimal number as that number's
    shortest spelling ('01', '1.0', '+1', '1e0' -> '1'; '1.50' -> '1.5')."""
    text = text.strip()
    if not NUMBER.fullmatch(text):
        return text
    number = Decimal(text).normalize(Context(prec=len(text) + 2))  # exact: long numeric ids stay apart
    if number.is_zero():
        return "0"
    if abs(number.adjusted()) > 40:
        return str(number)  # '1E+400', not 400 zeros
    return format(number, "f")


def names(values, path: Path, what: str, one: str) -> list[str | None]:
    """canonical() of each value (None for missing ones), with a warning where one number is written in several
    ways: they become one `one` (class, thread), which the user may not expect."""
    spellings: dict[str, list[str]] = {}
    result = []
    for value in values:
        text = None if isinstance(value, (list, dict, np.ndarray)) else written(value)
        name = canonical(text) if text is not None else ""
        result.append(name or None)
        if name and text.strip() not in spellings.setdefault(name, []):
            spellings[name].append(text.strip())
    merged = {name: spelled for name, spelled in spellings.items() if len(spelled) > 1}
    if merged:
        name, spelled = next(iter(merged.items()))
        more = f" ({len(merged)} numbers written in several ways in all)" if len(merged) > 1 else ""
        log.warning(f"'{path}': {what} spelled {', '.join(map(repr, spelled[:5]))} are one number, so one {one} "
                    f"{name!r}{more}. Labels and thread ids that read as numbers are compared as numbers in every "
                    "format; write them as text (e.g. 'v01') to keep different spellings apart.")
    return result


def thread_keys(frame: pd.DataFrame, column: str, path) -> tuple[list[str], pd.DataFrame]:
    """(the thread key of each row, the rows that have one): a thread id is text, and JSON 1, "1" and 1.0 (CSV 1,
    1.0, 01) name one thread, by the rule of labels (canonical); rows without an id are left out."""
    keys = names(frame[column], path, "thread ids", "thread")
    present = np.asarray([key is not None for key in keys], dtype=bool)
    return [key for key in keys if key is not None], frame[present]
