"""Every flat model on the full IMDB data (22,500 train / 2,500 validation / 25,000 test), one MLflow
experiment, then the README's results table read back from MLflow.

    SEQLAB_DATA_DIR=../shared/data .venv/bin/python scripts/benchmark_models.py            # all models
    .venv/bin/python scripts/benchmark_models.py --models lstm,fasttext_bigram             # some of them
    .venv/bin/python scripts/benchmark_models.py --table-only                              # rewrite the table
    .venv/bin/python scripts/benchmark_models.py --models lstm -- dataset.max_train=300 trainer.epochs=1  # smoke

Each model runs once with its recipe below (`seqlab train model=NAME RECIPE EXTRA`, one process each); a
model that already has a finished run with the same settings in the experiment is not run again, so an
interrupted benchmark resumes. The table (model, parameters, epochs, seconds per epoch, test accuracy,
macro-F1, ROC AUC, settings) goes to stdout, to --output if given, and into README.md between the
`<!-- benchmark:start -->` and `<!-- benchmark:end -->` markers, with the machine it ran on.
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
START, END = "<!-- benchmark:start -->", "<!-- benchmark:end -->"

# Settings per model on top of its conf/model/*.yaml: the presets the README's figures come from.
# Early stopping watches val_loss on the validation split and restores the best epoch's weights, so
# `epochs` is a ceiling. The tutorial's variants run its 3 epochs (as `make train` and `make sweep` do).
TUTORIAL = ["trainer.epochs=3"]
LARGE_VOCABULARY = ["preprocess.vocab_size=20000"]
RECIPES = {
    "lstm": TUTORIAL,
    "lstm_dropout": TUTORIAL,
    "lstm_recurrent_dropout": TUTORIAL,
    "cnn_lstm": ["trainer.epochs=8", "trainer.early_stopping=2"],
    "gru": TUTORIAL,
    "stacked_lstm": TUTORIAL,
    "lstm_no_embedding": TUTORIAL,  # the baseline without embeddings: no target
    # word dropout (whole word vectors) and input dropout: with neither, both overfit after one epoch
    "bilstm": ["model.embedding_dropout=0.25", "model.dropout=0.25", "trainer.epochs=6", "trainer.early_stopping=2"],
    # (word dropout 0.25 and patience 2 gave 0.8764 against 0.8811 for this recipe: README)
    "attention_bilstm": [*LARGE_VOCABULARY, "trainer.epochs=6", "trainer.early_stopping=1"],
    # lazy Adam: sparse updates of the 1M-row table (about 20x faster per step than Keras' dense Adam on CPU);
    # word dropout 0.3: 0.9056 against 0.9028 without (dropout 0.5 on the average 0.9036, batch 32 0.9033,
    # trigrams 0.9006, vocabulary 50,000 0.901, max length 1000 0.9038; one run each, README)
    "fasttext_bigram": [*LARGE_VOCABULARY, "model.embedding_dropout=0.3", "trainer.optimizer=lazy_adam",
                        "trainer.epochs=15", "trainer.early_stopping=1"],
}


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--models", default=",".join(RECIPES), help="comma-separated (default: all flat models)")
    p.add_argument("--tracking-uri", default="sqlite:///mlflow.db")
    p.add_argument("--experiment", default="benchmark_models")
    p.add_argument("--readme", default=str(REPO / "README.md"), help="README to update ('' = none)")
    p.add_argument("--output", help="also write the Markdown table to this file")
    p.add_argument("--table-only", action="store_true", help="run nothing, rebuild the table from MLflow")
    p.add_argument("--rerun", action="store_true", help="run models again even if a finished run exists")
    p.add_argument("extra", nargs="*", help="overrides for every run, after '--' (they win over the recipes)")
    return p


def overrides_for(model: str, extra: list[str]) -> list[str]:
    """The recipe, with `extra` replacing the recipe's value of the same key."""
    merged = {item.split("=", 1)[0]: item for item in [f"model={model}", *RECIPES[model], *extra]}
    return list(merged.values())


def machine() -> str:
    import tensorflow as tf

    cpu = platform.processor() or platform.machine()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        found = re.search(r"^model name\s*:\s*(.+)$", cpuinfo.read_text(), re.MULTILINE)
        cpu = found.group(1).strip() if found else cpu
    gpus = [tf.config.experimental.get_device_details(gpu).get("device_name", "GPU")
            for gpu in tf.config.list_physical_devices("GPU")]
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return (f"{cpu}, {cores} cores, {', '.join(gpus) if gpus else 'no GPU'}; {platform.system()}, "
            f"Python {platform.python_version()}, TensorFlow {tf.__version__}")


def finished_runs(client, experiment_id: str, model: str):
    runs = client.search_runs([experiment_id], filter_string=f"params.`model.name` = '{model}' and "
                              "attributes.status = 'FINISHED'", order_by=["attributes.start_time DESC"])
    return [run for run in runs if "test_accuracy" in run.data.metrics]


def run_model(model: str, args, settings: list[str], machine_text: str) -> None:
    command = [sys.executable, "-m", "seqlab.cli", "train", *settings, f"tracking.uri={args.tracking_uri}",
               f"tracking.experiment={args.experiment}", f"tracking.run_name=benchmark_{model}"]
    print(f"\n== {model}: {' '.join(command[3:])}", flush=True)
    if subprocess.run(command).returncode != 0:
        print(f"seqlab benchmark: {model} failed (see above); going on with the next model", file=sys.stderr)
        return
    client, experiment_id = store(args)
    latest = finished_runs(client, experiment_id, model)[0]
    client.set_tag(latest.info.run_id, "benchmark_settings", " ".join(settings))
    client.set_tag(latest.info.run_id, "machine", machine_text)


def finished_with(args, model: str, settings: list[str]) -> str | None:
    """The id of a finished run of `model` with exactly these settings, if the experiment has one."""
    try:
        client, experiment_id = store(args)
    except SystemExit:  # no experiment yet
        return None
    for run in finished_runs(client, experiment_id, model):
        if run.data.tags.get("benchmark_settings") == " ".join(settings):
            return run.info.run_id
    return None


def store(args):
    import mlflow
    from mlflow.tracking import MlflowClient

    mlflow.set_tracking_uri(args.tracking_uri)
    experiment = mlflow.get_experiment_by_name(args.experiment)
    if experiment is None:
        raise SystemExit(f"No experiment {args.experiment!r} in {args.tracking_uri}; run the benchmark first.")
    return MlflowClient(args.tracking_uri), experiment.experiment_id


def parameter_count(client, run) -> int | None:
    """'Total params: 213,301' from the model summary MLflow's Keras callback logs with every run."""
    import mlflow

    try:
        path = mlflow.artifacts.download_artifacts(run_id=run.info.run_id, artifact_path="model_summary.txt",
                                                   tracking_uri=client.tracking_uri)
    except Exception:  # no summary (an old run): leave the cell empty
        return None
    found = re.search(r"Total params:\s*([\d,]+)", Path(path).read_text())
    return int(found.group(1).replace(",", "")) if found else None


def cell(value, form: str) -> str:
    return "" if value is None else form.format(value)


def results_table(args, models: list[str]) -> tuple[str, str]:
    """The Markdown table and the machine line. A model's row is its latest finished run with the settings of
    the recipe above (with `extra`), else its latest finished run: trying other settings does not replace it."""
    client, experiment_id = store(args)
    rows, machines = [], set()
    header = ("| model | parameters | epochs | seconds / epoch | test accuracy | test macro-F1 | test ROC AUC "
              "| settings |\n| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |")
    for model in models:
        runs = finished_runs(client, experiment_id, model)
        if not runs:
            print(f"seqlab benchmark: no finished run of {model} in {args.experiment!r} yet", file=sys.stderr)
            continue
        wanted = " ".join(overrides_for(model, args.extra))
        run = next((r for r in runs if r.data.tags.get("benchmark_settings") == wanted), runs[0])
        metrics, tags = run.data.metrics, run.data.tags
        epochs = int(metrics.get("epochs", 0)) or None
        seconds = metrics["train_seconds"] / epochs if epochs and "train_seconds" in metrics else None
        count = parameter_count(client, run)
        settings = tags.get("benchmark_settings", "").replace(f"model={model}", "").strip() or "preset"
        machines.add(tags.get("machine", "unknown machine"))
        cells = [f"`{model}`", cell(count, "{:,}"), cell(epochs, "{}"), cell(seconds, "{:.0f}"),
                 cell(metrics.get("test_accuracy"), "{:.4f}"), cell(metrics.get("test_f1_macro"), "{:.4f}"),
                 cell(metrics.get("test_roc_auc"), "{:.4f}"), f"`{settings}`"]
        rows.append("| " + " | ".join(cells) + " |")
    machine_line = f"Machine: {'; '.join(sorted(machines)) or 'unknown'}."
    return header + "\n" + "\n".join(rows), machine_line


def update_readme(readme: Path, table: str, machine_line: str, args) -> None:
    text = readme.read_text(encoding="utf-8")
    if START not in text or END not in text:
        print(f"seqlab benchmark: {readme} has no {START} ... {END} markers; table not written there", file=sys.stderr)
        return
    block = (f"{START}\n{table}\n\n{machine_line} From `python scripts/benchmark_models.py` (MLflow experiment "
             f"`{args.experiment}`), one run per model, seed 42.\n{END}")
    head, rest = text.split(START, 1)
    readme.write_text(head + block + rest.split(END, 1)[1], encoding="utf-8")
    print(f"seqlab benchmark: wrote the table into {readme}")


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    unknown = [m for m in models if m not in RECIPES]
    if unknown:
        raise SystemExit(f"Unknown model(s) {', '.join(unknown)}; the benchmark knows {', '.join(RECIPES)}.")
    if not args.table_only:
        machine_text = machine()
        for model in models:
            settings = overrides_for(model, args.extra)
            done = None if args.rerun else finished_with(args, model, settings)
            if done:
                print(f"== {model}: already done (run {done}); --rerun runs it again", flush=True)
                continue
            run_model(model, args, settings, machine_text)
    table, machine_line = results_table(args, models)
    print(f"\n{table}\n\n{machine_line}")
    if args.output:
        Path(args.output).write_text(f"{table}\n\n{machine_line}\n", encoding="utf-8")
    if args.readme:
        update_readme(Path(args.readme), table, machine_line, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
