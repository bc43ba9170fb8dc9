"""With and without pretraining: each model on each dataset, trained from scratch and fine-tuned from word vectors
pretrained on unlabeled text (`model.pretrained=pretrain`), over seeds; then a table of means ± std read back from
MLflow, written, dated, into docs/benchmarks.md between `<!-- pretrained:start -->` and `<!-- pretrained:end -->`.

    .venv/bin/python scripts/benchmark_pretrained.py --datasets persuasion --seeds 1 2 3       # ~25 minutes
    .venv/bin/python scripts/benchmark_pretrained.py --datasets imdb --models imdb_pretrained --seeds 1 2 3
    .venv/bin/python scripts/benchmark_pretrained.py --report-only                            # the table only

Each row is a preset command: thread datasets run `experiment=<dataset>_pretrained threads_model=<model>`, IMDB
`experiment=imdb_<model>` plus the IMDB pretraining (`pretrain=word2vec model.pretrained=pretrain
pretrain.corpus=[imdb_unsup,train]`), or `experiment=imdb_pretrained`; the run without pretraining adds
`model.pretrained=null`. A pretraining is trained once per corpus and settings and reused (MLflow experiment
`pretrain`); its minutes are not in the seconds column.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from datetime import date
from pathlib import Path

import pandas as pd

from benchmark_models import DOCS, machine, write_between_markers
from seqlab.analysis.compare import search, to_markdown

DATASETS = ("imdb", "dailydialog", "chitchat", "persuasion")
MODELS = {"imdb": ("bilstm", "attention_bilstm", "cnn_lstm"), "dailydialog": ("hier_lstm", "hier_conv", "bilstm"),
          "chitchat": ("hier_lstm", "hier_conv", "bilstm"), "persuasion": ("hier_lstm", "hier_conv", "bilstm")}
IMDB_PRETRAINING = ["pretrain=word2vec", "model.pretrained=pretrain", "pretrain.corpus=[imdb_unsup,train]"]
BASELINES = {"imdb": "NBSVM-bigram 0.912 accuracy (Wang & Manning 2012)",
             "dailydialog": "TF-IDF + LR (balanced): accuracy 0.723, macro-F1 0.647",
             "persuasion": "TF-IDF + LR (balanced): accuracy 0.641, macro-F1 0.637",
             "chitchat": "TF-IDF + LR: accuracy 0.465, macro-F1 0.459"}
EXPERIMENT = "pretrained_benchmark"


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--datasets", nargs="+", choices=DATASETS, default=list(DATASETS))
    p.add_argument("--models", nargs="+", default=None, help="default: the dataset's three (MODELS); "
                   "imdb_pretrained runs that preset")
    p.add_argument("--seeds", nargs="+", type=int, default=[1, 2, 3])
    p.add_argument("--no-baseline", dest="baseline", action="store_false", help="skip the runs without pretraining")
    p.add_argument("--tracking-uri", default=os.environ.get("MLFLOW_TRACKING_URI", "sqlite:///mlflow.db"))
    p.add_argument("--experiment", default=EXPERIMENT, help="where the runs go")
    p.add_argument("--also", nargs="*", default=[], help="more experiments whose runs join the table")
    p.add_argument("--report-only", action="store_true", help="do not train; report the runs in the store")
    p.add_argument("--docs", default=str(DOCS), help="Markdown page to write the table into ('' = none)")
    p.add_argument("overrides", nargs="*", help="after --: more seqlab train overrides")
    return p


def commands(dataset: str, model: str, pretrained: bool) -> list[str]:
    if model == "imdb_pretrained":
        return ["experiment=imdb_pretrained", *([] if pretrained else ["model.pretrained=null"])]
    if dataset == "imdb":
        return [f"experiment=imdb_{model}", *(IMDB_PRETRAINING if pretrained else [])]
    return [f"experiment={dataset}_pretrained", f"threads_model={model}", *([] if pretrained else ["model.pretrained=null"])]


def run_all(args) -> None:
    for dataset in args.datasets:
        for model in args.models or MODELS[dataset]:
            for pretrained in ([True, False] if args.baseline else [True]):
                for seed in args.seeds:
                    command = [sys.executable, "-m", "seqlab.cli", "train", *commands(dataset, model, pretrained),
                               f"trainer.seed={seed}", f"tracking.uri={args.tracking_uri}",
                               f"tracking.experiment={args.experiment}", "trainer.progress=false", *args.overrides]
                    print("+", " ".join(command[3:]), flush=True)
                    subprocess.run(command, check=True)


def results(tracking_uri: str, experiments: list[str]) -> pd.DataFrame:
    runs = pd.concat([search(tracking_uri, experiment) for experiment in experiments], ignore_index=True)
    if runs.empty:
        raise SystemExit(f"No finished runs in experiments {experiments} at {tracking_uri}.")
    runs = runs.rename(columns={"params.dataset.name": "dataset", "params.model.name": "model",
                                "metrics.accuracy/test": "accuracy", "metrics.f1_macro/test": "f1_macro",
                                "metrics.time/train_seconds": "seconds", "metrics.pretrained/coverage": "coverage"})
    pretrained = runs.get("params.model.pretrained", pd.Series(None, index=runs.index))
    runs["pretrained"] = pretrained.where(pretrained.notna() & (pretrained != "None"), "none")
    if "params.pretrain.name" in runs:
        named = runs["params.pretrain.name"].notna() & (runs["params.pretrain.name"] != "None")
        runs.loc[named, "pretrained"] = runs.loc[named, "params.pretrain.name"]
    if "coverage" not in runs:
        runs["coverage"] = float("nan")
    table = runs.groupby(["dataset", "model", "pretrained"]).agg(
        runs=("accuracy", "size"), accuracy=("accuracy", "mean"), accuracy_std=("accuracy", "std"),
        f1_macro=("f1_macro", "mean"), f1_macro_std=("f1_macro", "std"), coverage=("coverage", "mean"),
        seconds=("seconds", "mean"), last_run=("start_time", lambda times: times.max().date().isoformat()))
    return table.reset_index()


def formatted(table: pd.DataFrame) -> pd.DataFrame:
    out = table[["dataset", "model", "pretrained", "runs"]].copy()
    for metric in ("accuracy", "f1_macro"):
        out[metric] = [f"{m:.4f}" + ("" if pd.isna(s) else f" ± {s:.4f}")
                       for m, s in zip(table[metric], table[f"{metric}_std"])]
    out["coverage"] = [("" if pd.isna(c) else f"{c:.1%}") for c in table["coverage"]]
    out["seconds / run"] = table["seconds"].round(0).astype(int)
    out["last run"] = table["last_run"]
    return out


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if not args.report_only:
        run_all(args)
    experiments = [args.experiment, *args.also]
    table = results(args.tracking_uri, experiments)
    table = formatted(table[table["dataset"].isin(args.datasets)] if not args.report_only else table)
    print(to_markdown(table))
    print("\nBaselines: " + "; ".join(f"{d}: {BASELINES[d]}" for d in sorted(set(table["dataset"]))))
    if args.docs:
        written = (f"Written {date.today().isoformat()} on {machine()}, from the MLflow "
                   f"experiments {', '.join(f'`{e}`' for e in experiments)} (mean ± std over the seeds; seconds = "
                   "training, pretraining apart).")
        write_between_markers(Path(args.docs), "<!-- pretrained:start -->", "<!-- pretrained:end -->",
                              f"{to_markdown(table)}\n\n{written}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
