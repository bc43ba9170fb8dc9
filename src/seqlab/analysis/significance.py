"""Test predictions per run (`predictions/test.csv`) and `seqlab compare --baseline`: is a row's test accuracy
different from the baseline's on the same test examples, or is the difference noise?

For each row: Δ accuracy/test (row minus baseline), its 95% paired-bootstrap interval (2000 resamples of the test
examples, seeded, so the same store gives the same interval), and McNemar's exact p on the discordant examples.
Seed groups pooled: per example, the fraction of a group's runs that got it right; Δ is the mean difference of
those fractions (= the difference of the groups' mean accuracies) and the bootstrap resamples examples. McNemar
pairs runs seed by seed when both groups hold the same seeds, else every run with every run, and takes the mean of
each discordant count over the pairs (rounded), so each example counts once: a sum would count it once per pair.
"""

from __future__ import annotations

import logging
import tempfile
from dataclasses import dataclass

import numpy as np
import pandas as pd

from seqlab.errors import SeqlabError

PREDICTIONS_ARTIFACT = "predictions/test.csv"
PROBABILITY_PREFIX = "probability_"
DELTA = "Δ accuracy/test"
LOW, HIGH = f"{DELTA}_low", f"{DELTA}_high"
P_VALUE = "p (McNemar)"
COLUMNS = (DELTA, LOW, HIGH, P_VALUE)
RUN_IDS = "run_ids"  # compare's hidden column: the full ids of each row's runs
RESAMPLES = 2000
BOOTSTRAP_SEED = 0
ID_PREFIX = 8  # compare shows run ids cut to 8 characters

log = logging.getLogger(__name__)


# --- written by `seqlab train` ------------------------------------------------------------------------------

def predictions_table(labels: np.ndarray, outputs: np.ndarray, class_names: list[str],
                      ids: list[str] | None = None) -> pd.DataFrame:
    """One row per test example: id (the row index where the dataset gives none), true and predicted class names,
    and one probability column per class (`probability_<class>`). Predicted = argmax, as the test metrics take it."""
    from seqlab.analysis.evaluate import class_probabilities

    probabilities = class_probabilities(outputs)
    names = np.asarray(class_names, dtype=object)
    table = pd.DataFrame({"id": [str(i) for i in (ids if ids is not None else range(len(labels)))],
                          "label": names[np.asarray(labels)], "predicted": names[probabilities.argmax(axis=1)]})
    for index, name in enumerate(class_names):
        table[f"{PROBABILITY_PREFIX}{name}"] = probabilities[:, index]
    return table


def predictions_csv(labels: np.ndarray, outputs: np.ndarray, class_names: list[str],
                    ids: list[str] | None = None) -> str:
    # 7 significant digits: float32 outputs hold no more, and the file stays small (about 1 MB for 25,000 reviews)
    return predictions_table(labels, outputs, class_names, ids).to_csv(index=False, float_format="%.7g")


def log_predictions(labels: np.ndarray, outputs: np.ndarray, class_names: list[str],
                    ids: list[str] | None = None) -> None:
    """Record the test predictions in the active MLflow run as CSV (the UI's artifact viewer shows it)."""
    import mlflow

    mlflow.log_text(predictions_csv(labels, outputs, class_names, ids), PREDICTIONS_ARTIFACT)


def read_predictions(path: str) -> pd.DataFrame:
    # ids and class names as written: "007" stays "007", a class named "NA" stays "NA"
    return pd.read_csv(path, dtype={"id": str, "label": str, "predicted": str}, keep_default_na=False)


# --- read by `seqlab compare --baseline` --------------------------------------------------------------------

@dataclass
class Predictions:
    """A run's test predictions, sorted by example id so that two runs pair example by example."""
    run: str  # "abc12345 (name)", for messages
    seed: str | None
    ids: np.ndarray
    labels: np.ndarray
    correct: np.ndarray  # bool per example

    @classmethod
    def from_table(cls, table: pd.DataFrame, run: str, seed: str | None) -> "Predictions":
        order = np.argsort(table["id"].to_numpy(dtype=str), kind="stable")
        labels = table["label"].to_numpy(dtype=str)[order]
        return cls(run, seed, table["id"].to_numpy(dtype=str)[order], labels,
                   labels == table["predicted"].to_numpy(dtype=str)[order])


def check_same_examples(first: Predictions, second: Predictions) -> None:
    """A paired test needs the same test examples with the same true labels in both runs."""
    if len(first.ids) == len(second.ids) and (first.ids == second.ids).all():
        differing = int((first.labels != second.labels).sum())
        if differing == 0:
            return
        reason = f"{differing} of the {len(first.ids)} test examples have other true labels"
    else:
        only = len(set(first.ids).symmetric_difference(second.ids))
        reason = (f"{len(first.ids)} and {len(second.ids)} test examples, "
                  f"{only} ids in only one of them" if only else "the same ids, repeated differently")
    raise SeqlabError(f"Cannot compare run {first.run} with run {second.run} example by example: their test sets "
                      f"differ ({reason}). A paired test needs the same test examples: runs on other data, or whose "
                      "dataset.max_test or dataset.test_split differ (or that ran before seqlab fixed the test sample "
                      "across trainer.seed), cannot be "
                      "paired; compare them without --baseline, or narrow the runs with --experiment or --sweep.")


def bootstrap_interval(differences: np.ndarray, resamples: int = RESAMPLES, seed: int = BOOTSTRAP_SEED,
                       level: float = 0.95) -> tuple[float, float]:
    """Percentile interval of the mean of `differences` (one value per example) over resampled examples.

    Resampling n examples with replacement draws each distinct value a multinomial number of times, so the
    resampled means come from those counts: the same distribution as indexing, at (resamples x distinct values)
    instead of (resamples x n), and a run's differences take at most a few dozen distinct values.
    """
    values, counts = np.unique(np.asarray(differences, dtype=np.float64), return_counts=True)
    n = counts.sum()
    drawn = np.random.default_rng(seed).multinomial(n, counts / n, size=resamples)
    means = drawn @ values / n
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(means, [tail, 100 - tail])
    return float(low), float(high)


def mcnemar_p(right_only: int, wrong_only: int) -> float:
    """Exact two-sided McNemar p: valid for any number of discordant examples (few between similar models or on
    small test sets, where the chi-square approximation is not); it errs, if at all, on the conservative side."""
    from scipy.stats import binomtest

    discordant = right_only + wrong_only
    return 1.0 if discordant == 0 else float(binomtest(right_only, discordant, 0.5).pvalue)


def run_pairs(row: list[Predictions], baseline: list[Predictions]) -> list[tuple[Predictions, Predictions]]:
    """Seed by seed when both groups hold the same seeds (once each), else every run with every run."""
    row_seeds, baseline_seeds = [p.seed for p in row], [p.seed for p in baseline]
    if None not in row_seeds and len(set(row_seeds)) == len(row_seeds) and set(row_seeds) == set(baseline_seeds) \
            and len(set(baseline_seeds)) == len(baseline_seeds):
        by_seed = {p.seed: p for p in baseline}
        return [(p, by_seed[p.seed]) for p in row]
    return [(r, b) for r in row for b in baseline]


def compare_groups(row: list[Predictions], baseline: list[Predictions]) -> dict[str, float]:
    """Δ accuracy/test of the pooled row against the pooled baseline, its interval and McNemar's p."""
    for predictions in [*row, *baseline]:
        check_same_examples(baseline[0], predictions)
    row_correct = np.mean([p.correct for p in row], axis=0)  # per example: the fraction of the group's runs right
    baseline_correct = np.mean([p.correct for p in baseline], axis=0)
    differences = row_correct - baseline_correct
    low, high = bootstrap_interval(differences)
    pairs = run_pairs(row, baseline)
    right_only = np.mean([(r.correct & ~b.correct).sum() for r, b in pairs])
    wrong_only = np.mean([(~r.correct & b.correct).sum() for r, b in pairs])
    return {DELTA: float(differences.mean()), LOW: low, HIGH: high,
            P_VALUE: mcnemar_p(int(np.rint(right_only)), int(np.rint(wrong_only)))}


def resolve_baseline(table: pd.DataFrame, runs: pd.DataFrame, text: str) -> int:
    """The table row that `--baseline TEXT` names: a run id (whole, or its first 8 or more characters), else a run
    name, else a model (the `model` column). A run names the row it belongs to (its seed group)."""
    row_of = {run_id: index for index, ids in table[RUN_IDS].items() for run_id in ids}
    names = runs.get("tags.mlflow.runName", pd.Series(index=runs.index, dtype=object))
    by_id = [run_id for run_id in runs["run_id"] if run_id == text or (len(text) >= ID_PREFIX
                                                                        and run_id.startswith(text))]
    by_name = [run_id for run_id, name in zip(runs["run_id"], names) if name == text]
    rows = sorted({row_of[run_id] for run_id in by_id or by_name})
    what = "run id" if by_id else "run name"
    if not rows:
        rows, what = [index for index, model in table["model"].items() if model == text], "model"
    if len(rows) == 1:
        return rows[0]
    shown = ", ".join(sorted({str(m) for m in table["model"].dropna()}))
    if not rows:
        raise SeqlabError(f"--baseline {text!r} is no run id, run name or model of the {len(runs)} runs compared "
                          f"(models: {shown}). Give a run id or its first {ID_PREFIX} characters (the run column of "
                          "--per-run), a run name (as the MLflow UI shows it, e.g. 'lstm seed=1' in a sweep), or a "
                          "model that is one row.")
    candidates = "; ".join(describe_row(table, index) for index in rows)
    raise SeqlabError(f"--baseline {text!r} is ambiguous: it is the {what} of {len(rows)} rows ({candidates}). "
                      "Give the run id or the run name of one of the runs in the row you mean.")


def describe_row(table: pd.DataFrame, index: int) -> str:
    """A row as `lstm, model.units=50 (runs abc12345 def67890)`, for messages."""
    keys = [c for c in table.columns if "." in c and "/" not in c and not c.startswith("derived.")]
    row = table.loc[index]
    settings = ", ".join([str(row["model"]), *(f"{key}={row[key]}" for key in keys if pd.notna(row[key]))])
    return f"{settings} (runs {' '.join(run_id[:ID_PREFIX] for run_id in row[RUN_IDS])})"


class PredictionsCache:
    """Each run's predictions, downloaded once per `seqlab compare` call; None for a run that has none."""

    def __init__(self, tracking_uri: str, runs: pd.DataFrame):
        from mlflow.tracking import MlflowClient

        self.tracking_uri = tracking_uri
        self.client = MlflowClient(tracking_uri)
        names = runs.get("tags.mlflow.runName", pd.Series(index=runs.index, dtype=object))
        seeds = runs.get("params.trainer.seed", pd.Series(index=runs.index, dtype=object))
        self.labels = {run_id: f"{run_id[:ID_PREFIX]}" + (f" ({name})" if isinstance(name, str) else "")
                       for run_id, name in zip(runs["run_id"], names)}
        self.seeds = {run_id: seed if isinstance(seed, str) else None for run_id, seed in zip(runs["run_id"], seeds)}
        self.loaded: dict[str, Predictions | None] = {}
        self.scratch = tempfile.TemporaryDirectory(prefix="seqlab-compare-")

    def get(self, run_id: str) -> Predictions | None:
        if run_id not in self.loaded:
            self.loaded[run_id] = self._download(run_id)
        return self.loaded[run_id]

    def _download(self, run_id: str) -> Predictions | None:
        import mlflow
        from mlflow.exceptions import MlflowException

        folder = PREDICTIONS_ARTIFACT.rpartition("/")[0]
        try:
            # listed first: a missing file raises differently in each artifact store
            if PREDICTIONS_ARTIFACT not in {a.path for a in self.client.list_artifacts(run_id, folder)}:
                return None
            path = mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=PREDICTIONS_ARTIFACT,
                                                       dst_path=f"{self.scratch.name}/{run_id}",
                                                       tracking_uri=self.tracking_uri)
            table = read_predictions(path)
        except (MlflowException, OSError, ValueError) as error:
            raise SeqlabError(f"Could not read {PREDICTIONS_ARTIFACT} of run {self.labels[run_id]}: "
                              f"{type(error).__name__}: {str(error).splitlines()[0]}") from None
        return Predictions.from_table(table, self.labels[run_id], self.seeds[run_id])

    def close(self) -> None:
        self.scratch.cleanup()


def with_baseline(table: pd.DataFrame, runs: pd.DataFrame, baseline: str, tracking_uri: str) -> pd.DataFrame:
    """`table` (compare's, with its RUN_IDS column) with Δ accuracy/test, its interval and McNemar's p against the
    row `baseline` names, placed after accuracy/test; rows whose runs lack predictions get empty cells."""
    base = resolve_baseline(table, runs, baseline)
    cache = PredictionsCache(tracking_uri, runs)
    try:
        baseline_runs = [cache.get(run_id) for run_id in table.at[base, RUN_IDS]]
        if any(p is None for p in baseline_runs):
            missing = [cache.labels[r] for r, p in zip(table.at[base, RUN_IDS], baseline_runs) if p is None]
            raise SeqlabError(f"--baseline {baseline!r}: run {', '.join(missing)} has no {PREDICTIONS_ARTIFACT} "
                              "(recorded before seqlab logged test predictions); choose a baseline trained since.")
        log.info(f"Δ and p against the baseline row {describe_row(table, base)}")
        results, without = {}, []
        for index, run_ids in table[RUN_IDS].items():
            row_runs = [cache.get(run_id) for run_id in run_ids]
            if any(p is None for p in row_runs):  # a partial pool would not be the row's mean: no cells instead
                without += [cache.labels[r] for r, p in zip(run_ids, row_runs) if p is None]
                continue
            results[index] = compare_groups(row_runs, baseline_runs)
    finally:
        cache.close()
    if without:
        log.warning(f"{len(without)} run(s) have no {PREDICTIONS_ARTIFACT} (recorded before seqlab logged test "
                    f"predictions), so their rows' Δ and p are empty: {', '.join(without)}")
    columns = pd.DataFrame.from_dict(results, orient="index", columns=list(COLUMNS)).reindex(table.index)
    after = len(table.columns)  # beside the accuracy it qualifies, else last
    for name in ("accuracy/test_std", "accuracy/test"):
        if name in table.columns:
            after = list(table.columns).index(name) + 1
            break
    return pd.concat([table.iloc[:, :after], columns, table.iloc[:, after:]], axis=1)


def cell(column: str, row: pd.Series) -> str:
    """Text for a significance column: `+0.0123 [+0.0040, +0.0210]`, and p to 3 significant digits."""
    value = row[column]
    if pd.isna(value):
        return ""
    if column == DELTA:
        return f"{value:+.4f} [{row[LOW]:+.4f}, {row[HIGH]:+.4f}]"
    return f"{value:.3g}"
