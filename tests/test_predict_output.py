"""`seqlab predict --input/--output`: the input is never overwritten, an existing output only with --overwrite, ids
come back as the input wrote them (leading zeros, gaps, large integers, one thread per id whatever its spelling),
bad arguments stop before the model loads, and --output prints a one-line summary instead of every prediction."""

import json

import pandas as pd
import pytest

from seqlab.cli import predict as predict_command
from seqlab.serving import predict
from tests.conftest import run_seqlab


@pytest.fixture
def model(tiny_logged_model):
    """The tiny pos/neg model trained once per test process (tests/conftest.py): its runs:/ URI and store."""
    return tiny_logged_model.model_uri, tiny_logged_model.uri


def run_predict(model, *args):
    model_uri, store = model
    return predict_command.main([model_uri, *map(str, args), "--tracking-uri", store])


def write_csv(path, text):
    path.write_text(text, encoding="utf-8")
    return path


@pytest.mark.integration
def test_the_input_is_never_the_output(model, tmp_path, capsys, monkeypatch):
    """Whatever the spelling (relative, ./, a symlink), --output naming --input is refused and the input kept."""
    source = write_csv(tmp_path / "in.csv", "id,text\n00123,great film\n")
    before = source.read_bytes()
    (tmp_path / "link.csv").symlink_to(source)
    monkeypatch.chdir(tmp_path)
    for output in (source, "in.csv", "./in.csv", tmp_path / "link.csv"):
        code = run_predict(model, "--input", source, "--output", output, "--overwrite")
        assert code == 2 and source.read_bytes() == before, output
    assert "is the --input file" in capsys.readouterr().err


@pytest.mark.integration
def test_an_existing_output_is_replaced_only_with_overwrite(model, tmp_path, capsys):
    source = write_csv(tmp_path / "in.csv", "id,text\n1,great film\n2,awful film\n")
    output = write_csv(tmp_path / "out.csv", "someone's results\n")
    assert run_predict(model, "--input", source, "--output", output) == 2
    assert output.read_text() == "someone's results\n"
    error = capsys.readouterr().err
    assert f"--output '{output}' exists" in error and "--overwrite" in error
    assert run_predict(model, "--input", source, "--output", output, "--overwrite") == 0
    assert pd.read_csv(output, dtype=str)["id"].tolist() == ["1", "2"]
    assert not [p.name for p in tmp_path.iterdir() if p.name not in ("in.csv", "out.csv")]  # no temporary left


@pytest.mark.integration
def test_an_output_in_a_missing_folder_names_the_folder(model, tmp_path, capsys):
    output = tmp_path / "no" / "such" / "out.csv"
    assert run_predict(model, "--text", "great film", "--output", output) == 3
    error = capsys.readouterr().err
    assert f"folder '{tmp_path / 'no' / 'such'}' does not exist" in error and "None" not in error
    assert not (tmp_path / "no").exists()


@pytest.mark.integration
@pytest.mark.parametrize("value", ["-5", "0", "many", "1.5"])
def test_batch_size_must_be_a_positive_whole_number(model, value, capsys):
    with pytest.raises(SystemExit) as caught:
        run_predict(model, "--text", "great film", "--batch-size", value)
    assert caught.value.code == 2
    error = capsys.readouterr().err
    assert "--batch-size" in error and repr(value) in error and "at least 1" in error, error


@pytest.mark.unit
@pytest.mark.parametrize("suffix", [".csv", ".tsv", ".csv.gz", ".jsonl", ".parquet"])
def test_ids_come_back_as_written(tmp_path, suffix):
    """Leading zeros kept, a missing id stays empty (not 'nan'), an integer column with a gap gives no '7.0', and
    an integer too large for a float stays exact."""
    big = 12345678901234567891 if suffix == ".jsonl" else 1234567890123456789  # Parquet: int64
    texts = ["great film", "awful film", "dull story", "loved it"]
    if suffix == ".jsonl":
        rows = [{"id": 7, "text": texts[0]}, {"text": texts[1]}, {"id": big, "text": texts[2]},
                {"id": "00123", "text": texts[3]}]
        (tmp_path / "in.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
        expected = ["7", "", str(big), "00123"]
    elif suffix == ".parquet":
        pd.DataFrame({"id": pd.array([7, None, big, 123], dtype="Int64"), "text": texts}).to_parquet(
            tmp_path / "in.parquet")
        expected = ["7", "", str(big), "123"]
    else:
        sep = "\t" if suffix == ".tsv" else ","
        content = f"id{sep}text\n" + "".join(f"{i}{sep}{t}\n" for i, t in zip(["7", "", "00123", "1.50"], texts))
        if suffix == ".csv.gz":
            import gzip

            with gzip.open(tmp_path / "in.csv.gz", "wt", encoding="utf-8") as file:
                file.write(content)
        else:
            (tmp_path / f"in{suffix}").write_text(content, encoding="utf-8")
        expected = ["7", "", "00123", "1.50"]
    read_texts, ids = predict.read_inputs(str(tmp_path / f"in{suffix}"))
    assert ids == expected and read_texts == texts


@pytest.mark.unit
def test_a_thread_id_written_as_1_and_1_0_is_one_prediction(tmp_path):
    rows = [{"thread_id": 1, "text": "great"}, {"thread_id": "1", "text": "film"}, {"thread_id": 1.0, "text": "!"},
            {"thread_id": "007", "text": "awful"}, {"thread_id": "007", "text": "film"}]
    path = tmp_path / "threads.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    texts, ids = predict.read_inputs(str(path))
    assert ids == ["1", "007"] and texts == ["great\nfilm\n!", "awful\nfilm"]


@pytest.mark.slow
def test_predict_with_output_writes_the_file_and_prints_one_summary_line(model, tmp_path):
    """The one end-to-end `seqlab predict`: with --output, stdout stays empty and stderr holds one summary line;
    the file's ids join back to the input's."""
    source = write_csv(tmp_path / "in.csv", "id,text\n00123,great film\n,awful film\n7,loved it\n")
    output = tmp_path / "out.csv"
    result = run_seqlab("predict", model[0], "--input", source, "--output", output, "--tracking-uri", model[1],
                        env={"MLFLOW_TRACKING_URI": None})
    assert result.returncode == 0, result.stderr
    assert result.stdout == ""  # not a line per prediction
    summary = [line for line in result.stderr.splitlines() if line.startswith("seqlab: wrote")]
    assert len(summary) == 1 and f"wrote 3 predictions to {output}" in summary[0], result.stderr
    frame = pd.read_csv(output, dtype=str, keep_default_na=False)
    assert frame["id"].tolist() == ["00123", "", "7"] and set(frame["label"]) <= {"pos", "neg"}
