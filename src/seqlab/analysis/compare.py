"""`seqlab compare`: a table of runs read back from MLflow (model, the params that differ, metrics).

Runs are one row exactly when every logged param but `trainer.seed` is the same (a `trainer.seed=1,2,3` sweep):
the mean of each metric, its standard deviation across seeds and the number of runs (`--per-run` lists them one
by one). A run logs only the keys its options own (seqlab.schema), so a param a run lacks is a difference too.
Where-things-are params and the `derived.*` facts (vocabulary actually fitted, parameter count), which follow
from the config and the data, never split a row. `--sweep NAME` keeps the runs of one sweep (its parent run is
never a row). `--baseline RUN_OR_MODEL` adds Δ accuracy/test against one row, its paired-bootstrap interval and
McNemar's p, from the runs' test predictions (seqlab.analysis.significance).
"""

from __future__ import annotations

import logging
import re

import pandas as pd

from seqlab.analysis import significance
from seqlab.analysis.significance import RUN_IDS
from seqlab.errors import SeqlabError, redact_uri
from seqlab.metrics import canonical, higher_is_better

METRIC_COLUMNS = ["accuracy/test", "f1_macro/test", "roc_auc/test", "loss/test", "accuracy/val", "time/epochs",
                  "time/epoch_seconds", "time/train_seconds"]
SEED = "trainer.seed"
DERIVED = "derived."  # facts that follow from the config and the data (seqlab.workflow.train.derived_params)
# Runs of earlier seqlab versions: the overrides blob and MLflow's Keras callback's copy of the optimizer.
LEGACY_PARAMS = ("overrides", "optimizer_")
FLOAT_TEXT = re.compile(r"-?\d*\.\d+(e-?\d+)?")

log = logging.getLogger(__name__)


def search(tracking_uri: str, experiment: str | None = None, sweep: str | None = None,
           finished_only: bool = True, pruned: bool = False) -> pd.DataFrame:
    """MLflow's runs frame (params.*, metrics.*, tags.* columns) of the training runs asked for."""
    import mlflow
    from mlflow.exceptions import MlflowException

    from seqlab.record.store import check_reachable

    # compare only reads: a missing or empty SQLite store is refused, where MLflow would create one
    check_reachable(tracking_uri, option="--tracking-uri", write=False)
    store = redact_uri(tracking_uri)
    mlflow.set_tracking_uri(tracking_uri)
    try:
        if experiment is not None and mlflow.get_experiment_by_name(experiment) is None:
            names = [e.name for e in mlflow.search_experiments()]
            raise SeqlabError(f"No experiment {experiment!r} in {store}; experiments there: "
                              f"{', '.join(names) or 'none'}.")
        runs = mlflow.search_runs(experiment_names=[experiment] if experiment else None,
                                  search_all_experiments=experiment is None,
                                  filter_string="attributes.status = 'FINISHED'" if finished_only else "")
    except MlflowException as error:
        raise SeqlabError(f"Cannot read the MLflow store {store}: {redact_uri(str(error).splitlines()[0])}") from None
    if runs.empty:
        return runs
    runs = with_current_metric_names(runs)
    role = runs.get("tags.sweep.role", pd.Series(index=runs.index, dtype=object))
    runs = runs[role != "parent"]
    folds = runs.get("tags.cv.role", pd.Series(index=runs.index, dtype=object)) == "fold"
    runs = runs[~folds]  # a cross-validation's folds: their parent holds their mean and std
    if not pruned:  # a search's trials stopped by its pruner: no test metrics, not a finished variant
        runs = runs[runs.get("tags.optuna.state", pd.Series(index=runs.index, dtype=object)) != "PRUNED"]
    if sweep is not None:
        names = runs.get("tags.sweep", pd.Series(index=runs.index, dtype=object))
        if not (names == sweep).any():
            known = sorted(names.dropna().unique())
            raise SeqlabError(f"No {'finished ' if finished_only else ''}runs of sweep {sweep!r} in "
                              f"{experiment or 'any experiment'} at {store}; sweeps there: "
                              f"{', '.join(known) or 'none'}.")
        runs = runs[names == sweep]
    return runs.reset_index(drop=True)


def with_current_metric_names(runs: pd.DataFrame) -> pd.DataFrame:
    """Runs of seqlab 0.1 logged `test_accuracy`, `val_loss`...: their values join today's columns."""
    for column in [c for c in runs.columns if c.startswith("metrics.")]:
        current = f"metrics.{canonical(column[8:])}"
        if current != column:
            runs[current] = runs[current].fillna(runs[column]) if current in runs else runs[column]
            runs = runs.drop(columns=column)
    return runs


def compared(param: str) -> bool:
    """Whether a param tells runs apart (what was trained), as opposed to where things are or a derived fact."""
    from seqlab.schema.root import is_location_key

    return not (is_location_key(param) or param.startswith((DERIVED, *LEGACY_PARAMS)))


def varying_params(runs: pd.DataFrame) -> list[str]:
    """The params (without 'params.') whose values differ between the runs, model name aside; a run without a
    param (another model's key) differs from one that has it."""
    columns = [c for c in runs.columns if c.startswith("params.") and c[7:] != "model.name" and compared(c[7:])]
    return sorted(c[7:] for c in columns if runs[c].astype(str).nunique(dropna=False) > 1)


def shown_params(runs: pd.DataFrame, params: list[str]) -> list[str]:
    """Of the varying params, those whose values differ where they are logged: a key only some models have
    (another model's kernel_size) already differs by the model column, so it gets no column of blanks."""
    return [name for name in params if name == SEED or runs[f"params.{name}"].dropna().astype(str).nunique() > 1]


def varying_facts(runs: pd.DataFrame) -> list[str]:
    """The derived.* params that differ between runs: shown, never grouped on."""
    return sorted(c[7:] for c in runs.columns if c.startswith(f"params.{DERIVED}")
                  and runs[c].astype(str).nunique(dropna=False) > 1)


def runs_frame(tracking_uri: str, experiment: str | None = None, metric: str = "accuracy/test",
               finished_only: bool = True, sweep: str | None = None, per_run: bool = False,
               baseline: str | None = None, pruned: bool = False) -> pd.DataFrame:
    """The comparison table: one row per run, or per group of runs that differ only in their seed; with `baseline`,
    the significance columns against that row (seqlab.analysis.significance.with_baseline)."""
    metric = canonical(metric)
    runs = search(tracking_uri, experiment, sweep, finished_only, pruned)
    if runs.empty:
        return pd.DataFrame()
    params, facts = varying_params(runs), varying_facts(runs)
    table = pd.DataFrame({"run": runs["run_id"].str[:8], "name": runs.get("tags.mlflow.runName"),
                          "status": runs["status"].where(runs.get("tags.optuna.state", pd.Series(
                              index=runs.index, dtype=object)) != "PRUNED", "PRUNED"), "model": runs.get("params.model.name"),
                          RUN_IDS: runs["run_id"].map(lambda run_id: (run_id,))})  # dropped before it is shown
    for name in [*params, *facts]:
        table[name] = runs[f"params.{name}"]
    if "metrics.time/train_seconds" in runs and "metrics.time/epochs" in runs:
        # the run's mean; the metric of that name holds only the last epoch's
        runs["metrics.time/epoch_seconds"] = runs["metrics.time/train_seconds"] / runs["metrics.time/epochs"]
    metrics = [name for name in METRIC_COLUMNS if f"metrics.{name}" in runs]
    for name in metrics:
        table[name] = runs[f"metrics.{name}"]
    if metric not in metrics:
        available = sorted(c[8:] for c in runs.columns if c.startswith("metrics."))
        raise SeqlabError(f"--metric {metric!r}: these runs have no such metric; they have {', '.join(available)}.")
    if SEED in params and not per_run:
        table = aggregate_seeds(table, [name for name in params if name != SEED], facts, metrics)
    elif not (table["status"] != "FINISHED").any():
        table = table.drop(columns="status")
    table = table.drop(columns=sorted(set(params) - set(shown_params(runs, params))))
    table = table.sort_values(metric, ascending=not higher_is_better(metric), na_position="last", kind="stable")
    table = table.reset_index(drop=True)
    if baseline is not None:
        table = significance.with_baseline(table, runs, baseline, tracking_uri)
    return table.drop(columns=RUN_IDS)


def aggregate_seeds(table: pd.DataFrame, keys: list[str], facts: list[str], metrics: list[str]) -> pd.DataFrame:
    """One row per config: runs, their seeds, each fact's values, each metric's mean and sample standard deviation."""
    keys = ["model", *keys]
    groups = table.groupby(keys, dropna=False, sort=False)
    rows = groups.agg(runs=("run", "size"), seeds=(SEED, lambda s: " ".join(sorted(s.astype(str), key=_seed_order))),
                      **{RUN_IDS: (RUN_IDS, lambda s: sum(s, ()))},  # the group's run ids, for --baseline
                      **{fact: (fact, lambda s: "/".join(dict.fromkeys(s.dropna().astype(str)))) for fact in facts})
    for name in metrics:
        rows[name] = groups[name].mean()
        rows[f"{name}_std"] = groups[name].std()  # NaN for a single run: no spread to report
    return rows.reset_index()


def _seed_order(seed: str):
    return (0, int(seed), "") if seed.lstrip("-").isdigit() else (1, 0, seed)


def cell(column: str, value, spread=None) -> str:
    """Text for one value (and its spread): seconds to 0.1, epochs whole where they are, else 4 decimals."""
    if value is None or (isinstance(value, float) and pd.isna(value)):
        return ""
    if not isinstance(value, float):
        text = str(value)
        if len(text) > 8 and FLOAT_TEXT.fullmatch(text):  # a param such as a sampled learning rate
            return f"{float(text):.4g}"
        return text
    if "seconds" in column:
        digits = 1
    elif column == "time/epochs" and value.is_integer() and (spread is None or pd.isna(spread) or not spread):
        digits = 0
    else:
        digits = 4
    text = f"{value:.{digits}f}"
    if spread is not None and not pd.isna(spread):
        text += f" ± {spread:.{digits}f}"
    return text


def display_rows(table: pd.DataFrame) -> tuple[list[str], list[list[str]]]:
    """Columns and text cells for people: a metric's _std column joins its mean as 'mean ± std', Δ's interval
    columns join it as 'Δ [low, high]'."""
    columns = [c for c in table.columns if not (c.endswith("_std") and c[:-4] in table.columns)
               and c not in (significance.LOW, significance.HIGH)]
    rows = []
    for _, row in table.iterrows():
        rows.append([significance.cell(c, row) if c in significance.COLUMNS else cell(c, row[c], row.get(f"{c}_std"))
                     for c in columns])
    return [str(c) for c in columns], rows


def to_markdown(table: pd.DataFrame) -> str:
    columns, rows = display_rows(table)
    lines = ["| " + " | ".join(columns) + " |", "|" + "|".join(" --- " for _ in columns) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


