"""`dataset=custom`: the user's own CSV, JSONL or Parquet file (by suffix; `.gz` for CSV and JSONL), read by
seqlab.data.tables, its rows made examples by seqlab.data.records.

Three layouts, each one example per text or per thread:
- flat texts: `dataset.text_column`, one row per example;
- threads, one row each: `dataset.messages_column`, a list of messages (strings or {text, speaker} records;
  in a CSV, a JSON list);
- threads, one row per message: `dataset.thread_id_column` groups the rows into threads, in file order, the
  text in `dataset.text_column` (and the speaker in `dataset.speaker_column`).
Columns left null are detected by their usual names (`text`, `messages`, `thread_id`, `speaker`, `label`)
and seqlab says what it used. `dataset.metadata_columns` are numeric inputs (missing and infinite values are NaN:
the model imputes and scales them with train statistics); the label is never one of them.

Bad records (malformed JSON lines, CSV lines with too many fields, empty texts, threads without messages,
missing labels) stop the load naming the line, or with `dataset.on_bad_lines=skip` are skipped and counted.
The test split is `dataset.test_path`, else a stratified `dataset.test_split` drawn with `dataset.split_seed`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from seqlab.data.base import DatasetConfig
from seqlab.data.common import finish_splits, split_off, split_seed
from seqlab.errors import ConfigError, DataError
from seqlab.schema.registry import register_option
from seqlab.schema.rules import rule

log = logging.getLogger(__name__)


@dataclass
class CustomConfig(DatasetConfig):
    """The user's own file: one text, one thread or one message per row (seqlab.data.custom)."""

    test_path: Optional[str] = None  # null = a stratified test_split of path, drawn with dataset.split_seed
    test_split: float = rule(0.2, low=0, high=1, low_open=True, high_open=True)
    text_column: Optional[str] = None
    messages_column: Optional[str] = None
    thread_id_column: Optional[str] = None
    speaker_column: Optional[str] = None
    label_column: Optional[str] = None
    metadata_columns: Optional[list[str]] = None
    on_bad_lines: str = rule("error", choices=['error', 'skip'])
    encoding: str = "utf-8"


register_option("dataset", "custom", CustomConfig, module=__name__)


def load(part):
    # The table reader imports pandas: imported when loading, so configs are checked without it.
    from seqlab.data.labels import label_order
    from seqlab.data.records import read_records
    from seqlab.data.tables import existing_file

    d = part.dataset
    if not d.path:
        raise ConfigError("dataset=custom needs dataset.path=FILE: a CSV, JSONL or Parquet file with a text column "
                          "(or a messages / thread_id column for threads) and a label column.")
    path = existing_file(d.path, "dataset.path")
    records = read_records(path, part)
    if d.test_path:
        test = read_records(existing_file(d.test_path, "dataset.test_path"), part, columns=records.columns)
        train = records
    else:
        train, test = records, None
    class_names = sorted(set(train.labels), key=label_order)
    all_train = train.to_examples(class_names, path)
    if test is None:
        seed = split_seed(part)
        all_train, test_examples = split_off(all_train, d.test_split, seed, "test")
        log.info(f"'{path.name}': the test split is a stratified {d.test_split} of it, drawn with "
                 f"dataset.split_seed={seed} (the same for every trainer.seed).")
        missing = sorted(set(range(len(class_names))) - set(all_train.labels.tolist()))
        if missing:
            raise DataError(f"'{path}': class {class_names[missing[0]]!r} has too few examples to appear in both "
                            f"train and test (dataset.test_split={d.test_split}); give more examples of it, or a "
                            "dataset.test_path.")
    else:
        test_examples = test.to_examples(class_names, Path(d.test_path))
    return finish_splits("custom", all_train, test_examples, class_names, part,
                         metadata_names=list(records.columns.metadata), source=str(path))
