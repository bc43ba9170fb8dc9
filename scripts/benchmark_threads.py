"""The chat-thread benchmark and its targets: per thread dataset, the presets `<dataset>_<model>` (flat BiLSTM,
hier_lstm, hier_conv, and the fastText bigram baseline) each without and with metadata, as multiruns; then it
reads the runs back from MLflow, prints one table (mean and spread over seeds) and the targets, PASS or FAIL, and
writes them, dated, into docs/benchmarks.md between the `<!-- threads:<dataset>:start -->` and `end` markers.

    .venv/bin/python scripts/benchmark_threads.py                    # everything (hours on 2 CPU cores)
    .venv/bin/python scripts/benchmark_threads.py --report-only      # the table from runs already in the store
    .venv/bin/python scripts/benchmark_threads.py --smoke --datasets persuasion --persuasion-seeds 1   # minutes

The fastText baseline (`--no-fasttext` skips it) shows what the recurrent models have to beat: topic and prompt
are mostly a matter of which words occur.

Targets (test split): DailyDialog macro-F1 >= 0.70 and accuracy >= 0.75 for the best preset; on
PersuasionForGood, metadata improves each model's macro-F1, averaged over 3 seeds (153 test threads: single
runs are noise); Chitchat accuracy >= 0.50. TF-IDF + logistic regression baselines from the data README.
Extra arguments after `--` go to `seqlab train` (e.g. `-- trainer.device=gpu hydra/launcher=joblib`).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from datetime import date
from pathlib import Path

import pandas as pd

from benchmark_models import DOCS, machine, write_between_markers  # the same docs page and machine line
from seqlab.analysis.compare import search, to_markdown

DATASETS = ("dailydialog", "persuasion", "chitchat")
# Each runs as the preset conf/experiment/<dataset>_<model>.yaml; fastText in its own process (a sweep's first
# job fixes TensorFlow's threads for the rest, and the recurrent models take one per op).
RECURRENT = ("bilstm", "hier_lstm", "hier_conv")
FASTTEXT = ("fasttext_bigram",)
BASELINES = {"dailydialog": "TF-IDF + LR (balanced): accuracy 0.723, macro-F1 0.647",
             "persuasion": "TF-IDF + LR (balanced): accuracy 0.641, macro-F1 0.637; metadata only 0.588 / 0.576",
             "chitchat": "TF-IDF + LR: accuracy 0.465, macro-F1 0.459"}
# Small enough to run every job in seconds: checks the pipeline, not the figures. The debug=tiny preset
# (conf/debug/tiny.yaml) gives each job the tiny sizes of its own model and preprocessing: the jobs of one sweep
# have different keys (max_length or max_units, units or filters), which one list of overrides cannot set.
SMOKE = ["debug=tiny", "dataset.max_train=120", "dataset.max_test=60", "trainer.epochs=1",
         "trainer.early_stopping=null", "trainer.progress=false"]


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--datasets", nargs="+", choices=DATASETS, default=list(DATASETS))
    p.add_argument("--seeds", nargs="+", type=int, default=[42], help="seeds for dailydialog and chitchat")
    p.add_argument("--persuasion-seeds", nargs="+", type=int, default=[1, 2, 3])
    p.add_argument("--tracking-uri", default=os.environ.get("MLFLOW_TRACKING_URI", "sqlite:///mlflow.db"))
    p.add_argument("--experiment", default=None, help="default: threads_compare (threads_compare_smoke with --smoke)")
    p.add_argument("--smoke", action="store_true", help="tiny subsets and models, one epoch: a pipeline check")
    p.add_argument("--report-only", action="store_true", help="do not train; report the runs in the store")
    p.add_argument("--no-fasttext", dest="fasttext", action="store_false", help="skip the fastText baseline")
    p.add_argument("--docs", default=str(DOCS), help="Markdown page to write the tables into ('' = none)")
    p.add_argument("overrides", nargs="*", help="after --: more seqlab train overrides")
    return p


def run_sweeps(args, experiment: str) -> None:
    for dataset in args.datasets:
        seeds = args.persuasion_seeds if dataset == "persuasion" else args.seeds
        command = [sys.executable, "-m", "seqlab.cli", "train", "--multirun", "model.metadata=false,true",
                   f"trainer.seed={','.join(map(str, seeds))}", f"tracking.uri={args.tracking_uri}",
                   f"tracking.experiment={experiment}"]
        for models in [RECURRENT, FASTTEXT] if args.fasttext else [RECURRENT]:
            presets = f"experiment={','.join(f'{dataset}_{model}' for model in models)}"
            sweep = [*command, presets, *(SMOKE if args.smoke else []), *args.overrides]
            print("+", " ".join(sweep[2:]), flush=True)
            subprocess.run(sweep, check=True)


def results(tracking_uri: str, experiment: str) -> pd.DataFrame:
    """Mean, spread and count over seeds of test accuracy and macro-F1 per dataset, model and metadata, with the
    date of the latest run."""
    runs = search(tracking_uri, experiment)
    if runs.empty:
        raise SystemExit(f"No finished runs in experiment {experiment!r} at {tracking_uri}.")
    runs = runs.rename(columns={"params.dataset.name": "dataset", "params.model.name": "model",
                                "params.model.metadata": "metadata", "metrics.accuracy/test": "accuracy",
                                "metrics.f1_macro/test": "f1_macro", "metrics.time/train_seconds": "seconds"})
    table = runs.groupby(["dataset", "model", "metadata"]).agg(
        runs=("accuracy", "size"), accuracy=("accuracy", "mean"), accuracy_std=("accuracy", "std"),
        f1_macro=("f1_macro", "mean"), f1_macro_std=("f1_macro", "std"), seconds=("seconds", "mean"),
        last_run=("start_time", lambda times: times.max().date().isoformat()))
    return table.reset_index()


def spread(row) -> str:
    """Mean macro-F1 ± its standard deviation over seeds (no spread from one run)."""
    return f"{row['f1_macro']:.3f}" + ("" if pd.isna(row["f1_macro_std"]) else f" ± {row['f1_macro_std']:.3f}")


def targets(table: pd.DataFrame) -> list[str]:
    lines = []
    for dataset, part in table.groupby("dataset"):
        best = part.sort_values("f1_macro", ascending=False).iloc[0]
        name = f"{best['model']}{' + metadata' if best['metadata'] == 'True' else ''}"
        if dataset == "dailydialog":
            ok = best["f1_macro"] >= 0.70 and best["accuracy"] >= 0.75
            lines.append(f"dailydialog: best {name}: macro-F1 {best['f1_macro']:.3f} (>= 0.70), accuracy "
                         f"{best['accuracy']:.3f} (>= 0.75): {'PASS' if ok else 'FAIL'}")
        elif dataset == "chitchat":
            best = part.sort_values("accuracy", ascending=False).iloc[0]
            name = f"{best['model']}{' + metadata' if best['metadata'] == 'True' else ''}"
            lines.append(f"chitchat: best {name}: accuracy {best['accuracy']:.3f} (>= 0.50): "
                         f"{'PASS' if best['accuracy'] >= 0.50 else 'FAIL'}")
        elif dataset == "persuasion":
            for model, pair in part.groupby("model"):
                by = pair.set_index("metadata")
                if not {"True", "False"} <= set(by.index):
                    continue
                with_, without = by.loc["True"], by.loc["False"]
                verdict = "improves it: PASS" if with_["f1_macro"] > without["f1_macro"] else "does not: FAIL"
                lines.append(f"persuasion: {model}: macro-F1 {spread(without)} without metadata, {spread(with_)} "
                             f"with ({int(with_['runs'])} seeds): metadata {verdict}")
        lines.append(f"  baseline: {BASELINES[dataset]}")
    return lines


def write_docs(page: Path, table: pd.DataFrame, experiment: str) -> None:
    """Each dataset's table and targets between its markers, with the machine that wrote them."""
    written_on = f"Written {date.today().isoformat()} on {machine()}, from the MLflow experiment `{experiment}`."
    for dataset, part in table.groupby("dataset"):
        targets_text = "\n".join(f"- {line.strip()}" for line in targets(part))
        block = (f"{to_markdown(part.drop(columns='dataset'))}\n\nTargets (test split):\n\n{targets_text}\n\n"
                 f"{written_on}")
        write_between_markers(page, f"<!-- threads:{dataset}:start -->", f"<!-- threads:{dataset}:end -->", block)


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    experiment = args.experiment or ("threads_compare_smoke" if args.smoke else "threads_compare")
    if not args.report_only:
        run_sweeps(args, experiment)
    table = results(args.tracking_uri, experiment)
    table = table[table["dataset"].isin(args.datasets)]
    print(to_markdown(table))
    print("\n".join(["", "Targets (test split):", *targets(table)]))
    if args.smoke:
        print("(--smoke: tiny subsets, one epoch: the figures check the pipeline, not the targets)")
    elif args.docs:
        write_docs(Path(args.docs), table, experiment)
    return 0


if __name__ == "__main__":
    sys.exit(main())
