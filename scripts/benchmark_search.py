"""The search at work: a 20-trial Optuna search of `experiment=imdb_lstm_search` without pruning, with the median
pruner (same sampler seed), and with two workers on one study; best validation accuracy, wall time, trials by state
and duplicates, written, dated, into docs/benchmarks.md between `<!-- search:start -->` and `<!-- search:end -->`.

    .venv/bin/python scripts/benchmark_search.py               # the three searches, one after the other (~1 hour)
    .venv/bin/python scripts/benchmark_search.py --report-only # the table from the studies already run

Each search is its own study (tracking.sweep) in its own MLflow experiment of the store given. The two workers of the
two-worker search get TF_NUM_INTRAOP_THREADS=TF_NUM_INTEROP_THREADS=1 each (one core each); the single worker runs
seqlab's default (one intra-op thread for recurrent models on CPU). "epochs trained" counts the epochs the trials
reported: the search's cost, whatever else the machine was doing; "minutes" is the wall time.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from datetime import date
from pathlib import Path

import optuna
import pandas as pd

from benchmark_models import DOCS, machine, write_between_markers
from seqlab.analysis.compare import to_markdown
from seqlab.search.study import counted, open_storage, storage_url

SEARCHES = {  # name: (overrides, workers)
    "no_pruning": ([], 1),
    "median_pruning": (["hydra/sweeper/pruner=median"], 1),
    "two_workers": ([], 2),
}


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tracking-uri", default="sqlite:///mlflow.db")
    p.add_argument("--only", nargs="*", choices=list(SEARCHES), default=list(SEARCHES))
    p.add_argument("--trials", type=int, default=20)
    p.add_argument("--docs", default=str(DOCS))
    p.add_argument("--report-only", action="store_true")
    return p


def run(name: str, args) -> float:
    overrides, workers = SEARCHES[name]
    command = [sys.executable, "-m", "seqlab.cli", "train", "-m", "hparams_search=optuna",
               "experiment=imdb_lstm_search",
               f"hydra.sweeper.n_trials={args.trials}", f"tracking.uri={args.tracking_uri}", f"tracking.sweep={name}",
               f"tracking.experiment=imdb_lstm_search_{name}", *overrides]
    env = {**os.environ, **({"TF_NUM_INTRAOP_THREADS": "1", "TF_NUM_INTEROP_THREADS": "1"} if workers > 1 else {})}
    started = time.perf_counter()
    processes = []
    for worker in range(workers):
        processes.append(subprocess.Popen([*command, f"hydra.sweep.dir=multirun/search_benchmark/{name}/{worker}"],
                                          env=env))
        time.sleep(5)  # the second worker joins the study the first created
    codes = [process.wait() for process in processes]
    seconds = time.perf_counter() - started
    if any(codes):
        raise SystemExit(f"search {name} failed: exit codes {codes}")
    study(name, args).set_user_attr("benchmark_seconds", seconds)  # kept with the study, read by --report-only
    return seconds


def study(name: str, args) -> optuna.Study:
    url = storage_url(None, args.tracking_uri, f"imdb_lstm_search_{name}", name)
    return optuna.load_study(study_name=name, storage=open_storage(url))


def row(name: str, args) -> dict:
    overrides, workers = SEARCHES[name]
    found = study(name, args)
    trials = [t for t in found.trials if counted(t)]
    states = pd.Series([t.state.name for t in trials]).value_counts().to_dict()
    params = [json.dumps(t.params, sort_keys=True) for t in trials]
    best = found.best_trial
    epochs = sum(len(t.intermediate_values) for t in trials)
    command = " ".join(["seqlab train -m hparams_search=optuna experiment=imdb_lstm_search", *overrides])
    return {"search": name, "command": command + (f", in {workers} terminals at once" if workers > 1 else ""),
            "workers": workers, "trials": len(trials), "complete": states.get("COMPLETE", 0),
            "pruned": states.get("PRUNED", 0), "failed": states.get("FAIL", 0),
            "duplicates": len(params) - len(set(params)), "epochs trained": epochs,
            "best accuracy/val": f"{best.value:.4f}", "best trial": best.number,
            "minutes": f"{found.user_attrs['benchmark_seconds'] / 60:.1f}"}


def done(name: str, args) -> bool:
    try:
        return "benchmark_seconds" in study(name, args).user_attrs
    except KeyError:  # no such study yet
        return False


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if not args.report_only:
        for name in args.only:
            run(name, args)
    table = pd.DataFrame([row(name, args) for name in SEARCHES if done(name, args)])
    print(to_markdown(table))
    if args.docs:
        written = (f"Written {date.today().isoformat()} on {machine()}: `experiment=imdb_lstm_search` (lstm, 4,000 "
                   f"IMDB training reviews of which 400 validate, 200 words, 4 epochs, TPE seed 42), {args.trials} "
                   "trials per search; minutes = wall time of the whole search.")
        write_between_markers(Path(args.docs), "<!-- search:start -->", "<!-- search:end -->",
                              f"{to_markdown(table)}\n\n{written}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
