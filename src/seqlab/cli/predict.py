"""`seqlab predict MODEL_URI (--text ... | --input FILE) [--output FILE.csv]`: labels and probabilities for raw text
from a logged model (seqlab.serving.predict loads the model and reads the inputs)."""

from __future__ import annotations

import argparse
import logging
import os
import tempfile
from pathlib import Path

import pandas as pd

from seqlab.errors import ConfigError, DataError, SeqlabError, report_error
from seqlab.serving.predict import load, model_metadata, predict_texts, read_examples, read_metadata

log = logging.getLogger(__name__)


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
