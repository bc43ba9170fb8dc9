"""A table's rows as examples: which columns hold what (the configured names, else the usual ones found in the
file), in three layouts, each one example per text or per thread:
- flat texts: `dataset.text_column`, one row per example;
- threads, one row each: `dataset.messages_column`, a list of messages (strings or {text, speaker} records;
  in a CSV, a JSON list);
- threads, one row per message: `dataset.thread_id_column` groups the rows into threads, in file order, the
  text in `dataset.text_column` (and the speaker in `dataset.speaker_column`).
Bad records (empty texts, threads without messages, missing labels) stop the load naming the row, or with
`dataset.on_bad_lines=skip` are skipped and counted. dataset=custom and the thread datasets read their files so.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from seqlab.data.common import Examples, join_messages
from seqlab.data.labels import names, thread_keys
from seqlab.data.tables import LOCATION, cell_text, is_missing, metadata_values, read_table, written
from seqlab.data.texts import message_text, thread_text
from seqlab.errors import ConfigError, DataError

DEFAULT_COLUMNS = {"text": "text", "messages": "messages", "thread_id": "thread_id", "speaker": "speaker",
                   "label": "label"}
ID_COLUMNS = ("id", "thread_id", "review_id")
METADATA_HINT = " dataset.metadata_columns must be numeric (missing values are fine: they are imputed)."

log = logging.getLogger(__name__)


@dataclass
class Columns:
    layout: str  # text | messages | per_message
    text: str | None
    messages: str | None
    thread_id: str | None
    speaker: str | None
    label: str
    metadata: list[str]

    def check(self, frame: pd.DataFrame, path: Path) -> None:
        for key, name in (("text_column", self.text), ("messages_column", self.messages),
                          ("thread_id_column", self.thread_id), ("speaker_column", self.speaker),
                          ("label_column", self.label)):
            if name is not None and name not in frame.columns:
                raise DataError(f"'{path}' has no column {name!r} (dataset.{key}); its columns are "
                                f"{_column_list(frame)}.")
        missing = [name for name in self.metadata if name not in frame.columns]
        if missing:
            raise DataError(f"'{path}' has no metadata column {missing[0]!r} (dataset.metadata_columns); its columns "
                            f"are {_column_list(frame)}.")


def _column_list(frame: pd.DataFrame) -> str:
    names = [c for c in frame.columns if c != LOCATION]
    return ", ".join(map(repr, names)) if names else "none"


def resolve_columns(frame: pd.DataFrame, d, path: Path, quiet: bool = False) -> Columns:
    """Which columns hold what: the configured names, else the usual ones found in the file."""
    present = set(frame.columns)

    def detected(key: str) -> str | None:
        name = DEFAULT_COLUMNS[key]
        return name if name in present else None

    # not every source has each of these keys (seqlab.data.threads.ThreadsConfig has messages_column only)
    text, messages, thread_id = d.get("text_column"), d.get("messages_column"), d.get("thread_id_column")
    if messages:
        layout = "messages"
    elif thread_id:
        layout, text = "per_message", text or detected("text") or "text"
    elif text:
        layout = "text"
    elif detected("messages"):
        layout, messages = "messages", detected("messages")
    elif detected("thread_id") and detected("text"):
        layout, thread_id, text = "per_message", detected("thread_id"), detected("text")
    elif detected("text"):
        layout, text = "text", detected("text")
    else:
        raise DataError(f"'{path}' has no text column: expected 'text' (one text per row), 'messages' (a list of "
                        f"messages per row) or 'thread_id' with 'text' (one row per message); its columns are "
                        f"{_column_list(frame)}. Name yours with dataset.text_column, dataset.messages_column or "
                        "dataset.thread_id_column.")
    label = d.label_column or DEFAULT_COLUMNS["label"]
    if label not in present:
        raise DataError(f"'{path}' has no label column {label!r}"
                        f"{' (dataset.label_column)' if d.label_column else ''}; its columns are "
                        f"{_column_list(frame)}. Name it with dataset.label_column.")
    metadata = list(d.metadata_columns or [])
    if label in metadata:
        raise ConfigError(f"Config key 'dataset.metadata_columns' lists the label column {label!r}: the target is "
                          "never an input. Remove it from dataset.metadata_columns.")
    for name in (text, messages):
        if name is not None and name == label:
            raise ConfigError(f"The label column {label!r} is also the text column; set dataset.label_column and "
                              "dataset.text_column (or messages_column) to different columns.")
    speaker = d.get("speaker_column") or (detected("speaker") if layout == "per_message" else None)
    columns = Columns(layout, text, messages, thread_id, speaker, label, metadata)
    columns.check(frame, path)
    if not quiet and not all([d.label_column, text or messages or thread_id]):
        used = {"text": f"texts from column {text!r}", "messages": f"threads from the message lists in {messages!r}",
                "per_message": f"threads grouped by {thread_id!r}, one message per row from {text!r}"}[layout]
        log.info(f"'{path.name}': {used}, labels from {label!r}"
                 f"{', speakers from ' + repr(speaker) if speaker else ''} (set dataset.*_column to choose others).")
    return columns


@dataclass
class Records:
    """Examples with string labels, before the class names are known."""

    texts: list[str]
    labels: list[str]
    metadata: np.ndarray | None
    ids: list[str] | None
    locations: list[str]
    columns: Columns

    def to_examples(self, class_names: list[str], path: Path) -> Examples:
        index = {name: i for i, name in enumerate(class_names)}
        unseen = [(label, where) for label, where in zip(self.labels, self.locations) if label not in index]
        if unseen:
            label, where = unseen[0]
            raise DataError(f"'{path}' {where} has label {label!r}, which the training data never shows "
                            f"({len(unseen)} such example(s)); the model can only predict the training classes "
                            f"{', '.join(map(repr, class_names[:10]))}{' ...' if len(class_names) > 10 else ''}.")
        return Examples(texts=self.texts, labels=np.asarray([index[label] for label in self.labels], np.int64),
                        metadata=self.metadata, ids=self.ids)


def read_records(path: Path, part, columns: Columns | None = None, frame: pd.DataFrame | None = None) -> Records:
    d = part.dataset
    if frame is None:
        frame = read_table(path, d.encoding, d.on_bad_lines)
    if columns is None:
        columns = resolve_columns(frame, d, path)
    else:
        columns.check(frame, path)
    return frame_records(frame, columns, path, d.on_bad_lines, part.speaker_tokens)


def frame_records(frame: pd.DataFrame, columns: Columns, path: Path, on_bad_lines: str = "error",
                  speaker_tokens: bool = False) -> Records:
    if columns.layout == "per_message":
        frame = _group_messages(frame, columns, path, on_bad_lines, speaker_tokens)
        text_column = "_seqlab_thread"
    elif columns.layout == "messages":
        frame = frame.assign(_seqlab_thread=[_thread_or_problem(v, speaker_tokens) for v in frame[columns.messages]])
        text_column = "_seqlab_thread"
    else:
        text_column = columns.text
    texts, problems = [], []
    for value in frame[text_column]:
        if isinstance(value, Problem):
            texts.append("")
            problems.append(value.what)
            continue
        text = cell_text(value)
        texts.append(text)
        problems.append(None if text.strip() else
                        ("a thread with no messages" if columns.layout != "text" else "an empty text"))
    labels = names(frame[columns.label], path, "labels", "class")
    problems = [p or (None if label is not None else f"no label (column {columns.label!r})")
                for p, label in zip(problems, labels)]
    metadata = metadata_values(frame, columns.metadata, f"'{path}'", hint=METADATA_HINT) if columns.metadata else None
    keep = np.asarray([p is None for p in problems], dtype=bool)
    locations = frame[LOCATION].tolist()
    if not keep.all():
        first = int(np.argmin(keep))
        count = int((~keep).sum())
        if on_bad_lines != "skip":
            raise DataError(f"'{path}' {locations[first]} holds {problems[first]} ({count} bad record(s) in all). "
                            "Fix or remove them, or set dataset.on_bad_lines=skip to skip them.")
        log.warning(f"skipped {count} record(s) of '{path}' without text or label (dataset.on_bad_lines=skip), "
                    f"first at {locations[first]}: {problems[first]}.")
    if not keep.any():
        raise DataError(f"'{path}' holds no usable records: every one lacks a text or a label.")
    id_column = columns.thread_id if columns.layout == "per_message" else next(
        (c for c in ID_COLUMNS if c in frame.columns), None)
    ids = None if id_column is None else [written(v) or "" for v in frame[id_column]]  # as written; missing: ""
    chosen = np.flatnonzero(keep)
    return Records(texts=[texts[i] for i in chosen], labels=[labels[i] for i in chosen],
                   metadata=None if metadata is None else metadata[chosen],
                   ids=None if ids is None else [ids[i] for i in chosen],
                   locations=[locations[i] for i in chosen], columns=columns)


@dataclass
class Problem:
    what: str


def _thread_or_problem(value, speaker_tokens: bool):
    if is_missing(value):
        return Problem("a thread with no messages")
    try:
        return thread_text(value, speaker_tokens)
    except (TypeError, RecursionError):
        return Problem(f"messages that are not a list ({type(value).__name__}: {str(value)[:40]!r})")


def _group_messages(frame: pd.DataFrame, columns: Columns, path: Path, on_bad_lines: str,
                    speaker_tokens: bool) -> pd.DataFrame:
    """One row per message -> one row per thread (threads in order of first appearance, messages in file order).

    A thread's label must be the same on all its rows; its metadata are the first non-missing values.
    """
    keys, frame = thread_keys(frame, columns.thread_id, path)
    if frame.empty:
        raise DataError(f"'{path}': every row lacks a thread id (column {columns.thread_id!r}).")
    speakers = frame[columns.speaker] if columns.speaker else pd.Series([None] * len(frame), index=frame.index)
    lines = [message_text(text, speaker_tokens, speaker) for text, speaker in zip(frame[columns.text], speakers)]
    grouped = pd.DataFrame({"key": keys, "shown": frame[columns.thread_id].map(written).to_numpy(), "line": lines,
                            "label": names(frame[columns.label], path, "labels", "class"),
                            LOCATION: frame[LOCATION].to_numpy()})
    rows = []
    for key, group in grouped.groupby("key", sort=False):
        labels = sorted(set(group["label"].dropna()))
        text: object = join_messages([line for line in group["line"] if line])
        if len(labels) > 1:
            text = Problem(f"thread {key!r} with different labels on its rows ({', '.join(map(repr, labels[:3]))})")
        rows.append({"_seqlab_key": key, columns.thread_id: group["shown"].iloc[0], "_seqlab_thread": text,
                     columns.label: labels[0] if labels else None, LOCATION: group[LOCATION].iloc[0]})
    threads = pd.DataFrame(rows)
    if columns.metadata:
        first = frame.assign(_seqlab_key=keys).groupby("_seqlab_key", sort=False)[columns.metadata].first()
        threads = threads.join(first, on="_seqlab_key")
    return threads
