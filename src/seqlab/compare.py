"""`seqlab compare`: a table of runs read back from MLflow (model, the params that differ, metrics)."""

from __future__ import annotations

import argparse
import os
import sys

import pandas as pd

from seqlab.errors import SeqlabError

METRIC_COLUMNS = ["test_accuracy", "test_f1_macro", "test_roc_auc", "test_loss", "val_accuracy", "epochs",
                  "epoch_seconds", "train_seconds"]
# Params that always differ between runs or say nothing about the model.
IGNORED_PARAMS = {"tracking.run_name", "tracking.uri", "tracking.experiment", "data_dir", "cache_dir"}


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="seqlab compare", description="Compare runs recorded by 'seqlab train'.")
    p.add_argument("--experiment", help="MLflow experiment name (default: every experiment in the store)")
    p.add_argument("--metric", default="test_accuracy", help="sort by this metric, best first")
    p.add_argument("--format", choices=["table", "csv", "markdown"], default="table")
    p.add_argument("--tracking-uri", default=os.environ.get("MLFLOW_TRACKING_URI", "sqlite:///mlflow.db"))
    p.add_argument("--all", action="store_true", help="include runs that did not finish")
    return p


def runs_frame(tracking_uri: str, experiment: str | None = None, metric: str = "test_accuracy",
               finished_only: bool = True) -> pd.DataFrame:
    """One row per run: run, model, params that differ between the runs, metrics."""
    import mlflow

    mlflow.set_tracking_uri(tracking_uri)
    if experiment is not None and mlflow.get_experiment_by_name(experiment) is None:
        names = [e.name for e in mlflow.search_experiments()]
        raise SeqlabError(f"No experiment {experiment!r} in {tracking_uri}; experiments there: {', '.join(names) or 'none'}.")
    runs = mlflow.search_runs(experiment_names=[experiment] if experiment else None,
                              search_all_experiments=experiment is None,
                              filter_string="attributes.status = 'FINISHED'" if finished_only else "")
    if runs.empty:
        return pd.DataFrame()
    params = [c for c in runs.columns if c.startswith("params.") and c[7:] not in IGNORED_PARAMS]
    varying = [c for c in params if c != "params.model.name" and runs[c].astype(str).nunique() > 1]
    table = pd.DataFrame({"run": runs["run_id"].str[:8], "name": runs.get("tags.mlflow.runName"),
                          "status": runs["status"], "model": runs.get("params.model.name")})
    for column in varying:
        table[column[7:]] = runs[column]
    if "metrics.train_seconds" in runs and "metrics.epochs" in runs:
        # the run's mean; the metric of that name holds only the last epoch's
        runs["metrics.epoch_seconds"] = runs["metrics.train_seconds"] / runs["metrics.epochs"]
    for name in METRIC_COLUMNS:
        if f"metrics.{name}" in runs:
            table[name] = runs[f"metrics.{name}"]
    if metric in table:
        table = table.sort_values(metric, ascending=metric.endswith("loss"), na_position="last")
    if not (table["status"] != "FINISHED").any():
        table = table.drop(columns="status")
    return table.reset_index(drop=True)


def to_markdown(table: pd.DataFrame) -> str:
    def cell(value) -> str:
        if isinstance(value, float):
            return "" if pd.isna(value) else f"{value:.4f}" if abs(value) < 10 else f"{value:.1f}"
        return "" if value is None else str(value)

    lines = ["| " + " | ".join(table.columns) + " |", "|" + "|".join(" --- " for _ in table.columns) + "|"]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in table.itertuples(index=False)]
    return "\n".join(lines)


def print_rich(table: pd.DataFrame, title: str) -> None:
    from rich.console import Console
    from rich.table import Table

    rich_table = Table(title=title)
    for column in table.columns:
        rich_table.add_column(str(column), justify="right" if pd.api.types.is_numeric_dtype(table[column]) else "left")
    for row in table.itertuples(index=False):
        rich_table.add_row(*[("" if pd.isna(v) else f"{v:.4f}" if isinstance(v, float) else str(v)) for v in row])
    Console().print(rich_table)


def main(argv: list[str]) -> int:
    args = parser().parse_args(argv)
    from seqlab.cli import report_error

    try:
        table = runs_frame(args.tracking_uri, args.experiment, args.metric, finished_only=not args.all)
    except SeqlabError as error:
        return report_error(error)
    if table.empty:
        print(f"seqlab: no finished runs in {args.tracking_uri}"
              + (f" experiment {args.experiment!r}" if args.experiment else ""), file=sys.stderr)
        return 1
    if args.format == "csv":
        table.to_csv(sys.stdout, index=False)
    elif args.format == "markdown":
        print(to_markdown(table))
    else:
        print_rich(table, f"{args.experiment or 'all experiments'} ({args.tracking_uri}), by {args.metric}")
    return 0
