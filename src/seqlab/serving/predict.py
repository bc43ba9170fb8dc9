"""`seqlab predict MODEL_URI (--text ... | --input FILE) [--output FILE.csv]`: labels for raw text.

The logged model holds its preprocessing, so it takes raw strings; it is an MLflow pyfunc model
(seqlab.serving.pyfunc.TextClassifier, built by seqlab.serving.pyfunc._load_pyfunc), loaded and called as any MLflow client
would, so `seqlab predict`, `mlflow models serve` and batch scoring share one prediction path. Predictions go to
stdout, or with --output to that CSV file (with the probability of every class) and a one-line summary to stderr;
status lines go to stderr. --output never replaces the --input file, and an existing file only with --overwrite.
Ids are written as the input wrote them (seqlab.data.custom.written); a thread is one per id, by the rule of labels.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

from seqlab.data.custom import as_text, metadata_values, read_table, thread_keys, written
from seqlab.errors import ConfigError, DataError, SeqlabError, report_error

log = logging.getLogger(__name__)

TEXT_COLUMNS = ("text", "review", "sentence", "content")
THREAD_COLUMNS = ("messages",)
ID_COLUMNS = ("id", "thread_id", "review_id")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="seqlab predict", description="Predict labels for raw text with a model "
                                "logged by 'seqlab train'.")
    p.add_argument("model_uri", help="runs:/<run_id>/model, models:/<name>/<version>, "
                   "models:/<name>@champion (a sweep's best, tracking.registered_model), or a local model folder")
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--text", action="append", help="a text to classify (repeat for several)")
    source.add_argument("--input", help="a .txt file (one text per line), or a file as dataset=custom reads it "
                        "(.csv, .tsv, .jsonl, each also .gz, or .parquet) with a text or messages column")
    p.add_argument("--column", help="the column holding the text or the list of messages (default: detected)")
    p.add_argument("--output", help="write a CSV with one row per input, in input order, instead of printing the "
                   "predictions (never the --input file; its folder must exist)")
    p.add_argument("--overwrite", action="store_true", help="replace the --output file if it exists")
    p.add_argument("--batch-size", type=positive_int, default=256, help="texts per call of the model (default 256)")
    p.add_argument("--tracking-uri", default=os.environ.get("MLFLOW_TRACKING_URI", "sqlite:///mlflow.db"),
                   help="the MLflow store that runs:/ and models:/ URIs refer to (default: $MLFLOW_TRACKING_URI, "
                   "else sqlite:///mlflow.db, where 'seqlab train' writes by default)")
    return p


def positive_int(text: str) -> int:
    """--batch-size: a whole number of at least 1 (argparse reports the refusal with its usage, exit 2)."""
    try:
        value = int(text)
    except ValueError:
        value = None
    if value is None or value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not allowed: give a whole number of at least 1 (texts per call "
                                         "of the model)")
    return value


def check_output(output: str, input_path: str | None, overwrite: bool) -> Path:
    """--output as a path that may be written, checked before the model loads: never the --input file (whatever the
    spelling or link), an existing file only with --overwrite, in a folder that exists."""
    file = Path(output).expanduser()
    if input_path and file.exists() and Path(input_path).expanduser().exists() and os.path.samefile(file, input_path):
        raise ConfigError(f"--output '{output}' is the --input file '{input_path}': writing the predictions there "
                          "would destroy the texts. Name another --output file.")
    if file.is_dir():
        raise DataError(f"--output '{output}' is a folder; name a file in it (e.g. {file / 'predictions.csv'}).")
    if file.exists() and not overwrite:
        raise ConfigError(f"--output '{output}' exists; seqlab predict replaces a file only when asked: add "
                          "--overwrite, or name another file.")
    folder = file.parent
    if not folder.is_dir():
        raise DataError(f"--output '{output}': its folder '{folder}' does not exist. Create it first (mkdir -p "
                        f"'{folder}') or name a file in an existing folder.")
    return file


def write_output(result: pd.DataFrame, file: Path) -> None:
    """The CSV written whole or not at all: into a temporary file beside it, then renamed over it."""
    handle, temporary = tempfile.mkstemp(prefix=f".{file.name}.", suffix=".tmp", dir=file.parent)
    try:
        with os.fdopen(handle, "w", encoding="utf-8", newline="") as stream:
            result.to_csv(stream, index=False)
        os.chmod(temporary, 0o666 & ~_umask())  # mkstemp makes it private: the mode a new file gets
        os.replace(temporary, file)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def read_inputs(path: str, column: str | None = None,
                speaker_tokens: bool = False) -> tuple[list[str], list[str] | None]:
    """Texts (threads joined into one string, with speaker words where the model was trained so) and ids."""
    texts, ids, _ = read_examples(path, column, speaker_tokens)
    return texts, ids


def read_examples(path: str, column: str | None = None, speaker_tokens: bool = False):
    """(texts, ids or None, one table row per example for the metadata columns) from --input, read as training
    reads a custom file: a text column, a messages column (lists, or JSON lists in a CSV), or one row per message
    grouped into threads by `thread_id` in file order (one prediction per thread)."""
    file = Path(path)
    if not file.is_file():
        raise DataError(f"--input file '{file}' does not exist.")
    suffix = file.suffix.lower()
    if suffix in (".txt", ""):
        try:
            texts = file.read_text(encoding="utf-8").splitlines()
        except UnicodeDecodeError as error:
            raise DataError(f"--input '{file}' is not UTF-8 text (byte {error.start}: {error.reason}); convert it "
                            "(e.g. iconv -f latin1 -t utf-8) or give a CSV/JSONL/Parquet file.") from None
        return [t for t in texts if t.strip()], None, pd.DataFrame()
    frame = read_table(file)  # the reader of dataset=custom: every format training reads
    if column is None and "messages" not in frame.columns and {"thread_id", "text"} <= set(frame.columns):
        keys, rows = thread_keys(frame, "thread_id", file)  # JSON 1, "1" and 1.0 are one thread, as in training
        if len(set(keys)) < len(keys):  # one row per message
            return _per_message(rows, keys, speaker_tokens)
    candidates = [column] if column else [*TEXT_COLUMNS, *THREAD_COLUMNS]
    found = next((c for c in candidates if c in frame.columns), None)
    if found is None:
        raise DataError(f"--input '{file}' has no {'column ' + repr(column) if column else 'text or messages column'}"
                        f"; its columns are {', '.join(map(str, frame.columns))}. Name one with --column.")
    thread = found in THREAD_COLUMNS
    try:
        texts = [as_text(value, speaker_tokens, thread) for value in frame[found]]
    except TypeError as error:
        raise DataError(f"--input '{file}' column {found!r}: {error}.") from None
    id_column = next((c for c in ID_COLUMNS if c in frame.columns), None)
    # as written: '00123' keeps its zeros, a missing id is empty (not 'nan'), an integer never becomes '7.0'
    ids = None if id_column is None else [written(value) or "" for value in frame[id_column]]
    return texts, ids, frame


def _per_message(frame: pd.DataFrame, keys: list[str], speaker_tokens: bool):
    from seqlab.data.custom import join_messages, message_text

    speakers = frame["speaker"] if "speaker" in frame.columns else [None] * len(frame)
    lines = [message_text(t, speaker_tokens, s) for t, s in zip(frame["text"], speakers)]
    groups = frame.assign(_line=lines, _seqlab_key=keys).groupby("_seqlab_key", sort=False)
    texts = [join_messages([line for line in group["_line"] if line]) for _, group in groups]
    ids = [written(group["thread_id"].iloc[0]) for _, group in groups]  # as its first row writes it
    return texts, ids, groups.first().reset_index(drop=True)


def read_metadata(frame: pd.DataFrame, columns: list[str], path: str) -> np.ndarray:
    """The numeric metadata columns a model.metadata=true model takes (missing values: NaN, imputed by the model)."""
    return metadata_values(frame, columns, f"--input '{path}'")


class KerasFlavorModel:
    """A model that an earlier seqlab logged with MLflow's Keras flavor only (no seqlab.serving.pyfunc.TextClassifier in
    it), predicted by the same TextClassifier.predict as the models logged now."""

    def __init__(self, model_uri: str, logged: dict):
        import mlflow

        import seqlab.serving.keras_objects  # noqa: F401  registers what the saved model names
        from seqlab.serving.pyfunc import TextClassifier

        # Safe mode (Keras' default, made explicit): a model file cannot run arbitrary Python (lambdas) on load.
        network = mlflow.keras.load_model(model_uri, load_model_kwargs={"safe_mode": True})
        outputs = int(network.output_shape[-1])
        class_names = logged.get("class_names") or [str(i) for i in range(max(outputs, 2))]
        self.classifier = TextClassifier(class_names, logged.get("metadata_columns"), logged.get("speaker_tokens"),
                                         model=network)

    def predict(self, data, params=None) -> pd.DataFrame:
        return self.classifier.predict(data, params)


def load(model_uri: str):
    """The logged model, with `predict(DataFrame, params)` as mlflow.pyfunc.load_model gives it (for a model of an
    earlier seqlab, logged with the Keras flavor only: the same TextClassifier.predict around its network)."""
    import mlflow

    try:
        info = mlflow.models.get_model_info(model_uri)
        if "keras" in info.flavors:
            return KerasFlavorModel(model_uri, info.metadata or {})
        return mlflow.pyfunc.load_model(model_uri)
    except Exception as error:  # MLflow raises several types for a bad URI or a missing run
        raise SeqlabError(f"Cannot load model {model_uri!r}: {str(error).splitlines()[0]}. Give runs:/<run_id>/model, "
                          "models:/<name>/<version>, models:/<name>@<alias> or a local model folder, with the store "
                          "it was logged to (--tracking-uri, default $MLFLOW_TRACKING_URI or sqlite:///mlflow.db)."
                          ) from None


def model_metadata(model_uri: str) -> dict:
    """What the model was logged with: class_names, metadata_columns, speaker_tokens ({} when unreadable)."""
    import mlflow

    try:
        return mlflow.models.get_model_info(model_uri).metadata or {}
    except Exception:  # load() reports a bad URI with the full message
        return {}


def predict_texts(model, texts: list[str], batch_size: int = 256,
                  metadata: pd.DataFrame | None = None) -> pd.DataFrame:
    """`label`, `probability` (of that label) and `probability_<class>` per class, one row per text; `metadata`:
    the numeric columns (raw numbers, NaN allowed) of a model logged with model.metadata=true."""
    frame = pd.DataFrame({"text": list(texts)})
    if metadata is not None:
        frame = frame.join(metadata.reset_index(drop=True))
    return model.predict(frame, params={"batch_size": batch_size})


def main(argv: list[str]) -> int:
    args = parser().parse_args(argv)
    import mlflow

    from seqlab.record.signals import interrupts_raised, raise_if_interrupted

    mlflow.set_tracking_uri(args.tracking_uri)
    try:
        output = check_output(args.output, args.input, args.overwrite) if args.output else None
        logged = model_metadata(args.model_uri)
        columns = list(logged.get("metadata_columns") or [])
        if columns and args.text:
            raise DataError(f"This model also takes numeric metadata ({', '.join(columns)}): give --input with a "
                            "CSV/JSONL/Parquet file that has a text or messages column and these columns.")
        texts, ids, frame = (args.text, None, None) if args.text else read_examples(
            args.input, args.column, bool(logged.get("speaker_tokens")))
        if not texts:
            raise DataError(f"--input '{args.input}' holds no texts.")
        metadata = pd.DataFrame(read_metadata(frame, columns, args.input), columns=columns) if columns else None
        model = load(args.model_uri)
        with interrupts_raised():  # TensorFlow can swallow a Ctrl-C inside predict: ask again after it
            result = predict_texts(model, texts, args.batch_size, metadata)
            raise_if_interrupted()
    except SeqlabError as error:
        return report_error(error)
    if ids is not None:
        result.insert(0, "id", ids)
    if output is not None:
        try:
            write_output(result, output)
        except OSError as error:
            return report_error(DataError(f"--output '{args.output}' could not be written: "
                                          f"{error.strerror or error}."))
        counts = result["label"].value_counts()
        log.info("wrote %d predictions to %s (%s)", len(result), args.output,
                 ", ".join(f"{label}: {count}" for label, count in counts.items()))
        return 0  # the file holds them: no table of every prediction on stdout
    shown = result[[*(["id"] if ids is not None else []), "label", "probability"]].assign(
        text=[t[:70].replace("\n", " | ") for t in texts])
    print(shown.to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
