"""`seqlab compare`: the params that differ, seeds averaged with their spread, --sweep, the three formats.

The store is written here through MLflow's client, with the params, tags and metrics `seqlab train`
records (tests/test_sweeps.py compares runs that real sweeps made)."""

import io
import statistics

import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from seqlab.analysis.compare import runs_frame
from seqlab.cli.compare import main
from tests.conftest import run_seqlab

BASE = {"model.name": "lstm", "model.units": "100", "trainer.epochs": "2", "trainer.seed": "42",
        "tracking.uri": "sqlite:///mlflow.db", "tracking.run_name": "null", "data_dir": "data"}
# (sweep, model.units, seed, test_accuracy); the seed runs of a sweep differ only in trainer.seed
RUNS = [("seeds", "100", "1", 0.80), ("seeds", "100", "2", 0.84), ("seeds", "100", "3", 0.86),
        ("seeds", "50", "1", 0.78), ("seeds", "50", "2", 0.74), ("seeds", "50", "3", 0.79),
        ("other", "25", "1", 0.70)]
LEGACY_NAMES = {"accuracy/test": "test_accuracy", "loss/test": "test_loss", "accuracy/val": "val_accuracy",
                "time/epochs": "epochs", "time/train_seconds": "train_seconds"}


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> str:
    tmp_path = tmp_path_factory.mktemp("compare")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    experiment = client.create_experiment("imdb", artifact_location=(tmp_path / "artifacts").as_uri())
    parents = {}
    for sweep in ("seeds", "other"):
        parent = client.create_run(experiment, run_name=sweep, tags={"sweep": sweep, "sweep.role": "parent"})
        client.set_terminated(parent.info.run_id, "FINISHED")
        parents[sweep] = parent.info.run_id
    for number, (sweep, units, seed, accuracy) in enumerate(RUNS):
        run = client.create_run(experiment, run_name=f"{sweep}-{number}", tags={
            "sweep": sweep, "sweep.role": "child", "mlflow.parentRunId": parents[sweep]})
        run_id = run.info.run_id
        params = {**BASE, "model.units": units, "trainer.seed": seed, "tracking.run_name": f"{sweep}-{number}"}
        for key, value in params.items():
            client.log_param(run_id, key, value)
        metrics = {"accuracy/test": accuracy, "loss/test": 1 - accuracy, "accuracy/val": accuracy + 0.01,
                   "time/epochs": 2, "time/train_seconds": 10.0 + number}
        if sweep == "other":  # a run of seqlab 0.1: test_accuracy, val_accuracy, epochs...
            metrics = {LEGACY_NAMES[key]: value for key, value in metrics.items()}
        for key, value in metrics.items():
            client.log_metric(run_id, key, value)
        client.set_terminated(run_id, "FINISHED")
    unfinished = client.create_run(experiment, run_name="crashed")
    client.log_param(unfinished.info.run_id, "model.name", "gru")
    client.set_terminated(unfinished.info.run_id, "FAILED")
    return uri


@pytest.mark.unit
def test_seed_runs_become_one_row_with_mean_and_spread(store):
    table = runs_frame(store, "imdb", sweep="seeds")
    assert list(table["model.units"]) == ["100", "50"]  # best mean first
    assert "trainer.seed" not in table and "time/epochs" in table and "tracking.run_name" not in table
    row = table.iloc[0]
    assert row["runs"] == 3 and row["seeds"] == "1 2 3"
    assert row["accuracy/test"] == pytest.approx(statistics.mean([0.80, 0.84, 0.86]))
    assert row["accuracy/test_std"] == pytest.approx(statistics.stdev([0.80, 0.84, 0.86]))
    assert row["time/epoch_seconds"] == pytest.approx(statistics.mean([10 / 2, 11 / 2, 12 / 2]))


@pytest.mark.unit
def test_per_run_and_whole_experiment(store):
    table = runs_frame(store, "imdb", sweep="seeds", per_run=True)
    assert len(table) == 6 and list(table["accuracy/test"]) == sorted(table["accuracy/test"], reverse=True)
    assert {"run", "name", "trainer.seed", "model.units"} <= set(table.columns)
    everything = runs_frame(store, "imdb")  # parents are never rows; the FAILED run only with --all
    assert everything["runs"].sum() == 7 and "gru" not in set(everything["model"])
    old = everything.set_index("model.units").loc["25"]  # the older run's metrics are read under today's names
    assert old["accuracy/test"] == 0.70 and old["time/epoch_seconds"] == pytest.approx(16 / 2)
    assert [c for c in everything.columns if "_" in c and "/" not in c and not c.endswith("_std")] == []
    assert "FAILED" in set(runs_frame(store, "imdb", finished_only=False, per_run=True)["status"])
    by_loss = runs_frame(store, "imdb", metric="test_loss")  # the old name asks for loss/test
    assert list(by_loss["loss/test"]) == sorted(by_loss["loss/test"])  # a loss sorts lowest first


def compare(capsys, store, *args):
    code = main(["--tracking-uri", store, *args])
    output = capsys.readouterr()
    return code, output.out, output.err


@pytest.mark.unit
def test_formats(store, capsys):
    code, out, err = compare(capsys, store, "--sweep", "seeds", "--format", "csv")
    assert code == 0, err
    frame = pd.read_csv(io.StringIO(out))
    assert list(frame["model.units"]) == [100, 50] and "accuracy/test_std" in frame
    markdown = compare(capsys, store, "--sweep", "seeds", "--format", "markdown")[1].splitlines()
    assert markdown[0].startswith("| model | model.units | runs | seeds | accuracy/test |")
    assert "| lstm | 100 | 3 | 1 2 3 | 0.8333 ± 0.0306 |" in markdown[2]


@pytest.mark.slow
def test_command_line_table(store):
    result = run_seqlab("compare", "--tracking-uri", store, "--experiment", "imdb", "--sweep", "seeds", timeout=120)
    assert result.returncode == 0, result.stderr
    assert "0.8333 ± 0.0306" in result.stdout and "model.units" in result.stdout and "sweep 'seeds'" in result.stdout


@pytest.mark.unit
def test_unknown_sweep_or_experiment_names_the_known_ones(store, capsys):
    code, _, err = compare(capsys, store, "--sweep", "nope")
    assert code == 1 and "sweeps there: other, seeds" in err
    code, _, err = compare(capsys, store, "--experiment", "nope")
    assert code == 1 and "experiments there:" in err and "imdb" in err
    code, _, err = compare(capsys, store, "--metric", "test_bleu")
    assert code == 1 and "accuracy/test" in err


@pytest.mark.unit
def test_params_a_model_does_not_have_are_blank_and_do_not_make_a_column(tmp_path):
    """bilstm and hier_conv runs of a threads comparison: each run logs its own options' keys only (kernel_size and
    max_units are hier_conv's and preprocess=hierarchical's, units bilstm's)."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    experiment = client.create_experiment("threads", artifact_location=(tmp_path / "artifacts").as_uri())
    runs = [("bilstm", "words", "64", "5", "16", "False", 0.60), ("bilstm", "words", "64", "5", "16", "True", 0.61),
            ("hier_conv", "hierarchical", "64", "3", "48", "False", 0.55),
            ("hier_conv", "hierarchical", "64", "3", "48", "True", 0.58)]
    for model, preprocess, units, kernel_size, max_units, metadata, accuracy in runs:
        run_id = client.create_run(experiment).info.run_id  # the last is a hier_conv run with kernel_size 3
        own = ({"model.units": units} if model == "bilstm" else
               {"model.kernel_size": kernel_size, "preprocess.max_units": max_units})
        for key, value in {"model.name": model, **own, "model.metadata": metadata, "preprocess.name": preprocess,
                           "trainer.seed": "42"}.items():
            client.log_param(run_id, key, value)
        client.log_metric(run_id, "accuracy/test", accuracy)
        client.set_terminated(run_id, "FINISHED")
    table = runs_frame(uri, "threads").set_index(["model", "model.metadata"])
    # kernel_size and max_units differ only where they do not apply; units is the same wherever it applies
    assert "model.kernel_size" not in table and "preprocess.max_units" not in table and "model.units" not in table
    assert set(table.index) == {("bilstm", "False"), ("bilstm", "True"), ("hier_conv", "False"), ("hier_conv", "True")}
    other = client.create_run(experiment).info.run_id  # a hier_conv run with another kernel size
    for key, value in {"model.name": "hier_conv", "model.kernel_size": "5", "model.metadata": "False", "preprocess.name": "hierarchical", "preprocess.max_units": "48",
                       "trainer.seed": "42"}.items():
        client.log_param(other, key, value)
    client.log_metric(other, "accuracy/test", 0.5)
    client.set_terminated(other, "FINISHED")
    table = runs_frame(uri, "threads", per_run=True)
    kernel = dict(zip(table["run"], table["model.kernel_size"]))
    assert kernel[other[:8]] == "5" and kernel[run_id[:8]] == "3"
    assert all(pd.isna(size) for model, size in zip(table["model"], table["model.kernel_size"]) if model == "bilstm")
