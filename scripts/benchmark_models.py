"""Every flat model on the full IMDB data (22,500 train / 2,500 validation / 25,000 test), each with its preset
`conf/experiment/imdb_<model>.yaml`, into one MLflow experiment; then the results table read back from MLflow.

    SEQLAB_DATA_DIR=../shared/data .venv/bin/python scripts/benchmark_models.py            # all models
    .venv/bin/python scripts/benchmark_models.py --models lstm,fasttext_bigram             # some of them
    .venv/bin/python scripts/benchmark_models.py --table-only                              # rewrite the table
    .venv/bin/python scripts/benchmark_models.py --models lstm -- dataset.max_train=300 trainer.epochs=1  # smoke

Each model runs once as `seqlab train experiment=imdb_<model> EXTRA` (one process each), so a row of the table is
the command a user runs; a model that already has a finished run of the same command in the experiment (this
script's or a user's) is not run again, so an interrupted benchmark resumes. The table (model, parameters,
epochs, seconds per epoch, test accuracy, macro-F1, ROC AUC, command) goes to stdout, to --output if given, and
into docs/benchmarks.md between the `<!-- benchmark:start -->` and `<!-- benchmark:end -->` markers, with the
machine and the date it ran.
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import subprocess
import sys
from datetime import date
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DOCS = REPO / "docs" / "benchmarks.md"
START, END = "<!-- benchmark:start -->", "<!-- benchmark:end -->"
# Every flat model's benchmark setting is its preset conf/experiment/imdb_<model>.yaml.
MODELS = sorted(path.stem.removeprefix("imdb_") for path in (REPO / "conf" / "experiment").glob("imdb_*.yaml"))


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--models", default=",".join(MODELS), help="comma-separated (default: every imdb_<model> preset)")
    p.add_argument("--tracking-uri", default="sqlite:///mlflow.db")
    p.add_argument("--experiment", default="benchmark_models")
    p.add_argument("--docs", default=str(DOCS), help="Markdown page to write the table into ('' = none)")
    p.add_argument("--output", help="also write the Markdown table to this file")
    p.add_argument("--table-only", action="store_true", help="run nothing, rebuild the table from MLflow")
    p.add_argument("--rerun", action="store_true", help="run models again even if a finished run exists")
    p.add_argument("extra", nargs="*", help="overrides for every run, after '--' (they win over the preset)")
    return p


def overrides_for(model: str, extra: list[str]) -> list[str]:
    """The preset, then `extra`: Hydra applies command-line overrides after the preset, so they win."""
    return [f"experiment=imdb_{model}", *extra]


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
    # a sweep's parent repeats its best child's params and metrics: not a run of its own
    return [run for run in runs if "accuracy/test" in run.data.metrics and run.data.tags.get("sweep.role") != "parent"]


def run_model(model: str, args, settings: list[str], machine_text: str) -> None:
    command = [sys.executable, "-m", "seqlab.cli", "train", *settings, f"tracking.uri={args.tracking_uri}",
               f"tracking.experiment={args.experiment}"]
    print(f"\n== {model}: {' '.join(command[3:])}", flush=True)
    if subprocess.run(command).returncode != 0:
        print(f"seqlab benchmark: {model} failed (see above); going on with the next model", file=sys.stderr)
        return
    client, experiment_id = store(args)
    latest = finished_runs(client, experiment_id, model)[0]
    client.set_tag(latest.info.run_id, "machine", machine_text)


def settings_of(run) -> str:
    """The overrides a run was started with, less where it was logged: seqlab's `overrides` tag (runs of this script
    before the presets carry their recipe in `benchmark_settings`)."""
    tags = run.data.tags
    if "benchmark_settings" in tags:
        return tags["benchmark_settings"]
    return " ".join(item for item in tags.get("overrides", "").split() if not item.startswith("tracking."))


def finished_with(args, model: str, settings: list[str]) -> str | None:
    """The id of a finished run of `model` with exactly these settings, if the experiment has one."""
    try:
        client, experiment_id = store(args)
    except SystemExit:  # no experiment yet
        return None
    for run in finished_runs(client, experiment_id, model):
        if settings_of(run) == " ".join(settings):
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
    """The Markdown table and the machine line. A model's row is its latest finished run of its preset (with
    `extra`), else its latest finished run: trying other settings does not replace it."""
    client, experiment_id = store(args)
    rows, machines, dates = [], set(), set()
    header = ("| model | parameters | epochs | seconds / epoch | test accuracy | test macro-F1 | test ROC AUC "
              "| command |\n| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |")
    for model in models:
        runs = finished_runs(client, experiment_id, model)
        if not runs:
            print(f"seqlab benchmark: no finished run of {model} in {args.experiment!r} yet", file=sys.stderr)
            continue
        wanted = " ".join(overrides_for(model, args.extra))
        run = next((r for r in runs if settings_of(r) == wanted), runs[0])
        metrics, tags = run.data.metrics, run.data.tags
        epochs = int(metrics.get("time/epochs", 0)) or None
        seconds = metrics["time/train_seconds"] / epochs if epochs and "time/train_seconds" in metrics else None
        count = parameter_count(client, run)
        settings = settings_of(run)
        machines.add(tags.get("machine", "unknown machine"))
        dates.add(date.fromtimestamp(run.info.start_time / 1000).isoformat())
        cells = [f"`{model}`", cell(count, "{:,}"), cell(epochs, "{}"), cell(seconds, "{:.0f}"),
                 cell(metrics.get("accuracy/test"), "{:.4f}"), cell(metrics.get("f1_macro/test"), "{:.4f}"),
                 cell(metrics.get("roc_auc/test"), "{:.4f}"), f"`seqlab train {settings}`" if settings else ""]
        rows.append("| " + " | ".join(cells) + " |")
    machine_line = f"Machine: {'; '.join(sorted(machines)) or 'unknown'}. Run on {', '.join(sorted(dates))}."
    return header + "\n" + "\n".join(rows), machine_line


def write_between_markers(page: Path, start: str, end: str, block: str) -> None:
    """Replace what lies between the markers in `page` (a docs page) with `block`; the rest stays as written."""
    text = page.read_text(encoding="utf-8") if page.exists() else ""
    if start not in text or end not in text:
        print(f"seqlab benchmark: {page} has no {start} ... {end} markers; table not written there", file=sys.stderr)
        return
    head, rest = text.split(start, 1)
    page.write_text(f"{head}{start}\n{block}\n{end}{rest.split(end, 1)[1]}", encoding="utf-8")
    print(f"seqlab benchmark: wrote the table into {page}")


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    unknown = [m for m in models if m not in MODELS]
    if unknown:
        raise SystemExit(f"No preset conf/experiment/imdb_<model>.yaml for {', '.join(unknown)}; the benchmark "
                         f"knows {', '.join(MODELS)}.")
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
    if args.docs:
        block = (f"{table}\n\n{machine_line} From `python scripts/benchmark_models.py` (MLflow experiment "
                 f"`{args.experiment}`), one run per model, seed 42.")
        write_between_markers(Path(args.docs), START, END, block)
    return 0


if __name__ == "__main__":
    sys.exit(main())
