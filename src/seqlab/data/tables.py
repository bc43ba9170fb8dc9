"""Reading a table: the user's CSV, TSV, JSONL or Parquet file (by suffix; `.gz` for CSV and JSONL) as a frame, with
the file's encoding and its bad lines (stop naming the line, or with `dataset.on_bad_lines=skip` skip and count
them); a cell as text, as its file writes it; and the one metadata reader, which training (dataset=custom and the
thread datasets), `seqlab predict` and the served model (seqlab.serving.pyfunc) share: numeric metadata as float32,
NaN where a value is missing or not finite (the model imputes it with the train statistics).
"""

from __future__ import annotations

import csv
import gzip
import json
import logging
import zlib
from pathlib import Path

import numpy as np
import pandas as pd

from seqlab.errors import ConfigError, DataError

SUFFIXES = {".csv": "csv", ".tsv": "csv", ".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "jsonl",
            ".parquet": "parquet", ".pq": "parquet"}
LOCATION = "_seqlab_location"  # where a row came from ("line 12", "row 3"), for error messages

log = logging.getLogger(__name__)


# --- reading files --------------------------------------------------------------------------------------

def existing_file(path: str, key: str) -> Path:
    file = Path(path).expanduser()
    if not file.exists():
        raise DataError(f"{key} '{file}' does not exist.")
    if not file.is_file():
        raise DataError(f"{key} '{file}' is a folder; expected a CSV, JSONL or Parquet file.")
    return file


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


# --- cells ----------------------------------------------------------------------------------------------

def is_missing(value) -> bool:
    """Whether a cell holds no value (None, NaN, NA); a list or an array is a value."""
    if value is None:
        return True
    try:
        return bool(pd.isna(value)) if np.ndim(value) == 0 else False
    except (TypeError, ValueError):
        return False


def cell_text(value) -> str:
    """A cell as text ('' when missing) that TensorFlow can take: valid UTF-8."""
    if isinstance(value, str):
        text = value
    elif is_missing(value):
        return ""
    else:
        text = value.decode("utf-8", errors="replace") if isinstance(value, bytes) else str(value)
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:  # lone surrogates (JSON "\\ud800") cannot reach TensorFlow: replace them
        return text.encode("utf-8", errors="replace").decode("utf-8")


def written(value) -> str | None:
    """A cell as its file writes it (None when missing): text as is, numbers of JSON or Parquet as Python prints
    them (7, 1.0, 1.5), so that ids come back as they went in."""
    if is_missing(value):
        return None
    if isinstance(value, (bool, np.bool_)):
        return str(bool(value))
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if isinstance(value, (float, np.floating)):
        return str(value)  # the shortest spelling that reads back as the same number
    return cell_text(value)


# --- metadata: one reader for training, seqlab predict and the served model ---------------------------------

def metadata_values(frame: pd.DataFrame, columns: list[str], source: str, error: type[Exception] = DataError,
                    hint: str = "") -> np.ndarray:
    """The numeric metadata `columns` of `frame` as float32, one row per row of `frame`: NaN where a value is missing
    or not finite (inf, -inf, 'nan', a number beyond float32's range), which the model imputes with the train
    statistics. Training (seqlab.data.records), `seqlab predict` and the served model read metadata by this one rule.

    A cell that is not a number raises `error`, naming `source` (the input), the row (by the frame's LOCATION column
    where it has one: 'line 12', 'row 3'; else its number) and the column, followed by `hint`.
    """
    missing = [column for column in columns if column not in frame.columns]
    if missing:
        raise error(f"The model also takes the numeric metadata columns {', '.join(columns)} (NaN where unknown); "
                    f"{source} lacks {', '.join(missing)}.")
    array = np.empty((len(frame), len(columns)), dtype=np.float64)
    for index, name in enumerate(columns):
        array[:, index] = _column_numbers(frame, name, source, error, hint)
    with np.errstate(over="ignore"):
        array = array.astype(np.float32)  # beyond float32's range: infinite, then missing
    array[~np.isfinite(array)] = np.nan
    return array


def _column_numbers(frame: pd.DataFrame, name: str, source: str, error: type[Exception], hint: str) -> np.ndarray:
    """Column `name` as float64 (NaN where missing); numbers written as text are read as Python's float() reads them."""
    column = frame[name]
    if pd.api.types.is_numeric_dtype(column.dtype):
        return column.to_numpy(np.float64, na_value=np.nan)
    numbers = np.empty(len(column), dtype=np.float64)
    for row, value in enumerate(column):
        number = _number(value)
        if number is None:
            where = (f"{source} {frame[LOCATION].iloc[row]}" if LOCATION in frame.columns
                     else f"Row {row + 1} of {source}")
            raise error(f"{where}: metadata column {name!r} holds {str(value)[:50]!r}, not a number.{hint}")
        numbers[row] = number
    return numbers


def _number(value) -> float | None:
    """A metadata value as a float (NaN when missing), or None when it is not a number."""
    if is_missing(value):
        return np.nan
    try:
        return float(value)
    except OverflowError:  # an integer beyond a float's range: infinite, so missing
        return np.inf
    except (TypeError, ValueError):
        return None
