"""`seqlab compare`: a table of runs read back from MLflow, seed runs averaged, best first; `--baseline` adds each
row's paired difference to a baseline run (seqlab.analysis.compare builds the table)."""

from __future__ import annotations

import argparse
import logging
import os
import sys

import pandas as pd

from seqlab.analysis.compare import display_rows, runs_frame, to_markdown
from seqlab.errors import SeqlabError, redact_uri, report_error
from seqlab.metrics import canonical

log = logging.getLogger(__name__)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="seqlab compare", description="Compare runs recorded by 'seqlab train'.")
    p.add_argument("--experiment", help="MLflow experiment name (default: every experiment in the store)")
    p.add_argument("--sweep", help="only the runs of this sweep (tracking.sweep, or the name 'seqlab train -m' printed)")
    p.add_argument("--metric", default="accuracy/test", help="sort by this metric, best first (default: accuracy/test; "
                   "the names of older runs, such as test_accuracy, work too)")
    p.add_argument("--format", choices=["table", "csv", "markdown"], default="table")
    p.add_argument("--per-run", action="store_true", help="one row per run: do not average runs that differ only in "
                                                          "trainer.seed")
    p.add_argument("--tracking-uri", default=os.environ.get("MLFLOW_TRACKING_URI", "sqlite:///mlflow.db"),
                   help="MLflow store (default: $MLFLOW_TRACKING_URI, else sqlite:///mlflow.db)")
    p.add_argument("--all", action="store_true", help="include runs that did not finish (and pruned trials)")
    p.add_argument("--pruned", action="store_true", help="include a search's trials that its pruner stopped (status "
                                                         "PRUNED; they have no test metrics)")
    p.add_argument("--baseline", metavar="RUN_OR_MODEL",
                   help="add Δ accuracy/test against this row, its 95%% paired-bootstrap interval and McNemar's p: a "
                        "run id (or its first 8 characters), a run name, or a model that is one row")
    return p


def print_rich(table: pd.DataFrame, title: str) -> None:
    from rich.console import Console
    from rich.table import Table

    columns, rows = display_rows(table)
    rich_table = Table(title=title)
    for column in columns:
        numeric = pd.api.types.is_numeric_dtype(table[column])
        rich_table.add_column(column, justify="right" if numeric else "left")
    for row in rows:
        rich_table.add_row(*row)
    # piped or redirected: no terminal width to fit, so no column is cut
    Console(width=None if sys.stdout.isatty() else 400).print(rich_table)


def main(argv: list[str]) -> int:
    args = parser().parse_args(argv)
    try:
        table = runs_frame(args.tracking_uri, args.experiment, args.metric, finished_only=not args.all,
                           sweep=args.sweep, per_run=args.per_run, baseline=args.baseline,
                           pruned=args.pruned or args.all)
    except SeqlabError as error:
        return report_error(error)
    if table.empty:
        log.error("no %sruns in %s%s", "" if args.all else "finished ", redact_uri(args.tracking_uri),
                  f" experiment {args.experiment!r}" if args.experiment else "")
        return 1
    if args.format == "csv":
        table.to_csv(sys.stdout, index=False)
    elif args.format == "markdown":
        print(to_markdown(table))
    else:
        scope = f"sweep {args.sweep!r}" if args.sweep else args.experiment or "all experiments"
        against = f", Δ against {args.baseline!r}" if args.baseline else ""
        print_rich(table, f"{scope} ({redact_uri(args.tracking_uri)}), by {canonical(args.metric)}{against}")
    return 0
