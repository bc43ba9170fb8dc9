"""Chat threads, one label per thread: `dailydialog`, `persuasion` and `chitchat`.

Gzipped JSON Lines, one thread per line (`thread_id`, `split`, `label`, `messages` as {speaker, text}
records, numeric metadata); see `threads/README.md` beside the files. Each is found at `dataset.path`,
else under `data_dir/threads/` or `data_dir/`. A thread becomes one string, its messages joined by "\\n"
(with a speaker word in front of each where `preprocess.speaker_tokens`), so flat and hierarchical models
read the same examples.

The files carry their split. `dataset.validation_source` picks the validation data: `official` (the
file's validation threads), `holdout` (the validation threads join train, and a seeded, stratified
`dataset.validation_split` of it is held out) or `auto`: official unless it lacks classes of train, as
DailyDialog's does (none of three topics), where validation accuracy and early stopping would ignore them.
With `dataset.max_train`, an official validation split is sampled down to `max_train * validation_split`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np

from seqlab.data.base import DatasetConfig
from seqlab.data.common import Examples, finish_splits, stratified_sample
from seqlab.errors import ConfigError, DataError
from seqlab.schema.registry import register_option
from seqlab.schema.rules import rule

log = logging.getLogger(__name__)

FILES = {
    "dailydialog": "dailydialog_topic.jsonl.gz",
    "persuasion": "persuasionforgood_donation.jsonl.gz",
    "chitchat": "chitchat_prompt.jsonl.gz",
}
SPLITS = ("train", "validation", "test")


@dataclass
class ThreadsConfig(DatasetConfig):
    """A thread file with a split column (dailydialog, persuasion, chitchat)."""

    messages_column: str = "messages"
    label_column: str = "label"
    metadata_columns: Optional[list[str]] = None  # numeric inputs for model.metadata=true
    # official | holdout (of train) | auto (official unless it lacks classes)
    validation_source: str = rule("auto", choices=['auto', 'official', 'holdout'])
    on_bad_lines: str = rule("error", choices=['error', 'skip'])  # error | skip
    encoding: str = "utf-8"


for _name in FILES:
    register_option("dataset", _name, ThreadsConfig, module=__name__)


def load(part):
    # The table reader imports pandas: imported when loading, so configs are checked without it.
    from seqlab.data.labels import label_order
    from seqlab.data.records import frame_records, resolve_columns
    from seqlab.data.tables import read_table

    d = part.dataset
    if d.target != "label":
        raise ConfigError(f"Config key 'dataset.target' is {d.target!r}; dataset {d.name!r} has one target, 'label' "
                          "(the thread's class).")
    path = find_file(d.name, d.path, part.data_dir)
    frame = read_table(path, d.encoding, d.on_bad_lines)
    if "split" not in frame.columns:
        raise DataError(f"'{path}' has no 'split' column (train, validation or test per thread); its columns are "
                        f"{', '.join(map(repr, frame.columns[:20]))}. Use dataset=custom for a file without one.")
    unknown = sorted(set(frame["split"].astype(str)) - set(SPLITS))
    if unknown:
        raise DataError(f"'{path}': split {unknown[0]!r} is not one of {', '.join(SPLITS)}.")
    columns = resolve_columns(frame, d, path, quiet=True)
    parts = {split: frame_records(frame[frame["split"] == split], columns, path, d.on_bad_lines,
                                  part.speaker_tokens)
             for split in SPLITS if (frame["split"] == split).any()}
    for split in ("train", "test"):
        if split not in parts:
            raise DataError(f"'{path}' has no {split} threads (column 'split').")
    class_names = sorted(set(parts["train"].labels), key=label_order)
    train = parts["train"].to_examples(class_names, path)
    test = parts["test"].to_examples(class_names, path)
    validation = parts["validation"].to_examples(class_names, path) if "validation" in parts else None
    train, validation = choose_validation(d, train, validation, class_names)
    if validation is not None and d.max_train is not None:  # a small run validates on a proportionate sample
        size = max(1, round(d.max_train * d.validation_split))
        validation = stratified_sample(validation, size, part.seed, "validation")
    return finish_splits(d.name, train, test, class_names, part, validation=validation,
                         metadata_names=list(columns.metadata), source=str(path))


def choose_validation(d, train: Examples, validation: Examples | None, class_names: list[str]):
    """(train, validation or None); None: finish_splits holds dataset.validation_split out of train."""
    source = d.validation_source
    if source == "official":
        if validation is None:
            raise DataError(f"dataset.validation_source=official, but dataset {d.name!r} has no validation threads; "
                            "use holdout or auto.")
        return train, validation
    if validation is None:
        return train, None
    if source == "auto":
        lacking = sorted(set(np.unique(train.labels).tolist()) - set(np.unique(validation.labels).tolist()))
        if not lacking:
            return train, validation
        log.info(f"{d.name}: the official validation split has no {', '.join(class_names[i] for i in lacking)} "
                 f"threads; holding out a stratified {d.validation_split} of train and official validation instead "
                 "(dataset.validation_source=auto).")
    return concatenate(train, validation), None


def concatenate(first: Examples, second: Examples) -> Examples:
    def both(a, b):
        return None if a is None or b is None else [*a, *b]

    metadata = None if first.metadata is None or second.metadata is None else np.concatenate(
        [first.metadata, second.metadata])
    return Examples(texts=[*first.texts, *second.texts], labels=np.concatenate([first.labels, second.labels]),
                    metadata=metadata, ids=both(first.ids, second.ids))


def find_file(name: str, path: str | None, data_dir: str) -> Path:
    """`dataset.path`, else the dataset's file under data_dir/threads or data_dir."""
    if path:
        given = Path(path).expanduser()
        if given.is_dir():
            given = given / FILES[name]
        if not given.is_file():
            raise DataError(f"dataset.path '{given}' does not exist; expected the {name} thread file "
                            f"({FILES[name]}, JSON Lines).")
        return given
    root = Path(data_dir).expanduser()
    candidates = [root / "threads" / FILES[name], root / FILES[name]]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    raise DataError(f"The {name} threads were not found: looked for {', '.join(str(c) for c in candidates)}. Set "
                    f"SEQLAB_DATA_DIR (or data_dir) to the folder holding threads/{FILES[name]}, or pass "
                    "dataset.path=FILE.")
