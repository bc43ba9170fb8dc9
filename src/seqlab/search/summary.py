"""A sweep's parent run as the sweep's summary, written when the sweep ends (seqlab.search.sweep).

The best child is chosen on the validation metric (`seqlab.metrics.validation_metric(optimized_metric)`) at the
epoch whose weights it kept and tested, never on a test metric: the test split only reports. The parent gets that
child's params and final metrics, tags naming it (`best_run_id`, `best_run_name`), the `seqlab compare --sweep`
table (`comparison.csv`, `comparison.md`), a figure (`comparison.png`) and a description (the `mlflow.note.content`
tag, the UI's run "Description"); the child gets the tag `sweep.best=true`. With `tracking.registered_model`, the
best child's model version gets the alias `champion`.

Only MLflow, pandas and matplotlib here: this runs in the sweep's own process, which never starts TensorFlow.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from mlflow.entities import Metric, Param
from mlflow.tracking import MlflowClient
from mlflow.utils.mlflow_tags import MLFLOW_RUN_NOTE

from seqlab.metrics import canonical, higher_is_better, validation_metric
from seqlab.redaction import redact_uri

log = logging.getLogger(__name__)

NOTE = MLFLOW_RUN_NOTE  # mlflow.note.content: the "Description" of a run (and of an experiment) in the MLflow UI
BEST_TAG = "sweep.best"
BEST_LINE = "**Best child of sweep"  # opens the best child's paragraph in its description (a former best loses it)
CHAMPION = "champion"  # the registry alias of the best child's model version
TEST_SELECTOR = "accuracy/test"  # logged once, at the step of the epoch whose weights were tested (train.py)
MAX_NOTE = 7900  # MLflow refuses tag values over 8000 characters
BATCH = 100  # MLflow's log_batch takes at most 100 params per call


@dataclass
class SweepInfo:
    """What the summary needs to know of the sweep, kept by the callback from the sweep's config."""

    name: str
    parent_run_id: str
    experiment_id: str
    tracking_uri: str
    swept: dict[str, list[str] | None] = field(default_factory=dict)  # seqlab.search.sweep.swept(config)
    optimized_metric: str = "accuracy/test"
    registered_model: str | None = None
    summary_step: int = 0  # the parent's metrics' step: how often the sweep was continued (latest summary wins)


@dataclass
class Choice:
    """The best child: the run, its validation metric's value at its kept step, and that step."""

    run: object
    metric: str
    value: float
    step: int | None


def test_metric(optimized_metric: str) -> str:
    """The test metric a sweep reports: optimized_metric when that is one, else accuracy/test."""
    name = canonical(optimized_metric)
    return name if name.endswith("/test") else "accuracy/test"


class Histories:
    """Metric histories read once per (run, key): a sweep's summary reads each several times."""

    def __init__(self, client: MlflowClient):
        self.client, self.cache = client, {}

    def __call__(self, run_id: str, key: str) -> list:
        if (run_id, key) not in self.cache:
            self.cache[run_id, key] = sorted(self.client.get_metric_history(run_id, key),
                                             key=lambda m: (m.step, m.timestamp))
        return self.cache[run_id, key]

    def kept_step(self, run_id: str) -> int | None:
        """The step at which the run logged its test metrics: the epoch whose weights it kept and tested."""
        logged = self(run_id, TEST_SELECTOR)
        return max(logged, key=lambda m: m.timestamp).step if logged else None

    def value_at(self, run, key: str, step: int | None) -> float | None:
        """`key` at `step` (the last value logged there), else the run's last value of it."""
        at_step = [m for m in self(run.info.run_id, key) if m.step == step] if step is not None else []
        if at_step:
            return float(at_step[-1].value)
        value = run.data.metrics.get(key)
        return None if value is None else float(value)


def best_child(children, optimized_metric: str, histories: Histories) -> Choice | None:
    """The FINISHED child with the best validation metric at its kept step; ties go to the better other validation
    metric (loss/val for accuracy/val, and the reverse), then to the earlier job. None: no child has the metric."""
    metric = validation_metric(optimized_metric)
    other = "loss/val" if metric == "accuracy/val" else "accuracy/val"

    def oriented(name: str, value: float | None) -> float:  # larger is better; missing or NaN is worst
        if value is None or math.isnan(value):
            return -math.inf
        return value if higher_is_better(name) else -value

    ranked = []
    for run in children:
        if run.info.status != "FINISHED" or run.data.tags.get("optuna.state") == "PRUNED":
            continue
        step = histories.kept_step(run.info.run_id)
        value = histories.value_at(run, metric, step)
        if value is None or math.isnan(value):
            continue
        job = int(run.data.tags.get("sweep.job", "0") or 0)
        key = (oriented(metric, value), oriented(other, histories.value_at(run, other, step)), -job)
        ranked.append((key, Choice(run, metric, value, step)))
    return max(ranked, key=lambda item: item[0])[1] if ranked else None


def summarize(client: MlflowClient, sweep: SweepInfo, children, status: str, complete: bool) -> Choice | None:
    """Write the summary into the parent run (and tag the best child); returns the best child, if any.

    `complete`: the sweep ended normally; an interrupted one is summarised from the children that finished, and
    its best does not become the registry's champion.
    """
    histories = Histories(client)
    best = best_child(children, sweep.optimized_metric, histories)
    parent = client.get_run(sweep.parent_run_id)
    stale: list[str] = []
    if best is not None:
        stale = copy_best(client, parent, best, sweep.summary_step)
        mark_best(client, children, best, sweep.name)
    table = comparison_table(sweep, client.get_experiment(sweep.experiment_id).name, children)
    if table is not None:
        from seqlab.analysis.compare import to_markdown

        client.log_text(sweep.parent_run_id, table.to_csv(index=False), "comparison.csv")
        client.log_text(sweep.parent_run_id, to_markdown(table) + "\n", "comparison.md")
        figure = comparison_figure(sweep, table, children, best, histories)
        try:
            client.log_figure(sweep.parent_run_id, figure, "comparison.png")
        finally:
            from seqlab.analysis.evaluate import close_figures

            close_figures(figure)
    version = None
    if best is not None and sweep.registered_model and complete:
        version = set_champion(client, sweep.registered_model, best)
    note = parent_note(sweep, children, status, complete, best, table, version, stale)
    client.set_tag(sweep.parent_run_id, NOTE, note)
    return best


def copy_best(client: MlflowClient, parent, best: Choice, step: int) -> list[str]:
    """The best child's params and final metrics onto the parent. MLflow never changes a logged param: where a
    continued sweep's parent already holds an earlier best's, those stay; returns the keys whose values differ."""
    run = best.run
    held = parent.data.params
    params = [Param(key, value) for key, value in run.data.params.items() if key not in held]
    now = int(time.time() * 1000)
    # its results, not the machine's load while it ran (system/*: the child's own record keeps those)
    metrics = [Metric(key, value, now, step) for key, value in run.data.metrics.items() if not key.startswith("system/")]
    for start in range(0, max(len(params), len(metrics)), BATCH):
        client.log_batch(parent.info.run_id, metrics=metrics[start:start + BATCH],
                         params=params[start:start + BATCH], synchronous=True)
    tags = {"best_run_id": run.info.run_id, "best_run_name": run.info.run_name, "best_metric": best.metric,
            "best_metric_value": f"{best.value:.6g}"}
    for key, value in tags.items():
        client.set_tag(parent.info.run_id, key, value)
    return sorted(key for key, value in run.data.params.items() if held.get(key, value) != value)


def mark_best(client: MlflowClient, children, best: Choice, sweep: str) -> None:
    """`sweep.best=true` and a line in the description of the best child; a former best (a continued sweep)
    loses both."""
    best_id = best.run.info.run_id
    for run in children:
        note = run.data.tags.get(NOTE, "")
        kept = note[:note.index(BEST_LINE)].rstrip() if BEST_LINE in note else note
        if run.info.run_id == best_id:
            step = f" at step {best.step} (the epoch it kept)" if best.step is not None else ""
            client.set_tag(best_id, BEST_TAG, "true")
            client.set_tag(best_id, NOTE, f"{kept}\n\n{BEST_LINE} `{sweep}`** on `{best.metric}`: "
                                          f"{best.value:.4f}{step}.".lstrip())
        elif run.data.tags.get(BEST_TAG) is not None:
            client.delete_tag(run.info.run_id, BEST_TAG)
            client.set_tag(run.info.run_id, NOTE, kept)


def comparison_table(sweep: SweepInfo, experiment: str, children) -> pd.DataFrame | None:
    """`seqlab compare --sweep NAME` in this sweep's experiment, by its test metric; None without finished runs."""
    from seqlab.analysis.compare import runs_frame

    if not any(run_state(run) == "FINISHED" for run in children):  # pruned trials are not compared
        return None  # compare would say that the sweep has no finished runs
    table = runs_frame(sweep.tracking_uri, experiment, test_metric(sweep.optimized_metric), sweep=sweep.name)
    return table if not table.empty else None


def row_labels(table: pd.DataFrame) -> list[str]:
    """Each row as people name it: the run name, or for a seed group the model and the params that tell rows apart."""
    if "name" in table:
        return [str(name) for name in table["name"]]
    params = [c for c in table.columns if "." in c and not c.startswith("derived.") and not c.endswith("_std")
              and "/" not in c]
    labels = []
    for _, row in table.iterrows():
        parts = [str(row["model"]), *(f"{c.rsplit('.', 1)[-1]}={row[c]}" for c in params if not _missing(row[c]))]
        runs = int(row["runs"]) if "runs" in row and not _missing(row["runs"]) else 1
        labels.append(" ".join(parts) + (f" ({runs} seeds)" if runs > 1 else ""))
    return labels


def _missing(value) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def rows_of_runs(table: pd.DataFrame, children) -> dict[str, int]:
    """{run id: its row in `table`}: by id where rows are runs, else by the model and the params a row shows."""
    if "run" in table:
        return {run.info.run_id: index for index, short in enumerate(table["run"]) for run in children
                if run.info.run_id.startswith(str(short))}
    keys = [c for c in table.columns if c == "model" or ("." in c and "/" not in c and not c.startswith("derived."))]
    found = {}
    for run in children:
        values = {c: run.data.params.get("model.name" if c == "model" else c) for c in keys}
        for index, row in table.iterrows():
            if all(_same(row[c], values[c]) for c in keys):
                found[run.info.run_id] = index
                break
    return found


def _same(a, b) -> bool:
    return (_missing(a) and _missing(b)) or (not _missing(a) and not _missing(b) and str(a) == str(b))


def comparison_figure(sweep: SweepInfo, table: pd.DataFrame, children, best: Choice | None,
                      histories: Histories):
    """Left: the test metric per row of the comparison table (seed spread as error bars), the best child's row
    marked. Right: every finished child's validation curve, coloured by its row, its kept step marked."""
    from seqlab.analysis.evaluate import pyplot

    plt = pyplot()
    curve = validation_metric(sweep.optimized_metric)
    rows = rows_of_runs(table, children)
    colours = plt.get_cmap("tab10")
    best_row = rows.get(best.run.info.run_id) if best else None
    height = max(4.0, 0.35 * len(table) + 1.5)
    figure, (left, right) = plt.subplots(1, 2, figsize=(13, height), gridspec_kw={"width_ratios": [1, 1.2]})
    _test_metric_bars(left, table, test_metric(sweep.optimized_metric), best_row, colours)
    _validation_curves(right, children, curve, rows, best, histories, colours)
    figure.suptitle(f"sweep {sweep.name!r}: {len(table)} variants, best chosen on {curve}", fontsize=11)
    figure.tight_layout()
    return figure


def _test_metric_bars(axes, table: pd.DataFrame, reported: str, best_row: int | None, colours) -> None:
    """The test metric per row of the comparison table, its seed spread as error bars, the best child's row marked."""
    positions = np.arange(len(table))[::-1]  # the table's first (best) row on top
    values = table[reported].to_numpy(dtype=float)
    spread = table[f"{reported}_std"].to_numpy(dtype=float) if f"{reported}_std" in table else None
    if spread is not None and not np.isfinite(spread).any():
        spread = None  # every row a single run: no spread to draw
    seeds = table["runs"].to_numpy(dtype=float) if "runs" in table else np.ones(len(table))
    axes.barh(positions, values, xerr=None if spread is None else np.nan_to_num(spread), capsize=3,
              color=[colours(i % 10) for i in range(len(table))], alpha=0.85)
    for index, (position, value) in enumerate(zip(positions, values)):
        if not math.isnan(value):
            end = value + (np.nan_to_num(spread[index]) if spread is not None else 0)  # right of the error bar
            best_text = ""
            if index == best_row:  # a seed group holds the best child; a run is it
                best_text = " (holds the best child)" if seeds[index] > 1 else " (best on validation)"
            axes.text(end, position, f" {value:.4f}{best_text}", va="center", fontsize=8,
                      fontweight="bold" if index == best_row else "normal")
    axes.set_yticks(positions, row_labels(table), fontsize=8)
    axes.set_xlabel(reported + (" (mean ± std over seeds)" if spread is not None else ""))
    axes.set_title(f"{reported} per variant", fontsize=10)
    axes.grid(axis="x", alpha=0.3)
    upper = np.nanmax(values) if np.isfinite(values).any() else 1.0
    axes.set_xlim(0, upper * 1.35 if upper > 0 else 1.0)


def _validation_curves(axes, children, curve: str, rows: dict, best: Choice | None, histories: Histories,
                       colours) -> None:
    """Every finished child's validation curve, coloured by its row of the table, its kept step marked."""
    from matplotlib.ticker import MaxNLocator  # after pyplot(): it picks the Agg backend first

    drawn: dict[int | None, int] = {}  # curves per row so far: seeds of one variant share its colour, not its style
    for run in sorted(children, key=lambda r: int(r.data.tags.get("sweep.job", "0") or 0)):
        if run.info.status != "FINISHED":
            continue
        history = histories(run.info.run_id, curve)
        if not history:
            continue
        by_step = {m.step: m.value for m in history}  # the last value where a step was logged twice
        steps = sorted(by_step)
        row = rows.get(run.info.run_id)
        colour = colours(row % 10) if row is not None else "grey"
        is_best = best is not None and run.info.run_id == best.run.info.run_id
        style = ("-", "--", ":", "-.")[drawn.get(row, 0) % 4]
        drawn[row] = drawn.get(row, 0) + 1
        axes.plot(steps, [by_step[s] for s in steps], marker="o", linestyle=style, color=colour,
                  label=run.info.run_name, linewidth=2.5 if is_best else 1.2, markersize=4)
        kept = histories.kept_step(run.info.run_id)
        if kept in by_step:
            axes.plot([kept], [by_step[kept]], marker="*" if is_best else "D", color=colour,
                      markersize=14 if is_best else 6, markeredgecolor="black", linestyle="none")
    axes.xaxis.set_major_locator(MaxNLocator(integer=True))  # steps are epochs
    axes.set_xlabel("step (epoch index, as in MLflow)")
    axes.set_ylabel(curve)
    axes.set_title(f"{curve} per epoch\n(diamond: the kept epoch; star: the best child)", fontsize=10)
    axes.grid(alpha=0.3)
    if axes.lines:
        axes.legend(fontsize=7, loc="best", ncol=1 if len(children) <= 10 else 2)


def set_champion(client: MlflowClient, name: str, best: Choice):
    """The alias `champion` on the best child's model version (its latest, if registered twice); None, with a
    warning, where the child registered no model."""
    run_id = best.run.info.run_id
    versions = [v for v in client.search_model_versions(f"run_id='{run_id}'") if v.name == name]
    if not versions:
        log.warning(f"the best child {best.run.info.run_name!r} ({run_id}) has no version of registered model "
                    f"{name!r} (tracking.log_model=false?): alias {CHAMPION!r} not set.")
        return None
    version = max(versions, key=lambda v: int(v.version))
    client.set_registered_model_alias(name, CHAMPION, version.version)
    log.info(f"registered model {name!r}: alias {CHAMPION!r} -> version {version.version} "
             f"({best.run.info.run_name}); predict with models:/{name}@{CHAMPION}")
    return version


def run_state(run) -> str:
    """The run's status, or PRUNED for a search's trial that the pruner stopped (it ended FINISHED)."""
    return "PRUNED" if run.data.tags.get("optuna.state") == "PRUNED" else run.info.status


def parent_note(sweep: SweepInfo, children, status: str, complete: bool, best: Choice | None,
                table: pd.DataFrame | None, version, stale: list[str]) -> str:
    """The parent's description (markdown): what was compared, the children, the best, where the table is."""
    counts: dict[str, int] = {}
    for run in children:
        counts[run_state(run)] = counts.get(run_state(run), 0) + 1
    compared = []
    for key, values in sweep.swept.items():
        compared.append(f"`{key}` over {', '.join(f'`{v}`' for v in values)}" if values
                        else f"`{key}` (searched in a range)")
    outcome = "" if complete else f" (ended {status} before all its jobs finished: summarised from those that did)"
    lines = [f"**Sweep `{sweep.name}`**{outcome}: compares {'; '.join(compared) or 'the same config (no swept key)'}"
             " (the rest: tag `sweep.overrides`).", "",
             f"**Children**: {len(children)} ({', '.join(f'{n} {s}' for s, n in sorted(counts.items())) or 'none'}), "
             "nested under this run in the runs table: expand its row (the + by its name), or sort the table by a "
             "metric to list them all flat."]
    if best is not None:
        run, reported = best.run, test_metric(sweep.optimized_metric)
        step = f" at step {best.step} (the epoch it kept)" if best.step is not None else ""
        tested = run.data.metrics.get(reported)
        params = ("and so are its params" if not stale else "and so are its params but "
                  + ", ".join(f"`{key}` (the best's: `{run.data.params[key]}`)" for key in stale)
                  + ", kept from an earlier summary's best: MLflow never changes a logged param")
        lines += ["", f"**Best**: [`{run.info.run_name}`](#/experiments/{sweep.experiment_id}/runs/{run.info.run_id}?workflowType=machine_learning) "
                      f"(tag `{BEST_TAG}=true`), chosen on `{best.metric}` = {best.value:.4f}{step}, never on a test "
                      f"metric; its `{reported}` = " + ("none" if tested is None else f"{tested:.4f}")
                  + f". This run's metrics are the best child's {params}."]
    else:
        lines += ["", "**Best**: none (no child finished with a validation metric)."]
    if version is not None:
        lines += ["", f"**Registry**: `{version.name}` version {version.version}, alias `{CHAMPION}`: "
                      f"`seqlab predict models:/{version.name}@{CHAMPION} --text \"...\"`."]
    elif sweep.registered_model and best is not None and not complete:
        lines += ["", f"**Registry**: alias `{CHAMPION}` of `{sweep.registered_model}` not moved: the sweep did not "
                      "complete."]
    command = f"seqlab compare --sweep {sweep.name} --tracking-uri {redact_uri(sweep.tracking_uri)}"
    if table is None:
        return "\n".join([*lines, "", f"**Table**: none, no child finished (`{command} --all` lists them)."])
    from seqlab.analysis.compare import to_markdown

    lines += ["", f"**Table**: artifacts `comparison.md`, `comparison.csv` and `comparison.png`; `{command}`."]
    text = to_markdown(table)
    if len("\n".join(lines)) + len(text) < MAX_NOTE - 10:  # a long sweep's table stays in comparison.md only
        lines += ["", text]
    return "\n".join(lines)[:MAX_NOTE]
