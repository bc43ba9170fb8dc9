"""One metadata reader for training, `seqlab predict` and the served model: an infinite metadata value (`inf`,
`-inf`, or a number beyond float32's range) is a missing one everywhere, NaN, which the model imputes with the
train statistics; text that is not a number stops with an error naming the input, the row and the column."""

import math

import mlflow
import numpy as np
import pandas as pd
import pytest

from seqlab.config.plan import data_part
from seqlab.data import load_dataset
from seqlab.errors import DataError
from seqlab.cli import predict as predict_command
from seqlab.serving import predict
from seqlab.workflow import train as train_module
from tests.conftest import TINY_NEGATIVE, TINY_POSITIVE, compose_config

# Ways a file writes an infinite or missing metadata value, each read as missing (NaN) by every reader.
NOT_FINITE = {"inf": "inf", "minus_inf": "-inf", "Infinity": "Infinity", "huge": "1e400", "beyond_float32": "1e39"}


def training_rows(count: int = 80) -> list[dict]:
    """Texts whose label the score also tells, with missing and infinite scores among them."""
    rows = []
    for i in range(count):
        positive = bool(i % 2)
        score = str(float(i % 7) + (5.0 if positive else 0.0))
        if i % 10 == 3:
            score = ""
        elif i % 10 == 7:
            score = "inf" if positive else "-inf"
        rows.append({"id": f"r{i}", "text": (TINY_POSITIVE if positive else TINY_NEGATIVE)[i % 4],
                     "label": "pos" if positive else "neg", "score": score})
    return rows


def write_csv(path, rows: list[dict]):
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


def metadata_config(path, *overrides):
    return compose_config(["dataset=custom", f"dataset.path={path}", "dataset.metadata_columns=[score]", *overrides])


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    """A tiny model.metadata=true model trained once on a CSV with a `score` column: its URI and store."""
    folder = tmp_path_factory.mktemp("metadata-model")
    path = write_csv(folder / "train.csv", training_rows())
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    train_module.train(metadata_config(path, "model=fasttext_bigram", "model.metadata=true", "debug=tiny",
                                       "preprocess.max_length=8", f"tracking.uri={uri}",
                                       "tracking.experiment=metadata-inputs", "trainer.checkpoint=false"))
    client = mlflow.MlflowClient(uri)
    [run] = client.search_runs([client.get_experiment_by_name("metadata-inputs").experiment_id])
    return f"runs:/{run.info.run_id}/model", uri


def input_rows() -> list[dict]:
    """One text with its score missing, then the same text with each way of writing an infinite value."""
    return [{"id": "missing", "text": "great film", "score": ""},
            *({"id": name, "text": "great film", "score": value} for name, value in NOT_FINITE.items())]


@pytest.mark.unit
def test_the_training_reader_reads_infinite_metadata_as_missing(tmp_path):
    data = load_dataset(data_part(metadata_config(write_csv(tmp_path / "train.csv", training_rows()))))
    ids = data.train.ids + data.validation.ids + data.test.ids
    metadata = np.concatenate([data.train.metadata, data.validation.metadata, data.test.metadata])[:, 0]
    scores = dict(zip(ids, metadata))
    for row in training_rows():
        if row["score"] in ("", "inf", "-inf"):
            assert math.isnan(scores[row["id"]]), row
        else:
            assert scores[row["id"]] == float(row["score"]), row


@pytest.mark.integration
def test_seqlab_predict_gives_an_infinite_value_the_probability_of_a_missing_one(model, tmp_path):
    model_uri, store = model
    source = write_csv(tmp_path / "in.csv", input_rows())
    # the metadata as seqlab predict reads them: NaN where missing or infinite, as training reads them
    _, _, frame = predict.read_examples(str(source))
    values = predict.read_metadata(frame, ["score"], str(source))
    assert values.dtype == np.float32 and np.isnan(values).all(), values[:, 0].tolist()
    output = tmp_path / "out.csv"
    assert predict_command.main([model_uri, "--input", str(source), "--output", str(output), "--tracking-uri", store]) == 0
    result = pd.read_csv(output, keep_default_na=False).set_index("id")
    assert np.isfinite(result["probability_pos"]).all(), result
    missing = result.loc["missing", "probability_pos"]
    for name in NOT_FINITE:
        assert result.loc[name, "probability_pos"] == pytest.approx(missing, abs=1e-6), name


@pytest.mark.integration
def test_the_served_model_gives_an_infinite_value_the_probability_of_a_missing_one(model):
    model_uri, store = model
    mlflow.set_tracking_uri(store)
    served = mlflow.pyfunc.load_model(model_uri)
    frame = pd.DataFrame({"text": ["great film"] * 5, "score": [np.nan, np.inf, -np.inf, 1e39, 1e300]})
    result = served.predict(frame)
    assert np.isfinite(result["probability_pos"]).all(), result
    assert result["probability_pos"].tolist() == pytest.approx([result["probability_pos"].iloc[0]] * 5, abs=1e-6)


@pytest.mark.unit
def test_every_reader_reads_a_cell_by_one_rule():
    """Numbers, and numbers written as text (a CSV, a JSON request), read alike by training, predict and serving:
    'nan', 'inf' and overflowing values are missing (NaN)."""
    from seqlab.serving.pyfunc import TextClassifier

    cells = [None, "nan", "inf", "-inf", "1e39", np.inf, -np.inf, 1e300, "2.5", " 3 ", 4, 5.5, True]
    expected = [np.nan] * 8 + [2.5, 3.0, 4.0, 5.5, 1.0]
    frame = pd.DataFrame({"text": ["t"] * len(cells), "score": cells}, dtype=object)
    served = TextClassifier(["neg", "pos"], metadata_columns=["score"]).read_input(frame)[1]
    predicted = predict.read_metadata(frame, ["score"], "x.csv")
    for values in (served, predicted):
        assert values.dtype == np.float32 and values.shape == (len(cells), 1)
        np.testing.assert_array_equal(values[:, 0], np.asarray(expected, np.float32))


@pytest.mark.unit
def test_text_that_is_not_a_number_names_the_row_and_column(tmp_path):
    rows = training_rows()
    rows[5]["score"] = "lots"
    path = write_csv(tmp_path / "bad.csv", rows)
    with pytest.raises(DataError, match=r"'.*bad\.csv' row 6: metadata column 'score' holds 'lots', not a number"):
        load_dataset(data_part(metadata_config(path)))
    frame = pd.DataFrame({"text": ["a", "b"], "score": ["1.5", "lots"]})
    with pytest.raises(DataError, match=r"Row 2 of --input 'x.csv': metadata column 'score' holds 'lots', not a "
                                        "number"):
        predict.read_metadata(frame, ["score"], "x.csv")
