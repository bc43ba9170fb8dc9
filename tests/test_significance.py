"""`seqlab compare --baseline`: Δ accuracy/test, its paired-bootstrap interval and McNemar's p from the runs'
test predictions.

Runs are written through MLflow's client, as in tests/test_compare.py, each with the `predictions/test.csv` that
`seqlab train` writes (seqlab.analysis.significance.predictions_csv) for a chosen set of correct examples; tests/test_train.py
checks the file a real training run logs."""

import io

import numpy as np
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient
from scipy.stats import binomtest

from seqlab.analysis.compare import runs_frame
from seqlab.cli.compare import main
from seqlab.errors import SeqlabError
from seqlab.analysis.significance import (DELTA, HIGH, LOW, P_VALUE, PREDICTIONS_ARTIFACT, bootstrap_interval,
                                 predictions_csv, read_predictions)

pytestmark = pytest.mark.unit

N = 200
CLASSES = ["neg", "pos"]
IDS = [f"test/{i:04d}" for i in range(N)]
LABELS = np.random.default_rng(7).integers(0, 2, N)
BASE_CORRECT = np.arange(N) % 10 < 7  # 140 of 200 right
# A run that the baseline gets wrong on 30 examples it gets right, and right on 10 it gets wrong:
# flips 30 of the baseline's wrong examples to right and 10 of its right examples to wrong.
PAIR_CORRECT = BASE_CORRECT.copy()
PAIR_CORRECT[np.flatnonzero(~BASE_CORRECT)[:30]] = True
PAIR_CORRECT[np.flatnonzero(BASE_CORRECT)[:10]] = False


def seed_mask(seed: int, accuracy: float) -> np.ndarray:
    return np.random.default_rng(seed).random(N) < accuracy


# experiment "seeds": (model, seed, correct mask, with predictions)
SEED_RUNS = [*(("lstm", seed, seed_mask(seed, 0.70), True) for seed in (1, 2, 3)),
             *(("gru", seed, seed_mask(10 + seed, 0.78), True) for seed in (1, 2, 3)),
             ("cnn_lstm", 4, seed_mask(20, 0.74), True),
             ("fasttext_bigram", 1, seed_mask(30, 0.72), False)]  # recorded before predictions were logged


def outputs_for(correct: np.ndarray, labels: np.ndarray = LABELS) -> np.ndarray:
    """Sigmoid outputs whose argmax is right exactly where `correct` is."""
    predicted = np.where(correct, labels, 1 - labels)
    return np.where(predicted == 1, 0.8, 0.3)[:, None]


def log_run(client, experiment, name, params, correct, labels=LABELS, ids=IDS, predictions=True) -> str:
    run_id = client.create_run(experiment, run_name=name).info.run_id
    for key, value in params.items():
        client.log_param(run_id, key, value)
    client.log_metric(run_id, "accuracy/test", float(correct.mean()))
    if predictions:
        client.log_text(run_id, predictions_csv(labels, outputs_for(correct, labels), CLASSES, ids),
                        PREDICTIONS_ARTIFACT)
    client.set_terminated(run_id, "FINISHED")
    return run_id


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    folder = tmp_path_factory.mktemp("significance")
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    client = MlflowClient(uri)
    ids = {}
    pair = client.create_experiment("pair", artifact_location=(folder / "pair").as_uri())
    ids["baseline"] = log_run(client, pair, "lstm run", {"model.name": "lstm", "trainer.seed": "42"}, BASE_CORRECT)
    ids["other"] = log_run(client, pair, "gru run", {"model.name": "gru", "trainer.seed": "42"}, PAIR_CORRECT)
    seeds = client.create_experiment("seeds", artifact_location=(folder / "seeds").as_uri())
    for model, seed, correct, predictions in SEED_RUNS:
        ids[f"{model}-{seed}"] = log_run(client, seeds, f"{model} seed={seed}",
                                         {"model.name": model, "trainer.seed": str(seed)}, correct,
                                         predictions=predictions)
    shifted = client.create_experiment("shifted", artifact_location=(folder / "shifted").as_uri())
    ids["shifted-baseline"] = log_run(client, shifted, "lstm run", {"model.name": "lstm"}, BASE_CORRECT)
    other_ids = [f"test/{i:04d}" for i in range(1, N + 1)]  # another sample of the test split: one id differs
    ids["shifted"] = log_run(client, shifted, "gru on another sample", {"model.name": "gru"}, PAIR_CORRECT,
                             ids=other_ids)
    relabelled = client.create_experiment("relabelled", artifact_location=(folder / "relabelled").as_uri())
    log_run(client, relabelled, "lstm run", {"model.name": "lstm"}, BASE_CORRECT)
    ids["relabelled"] = log_run(client, relabelled, "gru on other labels", {"model.name": "gru"}, PAIR_CORRECT,
                                labels=np.where(np.arange(N) < 5, 1 - LABELS, LABELS))
    return uri, ids


def row(table: pd.DataFrame, model: str) -> pd.Series:
    [index] = table.index[table["model"] == model]
    return table.loc[index]


def test_predictions_file_round_trips_with_ids_labels_and_probabilities():
    text = predictions_csv(LABELS, outputs_for(PAIR_CORRECT), CLASSES, IDS)
    table = read_predictions(io.StringIO(text))
    assert list(table.columns) == ["id", "label", "predicted", "probability_neg", "probability_pos"]
    assert table["id"].tolist() == IDS and table["label"].tolist() == [CLASSES[i] for i in LABELS]
    assert np.allclose(table[["probability_neg", "probability_pos"]].sum(axis=1), 1)
    assert ((table["label"] == table["predicted"]).to_numpy() == PAIR_CORRECT).all()
    numbered = read_predictions(io.StringIO(predictions_csv(LABELS, outputs_for(PAIR_CORRECT), CLASSES)))
    assert numbered["id"].tolist() == [str(i) for i in range(N)]  # no ids from the dataset: the row index


def test_two_runs_give_the_difference_its_interval_and_mcnemars_p(store):
    uri, _ = store
    table = runs_frame(uri, "pair", baseline="lstm")
    gru = row(table, "gru")
    expected = (30 - 10) / N
    assert gru[DELTA] == pytest.approx(expected)
    assert gru[DELTA] == pytest.approx(gru["accuracy/test"] - row(table, "lstm")["accuracy/test"])
    assert gru[LOW] < expected < gru[HIGH] and 0 < gru[LOW]  # 30 against 10 discordant: clearly better
    assert gru[P_VALUE] == pytest.approx(binomtest(30, 40, 0.5).pvalue)
    assert list(table.columns[table.columns.get_loc("accuracy/test") + 1:][:4]) == [DELTA, LOW, HIGH, P_VALUE]


def test_the_baseline_compared_with_itself_is_zero_with_p_one(store):
    uri, ids = store
    for baseline in ("lstm", ids["baseline"], ids["baseline"][:8], "lstm run"):  # model, id, its prefix, run name
        lstm = row(runs_frame(uri, "pair", baseline=baseline), "lstm")
        assert (lstm[DELTA], lstm[LOW], lstm[HIGH], lstm[P_VALUE]) == (0, 0, 0, 1), baseline


def test_the_multinomial_bootstrap_matches_resampling_examples_by_index():
    differences = PAIR_CORRECT.astype(float) - BASE_CORRECT
    low, high = bootstrap_interval(differences)
    assert bootstrap_interval(differences) == (low, high)  # seeded: the same interval every time
    means = differences[np.random.default_rng(1).integers(0, N, size=(20000, N))].mean(axis=1)
    assert low == pytest.approx(np.percentile(means, 2.5), abs=0.0075)  # the means fall on a grid of 1/200
    assert high == pytest.approx(np.percentile(means, 97.5), abs=0.0075)


def test_seed_groups_are_pooled(store):
    uri, _ = store
    table = runs_frame(uri, "seeds", baseline="lstm")
    masks = {(model, seed): correct for model, seed, correct, _ in SEED_RUNS}
    lstm = [masks["lstm", seed] for seed in (1, 2, 3)]
    gru = row(table, "gru")
    assert gru["runs"] == 3
    assert gru[DELTA] == pytest.approx(np.mean([masks["gru", s].mean() for s in (1, 2, 3)])
                                       - np.mean([m.mean() for m in lstm]))
    assert gru[DELTA] == pytest.approx(gru["accuracy/test"] - row(table, "lstm")["accuracy/test"])
    assert gru[LOW] < gru[DELTA] < gru[HIGH]
    # the same seeds in both groups: seed 1 against seed 1..., each discordant count averaged over the 3 pairs
    right_only = np.mean([(masks["gru", s] & ~masks["lstm", s]).sum() for s in (1, 2, 3)])
    wrong_only = np.mean([(~masks["gru", s] & masks["lstm", s]).sum() for s in (1, 2, 3)])
    assert gru[P_VALUE] == pytest.approx(binomtest(round(right_only), round(right_only) + round(wrong_only)).pvalue)
    cnn = row(table, "cnn_lstm")  # one run, seed 4: against each of the baseline's 3 runs
    right_only = np.mean([(masks["cnn_lstm", 4] & ~m).sum() for m in lstm])
    wrong_only = np.mean([(~masks["cnn_lstm", 4] & m).sum() for m in lstm])
    assert cnn[P_VALUE] == pytest.approx(binomtest(round(right_only), round(right_only) + round(wrong_only)).pvalue)
    assert cnn[DELTA] == pytest.approx(masks["cnn_lstm", 4].mean() - np.mean([m.mean() for m in lstm]))
    baseline = row(table, "lstm")
    assert (baseline[DELTA], baseline[LOW], baseline[HIGH], baseline[P_VALUE]) == (0, 0, 0, 1)


def test_a_run_without_predictions_gets_empty_cells_and_one_warning(store, caplog):
    uri, ids = store
    with caplog.at_level("WARNING", logger="seqlab"):
        table = runs_frame(uri, "seeds", baseline="gru")
    old = row(table, "fasttext_bigram")
    assert pd.notna(old["accuracy/test"]) and old[[DELTA, LOW, HIGH, P_VALUE]].isna().all()
    assert row(table, "lstm")[[DELTA, LOW, HIGH, P_VALUE]].notna().all()
    [warning] = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert ids["fasttext_bigram-1"][:8] in warning and PREDICTIONS_ARTIFACT in warning
    with pytest.raises(SeqlabError, match="has no predictions/test.csv"):  # as the baseline it gives nothing to pair
        runs_frame(uri, "seeds", baseline="fasttext_bigram")


def test_runs_on_other_test_examples_are_refused_naming_both(store):
    uri, ids = store
    with pytest.raises(SeqlabError) as refused:
        runs_frame(uri, "shifted", baseline="lstm")
    message = str(refused.value)
    assert ids["shifted"][:8] in message and "gru on another sample" in message
    assert ids["shifted-baseline"][:8] in message and "test sets differ" in message
    assert "1 ids in only one" not in message and "2 ids in only one of them" in message
    with pytest.raises(SeqlabError, match="5 of the 200 test examples have other true labels") as refused:
        runs_frame(uri, "relabelled", baseline="lstm")
    assert ids["relabelled"][:8] in str(refused.value)


def test_baselines_that_name_nothing_or_several_rows_are_errors(store):
    uri, _ = store
    with pytest.raises(SeqlabError, match="is no run id, run name or model of the 8 runs.*cnn_lstm, fasttext"):
        runs_frame(uri, "seeds", baseline="transformer")
    with pytest.raises(SeqlabError, match="ambiguous: it is the model of 3 rows"):
        runs_frame(uri, "seeds", baseline="lstm", per_run=True)  # one row per run: a model is no longer one row
    table = runs_frame(uri, "seeds", baseline="lstm seed=2", per_run=True)  # a run name picks one run
    assert table.loc[table["name"] == "lstm seed=2", P_VALUE].tolist() == [1]
    assert table.loc[table["name"] == "lstm seed=1", P_VALUE].tolist() != [1]


def test_command_line_shows_the_columns_in_every_format(store, capsys):
    uri, ids = store
    assert main(["--tracking-uri", uri, "--experiment", "pair", "--baseline", ids["baseline"][:8]]) == 0
    out = capsys.readouterr().out
    assert "Δ accuracy/test" in out and "p (McNemar)" in out and "+0.0000 [+0.0000, +0.0000]" in out
    assert main(["--tracking-uri", uri, "--experiment", "pair", "--baseline", "lstm", "--format", "markdown"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "| run | name | model | accuracy/test | Δ accuracy/test | p (McNemar) |"
    p_text = f"{binomtest(30, 40, 0.5).pvalue:.3g}"
    assert any(line.startswith("| ") and "| gru | 0.8000 | +0.1000 [+0." in line and line.endswith(f"| {p_text} |")
               for line in lines), lines
    assert main(["--tracking-uri", uri, "--experiment", "pair", "--baseline", "lstm", "--format", "csv"]) == 0
    frame = pd.read_csv(io.StringIO(capsys.readouterr().out)).set_index("model")
    assert [DELTA, LOW, HIGH, P_VALUE] == [c for c in frame.columns if c.startswith(("Δ", "p "))]
    assert frame.loc["gru", DELTA] == pytest.approx(0.1) and frame.loc["lstm", P_VALUE] == 1
    code = main(["--tracking-uri", uri, "--experiment", "shifted", "--baseline", "lstm"])
    assert code == 1 and "test sets differ" in capsys.readouterr().err
