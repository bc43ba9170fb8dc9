"""`dataset=custom`: the user's own CSV, JSONL or Parquet file (by suffix; `.gz` for CSV and JSONL).

Three layouts, each one example per text or per thread:
- flat texts: `dataset.text_column`, one row per example;
- threads, one row each: `dataset.messages_column`, a list of messages (strings or {text, speaker} records;
  in a CSV, a JSON list);
- threads, one row per message: `dataset.thread_id_column` groups the rows into threads, in file order, the
  text in `dataset.text_column` (and the speaker in `dataset.speaker_column`).
Columns left null are detected by their usual names (`text`, `messages`, `thread_id`, `speaker`, `label`)
and seqlab says what it used. `dataset.metadata_columns` are numeric inputs (missing values stay NaN: the
model imputes and scales them with train statistics); the label is never one of them.

Bad records (malformed JSON lines, CSV lines with too many fields, empty texts, threads without messages,
missing labels) stop the load naming the line, or with `dataset.on_bad_lines=skip` are skipped and counted.
The thread datasets (`seqlab.data.threads`) read their files with the same functions.
"""

from __future__ import annotations

import csv
import gzip
import json
import logging
import re
import zlib
from dataclasses import dataclass
from decimal import Context, Decimal
from pathlib import Path

import numpy as np
import pandas as pd

from seqlab.data.common import Examples, finish_splits, join_messages, split_off, split_seed
from seqlab.errors import ConfigError, DataError

SUFFIXES = {".csv": "csv", ".tsv": "csv", ".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "jsonl",
            ".parquet": "parquet", ".pq": "parquet"}
DEFAULT_COLUMNS = {"text": "text", "messages": "messages", "thread_id": "thread_id", "speaker": "speaker",
                   "label": "label"}
ID_COLUMNS = ("id", "thread_id", "review_id")
# A speaker becomes one word in front of each message (preprocess.speaker_tokens), e.g. "xxspkpersuader".
SPEAKER_PREFIX = "xxspk"
LOCATION = "_seqlab_location"  # where a row came from ("line 12", "row 3"), for error messages

log = logging.getLogger(__name__)


def load(part):
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


def label_order(label: str):
    """Numeric labels in numeric order ('2' before '10'), then the others alphabetically."""
    try:
        return (0, float(label), label)
    except ValueError:
        return (1, 0.0, label)


def existing_file(path: str, key: str) -> Path:
    file = Path(path).expanduser()
    if not file.exists():
        raise DataError(f"{key} '{file}' does not exist.")
    if not file.is_file():
        raise DataError(f"{key} '{file}' is a folder; expected a CSV, JSONL or Parquet file.")
    return file


# --- reading files --------------------------------------------------------------------------------------

def file_format(path: Path) -> str:
    suffixes = [s.lower() for s in path.suffixes]
    if suffixes and suffixes[-1] == ".gz":
        suffixes = suffixes[:-1]
    kind = SUFFIXES.get(suffixes[-1] if suffixes else "")
    if kind is None or (kind == "parquet" and path.suffix.lower() == ".gz"):
        raise DataError(f"'{path}' has an unknown suffix; use .csv, .tsv, .jsonl (.json) or .parquet "
                        "(.csv.gz and .jsonl.gz are read too).")
    return kind


def read_table(path: Path, encoding: str = "utf-8", on_bad_lines: str = "error") -> pd.DataFrame:
    """The file as a frame, with a LOCATION column naming each row's line (JSONL) or row (CSV, Parquet)."""
    try:
        "".encode(encoding)
    except LookupError:
        raise ConfigError(f"Config key 'dataset.encoding' is {encoding!r}, which Python does not know; use e.g. "
                          "utf-8, latin-1 or cp1252.") from None
    kind = file_format(path)
    if kind == "jsonl":
        frame = _read_jsonl(path, encoding, on_bad_lines)
    elif kind == "csv":
        frame = _read_csv(path, encoding, on_bad_lines)
    else:
        try:
            import pyarrow.parquet

            # integer columns with gaps stay integers (pandas would make 7 into 7.0 and large ids inexact)
            frame = pyarrow.parquet.read_table(path).to_pandas(integer_object_nulls=True)
        except Exception as error:  # pyarrow raises many types for a file that is not Parquet
            raise DataError(f"'{path}' could not be read as Parquet ({type(error).__name__}: "
                            f"{str(error).splitlines()[0] if str(error) else ''}).") from None
        frame[LOCATION] = [f"row {i + 1}" for i in range(len(frame))]
    if frame.empty:
        raise DataError(f"'{path}' is empty: it holds no records.")
    frame.columns = [str(c) for c in frame.columns]
    return frame


def _open_binary(path: Path):
    return gzip.open(path, "rb") if path.suffix.lower() == ".gz" else open(path, "rb")


def _gzip_damage(path: Path) -> DataError | None:
    """The error for a .gz file that is cut off or damaged, found by reading it to its end (where gzip checks its
    CRC and length), or None when the file is sound or not gzip: what else went wrong is then the content's fault."""
    if path.suffix.lower() != ".gz":
        return None
    try:
        with gzip.open(path, "rb") as file:
            while file.read(1 << 20):
                pass
    except EOFError as error:
        return DataError(f"'{path}' is a truncated gzip file ({error}): it was cut off, e.g. by an interrupted "
                         "download or copy. Get the whole file again (gzip -t FILE checks one).")
    except (gzip.BadGzipFile, zlib.error) as error:
        return DataError(f"'{path}' is a corrupt gzip file ({error}): its compressed data are damaged. Get an intact "
                         "copy again (gzip -t FILE checks one).")
    except OSError:
        return None  # unreadable: the caller's message says so
    return None


def _decode_error(path: Path, encoding: str, where: str, error: UnicodeDecodeError) -> DataError:
    return DataError(f"'{path}' is not valid {encoding} ({where}: {error.reason} at byte {error.start}). Set "
                     "dataset.encoding to the file's encoding (latin-1 and cp1252 are common for older corpora).")


def _read_jsonl(path: Path, encoding: str, on_bad_lines: str) -> pd.DataFrame:
    """One JSON object per line; blank lines are ignored; a bad line stops the load or is skipped."""
    records, locations, bad = [], [], []
    try:
        with _open_binary(path) as file:
            for number, raw in enumerate(file, start=1):
                try:
                    line = raw.decode(encoding)
                except UnicodeDecodeError as error:
                    raise _gzip_damage(path) or _decode_error(path, encoding, f"line {number}", error) from None
                if number == 1:
                    line = line.lstrip("\ufeff")  # a byte-order mark
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                    problem = None if isinstance(record, dict) else f"a JSON {type(record).__name__}, not an object"
                except (json.JSONDecodeError, RecursionError) as error:
                    problem = f"not valid JSON: {getattr(error, 'msg', 'nested too deeply')}"
                if problem:
                    if on_bad_lines != "skip":
                        damage = _gzip_damage(path)  # garbage from a damaged stream comes before gzip's CRC check
                        if damage:
                            raise damage
                        raise DataError(f"'{path}' line {number} is {problem}. Each line must be one JSON object "
                                        "(a thread or a text with its label); set dataset.on_bad_lines=skip to skip "
                                        "bad lines.")
                    bad.append(number)
                    continue
                records.append(record)
                locations.append(f"line {number}")
    except (OSError, EOFError, zlib.error) as error:  # unreadable, or a broken .gz
        raise _gzip_damage(path) or DataError(f"'{path}' could not be read: {error}.") from None
    if bad:
        log.warning(f"skipped {len(bad)} malformed line(s) of '{path}' (dataset.on_bad_lines=skip), first at line "
                    f"{bad[0]}.")
    # object columns: an integer column with a gap stays integers (7, not 7.0), each value as JSON gave it
    frame = pd.DataFrame(records, dtype=object) if records else pd.DataFrame()
    frame[LOCATION] = locations
    return frame


def _read_csv(path: Path, encoding: str, on_bad_lines: str) -> pd.DataFrame:
    skipped: list[list[str]] = []
    options = dict(sep="\t" if ".tsv" in [s.lower() for s in path.suffixes] else ",", encoding=encoding,
                   dtype=str, keep_default_na=False, compression="infer")
    if on_bad_lines == "skip":  # a callable counts what pandas skips (the python engine only)
        options.update(on_bad_lines=lambda fields: skipped.append(fields), engine="python")
    try:
        frame = pd.read_csv(path, **options)
    except UnicodeDecodeError as error:
        raise _gzip_damage(path) or _decode_error(path, encoding, "in the file", error) from None
    except pd.errors.EmptyDataError:
        raise _gzip_damage(path) or DataError(f"'{path}' is empty: no header line and no rows.") from None
    except (pd.errors.ParserError, csv.Error, ValueError, OSError, EOFError, zlib.error) as error:
        damage = _gzip_damage(path)
        if damage:
            raise damage from None
        message = str(error).strip().splitlines()[-1] if str(error).strip() else type(error).__name__
        raise DataError(f"'{path}' could not be read as CSV ({message}). Set dataset.on_bad_lines=skip to skip "
                        "lines with too many fields.") from None
    if skipped:
        log.warning(f"skipped {len(skipped)} CSV line(s) with too many fields in '{path}' (dataset.on_bad_lines=skip).")
    frame = frame.replace("", np.nan)  # empty cells are missing values, as pandas reads them by default
    frame[LOCATION] = [f"row {i + 1}" for i in range(len(frame))]
    return frame


# --- columns and layouts ----------------------------------------------------------------------------------

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

    # not every source has each of these keys (seqlab.data.ThreadsConfig has messages_column only)
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


# --- records ------------------------------------------------------------------------------------------

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
        text = _cell_text(value)
        texts.append(text)
        problems.append(None if text.strip() else
                        ("a thread with no messages" if columns.layout != "text" else "an empty text"))
    labels = names(frame[columns.label], path, "labels", "class")
    problems = [p or (None if label is not None else f"no label (column {columns.label!r})")
                for p, label in zip(problems, labels)]
    metadata = _metadata(frame, columns.metadata, path) if columns.metadata else None
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


def _is_missing(value) -> bool:
    if value is None:
        return True
    try:
        return bool(pd.isna(value)) if np.ndim(value) == 0 else False
    except (TypeError, ValueError):
        return False


def _cell_text(value) -> str:
    if isinstance(value, str):
        text = value
    elif _is_missing(value):
        return ""
    else:
        text = value.decode("utf-8", errors="replace") if isinstance(value, bytes) else str(value)
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:  # lone surrogates (JSON "\\ud800") cannot reach TensorFlow: replace them
        return text.encode("utf-8", errors="replace").decode("utf-8")


# --- labels and ids: one rule for every format -------------------------------------------------------------
# A label or thread id is text; text that reads as a decimal number names that number, by its shortest spelling
# ('01', '1.0', JSON 1.0 -> '1'; '1.50' -> '1.5'), so a class or a thread is the same whatever file holds it.

NUMBER = re.compile(r"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")  # ASCII digits only


def written(value) -> str | None:
    """A cell as its file writes it (None when missing): text as is, numbers of JSON or Parquet as Python prints
    them (7, 1.0, 1.5), so that ids come back as they went in."""
    if _is_missing(value):
        return None
    if isinstance(value, (bool, np.bool_)):
        return str(bool(value))
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if isinstance(value, (float, np.floating)):
        return str(value)  # the shortest spelling that reads back as the same number
    return _cell_text(value)


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


def _metadata(frame: pd.DataFrame, names: list[str], path: Path) -> np.ndarray:
    """Numeric metadata as float32; missing and infinite values become NaN (the model imputes them)."""
    array = np.empty((len(frame), len(names)), dtype=np.float64)
    for column, name in enumerate(names):
        for row, value in enumerate(frame[name]):
            number = _number(value)
            if number is None:
                raise DataError(f"'{path}' {frame[LOCATION].iloc[row]}: metadata column {name!r} holds "
                                f"{str(value)[:50]!r}, not a number. dataset.metadata_columns must be numeric "
                                "(missing values are fine: they are imputed).")
            array[row, column] = number
    with np.errstate(over="ignore"):
        array = array.astype(np.float32)  # beyond float32's range: infinite, then missing
    array[~np.isfinite(array)] = np.nan
    return array


def _number(value) -> float | None:
    """A metadata value as a float (NaN when missing), or None when it is not a number."""
    if _is_missing(value):
        return np.nan
    try:
        return float(value)
    except (TypeError, ValueError, OverflowError):
        return None


# --- threads ------------------------------------------------------------------------------------------

def speaker_token(speaker) -> str:
    """'Persuader' -> 'xxspkpersuader': one word that survives the text standardization."""
    name = re.sub(r"[\W_]+", "", _cell_text(speaker).lower())
    return f"{SPEAKER_PREFIX}{name}" if name else ""


def message_text(message, speaker_tokens: bool = False, speaker=None) -> str:
    """One message (a string or a {text, speaker} record) as one line."""
    if isinstance(message, dict):
        speaker = message.get("speaker", speaker)
        message = message.get("text", "")
    text = " ".join(_cell_text(message).split())
    if speaker_tokens and text:
        token = speaker_token(speaker)
        return f"{token} {text}" if token else text
    return text


def thread_text(messages, speaker_tokens: bool = False) -> str:
    """A thread (a list of messages, or a JSON list of them) as one string, messages joined by '\\n'."""
    if isinstance(messages, str):
        stripped = messages.strip()
        if stripped.startswith("["):
            try:
                messages = json.loads(stripped)
            except json.JSONDecodeError:
                pass
        if isinstance(messages, str):
            return join_messages([messages])  # one message
    if isinstance(messages, dict) or not isinstance(messages, (list, tuple, np.ndarray)):
        raise TypeError(f"a thread must be a list of messages, not {type(messages).__name__}")
    lines = [message_text(m, speaker_tokens) for m in messages]
    return join_messages([line for line in lines if line])


def as_text(value, speaker_tokens: bool = False, thread: bool = False) -> str:
    """One example as the string a model reads: a thread (messages as strings or {text, speaker} records, or, where
    `thread`, their JSON list) joined as training joins it; a missing value is an empty text."""
    if isinstance(value, (list, tuple, np.ndarray)) or (thread and isinstance(value, str)):
        return thread_text(value, speaker_tokens)
    return "" if value is None or (isinstance(value, float) and np.isnan(value)) else str(value)


def _thread_or_problem(value, speaker_tokens: bool):
    if _is_missing(value):
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


def thread_keys(frame: pd.DataFrame, column: str, path) -> tuple[list[str], pd.DataFrame]:
    """(the thread key of each row, the rows that have one): a thread id is text, and JSON 1, "1" and 1.0 (CSV 1,
    1.0, 01) name one thread, by the rule of labels (canonical); rows without an id are left out."""
    keys = names(frame[column], path, "thread ids", "thread")
    present = np.asarray([key is not None for key in keys], dtype=bool)
    return [key for key in keys if key is not None], frame[present]


def metadata_values(frame: pd.DataFrame, columns: list[str], source: str, error: type[Exception] = DataError):
    """The numeric metadata `columns` of `frame` as float32 (NaN where missing: the model imputes it), as seqlab
    predict and the logged model read them; `source` names the input in the `error` raised."""
    missing = [column for column in columns if column not in frame.columns]
    if missing:
        raise error(f"The model also takes the numeric metadata columns {', '.join(columns)} (NaN where unknown); "
                    f"{source} lacks {', '.join(missing)}.")
    raw = frame[columns]
    values = raw.apply(pd.to_numeric, errors="coerce")
    not_numbers = (values.isna() & raw.notna()).to_numpy()
    if not_numbers.any():
        row, column = map(int, np.argwhere(not_numbers)[0])
        raise error(f"Row {row + 1} of {source}: metadata column {columns[column]!r} holds "
                    f"{str(raw.iloc[row, column])[:50]!r}, not a number.")
    return values.to_numpy(np.float32)
