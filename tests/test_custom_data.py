"""dataset=custom on small files the tests write: flat texts, threads (a message list per row, or one row per
message), metadata, test files, column detection, and every kind of bad input ending in one clear error."""

import gzip
import json

import numpy as np
import pandas as pd
import pytest

from seqlab.config.validate import validate
from seqlab.data import load_dataset
from seqlab.errors import ConfigError, DataError
from seqlab.config.plan import data_part
from tests.conftest import compose_config

pytestmark = pytest.mark.unit

TOPICS = {"food": ["I love this pasta", "the pizza was great", "more cheese please", "what a tasty soup"],
          "travel": ["our flight was late", "the hotel is by the beach", "we took the train", "pack your bags"]}


def threads(count=20):
    """`count` two-speaker threads, alternating topics, with one numeric metadata field (some missing)."""
    rows = []
    for i in range(count):
        label = "food" if i % 2 == 0 else "travel"
        lines = TOPICS[label][i % 4:] + TOPICS[label][: i % 4]
        rows.append({"thread_id": f"t{i}", "label": label, "score": None if i % 5 == 0 else float(i),
                     "messages": [{"speaker": "AB"[k % 2], "text": line} for k, line in enumerate(lines[:3])]})
    return rows


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def load(path, *overrides):
    return load_dataset(data_part(compose_config(["dataset=custom", f"dataset.path={path}", "dataset.validation_split=0.25",
                                        *overrides])))


def test_jsonl_threads_with_metadata(tmp_path, caplog):
    caplog.set_level("INFO", logger="seqlab")
    data = load(write_jsonl(tmp_path / "threads.jsonl", threads()), "dataset.metadata_columns=[score]")
    assert data.class_names == ["food", "travel"]
    assert len(data.train) + len(data.validation) + len(data.test) == 20 and len(data.test) == 4
    assert np.bincount(data.test.labels).tolist() == [2, 2]  # stratified
    every = data.train.texts + data.validation.texts + data.test.texts
    ids = data.train.ids + data.validation.ids + data.test.ids
    text = every[ids.index("t1")]
    assert text == "the hotel is by the beach\nwe took the train\npack your bags"  # messages joined by "\n"
    assert data.metadata_names == ["score"] and data.train.metadata.shape == (len(data.train), 1)
    assert np.isnan(np.concatenate([data.train.metadata, data.validation.metadata, data.test.metadata])).sum() == 4
    assert "threads from the message lists in 'messages', labels from 'label'" in caplog.text


def test_one_row_per_message_csv_groups_threads_in_file_order(tmp_path):
    rows = [{"thread_id": row["thread_id"], "speaker": m["speaker"], "text": m["text"], "label": row["label"],
             "score": row["score"]} for row in threads() for m in row["messages"]]
    pd.DataFrame(rows).to_csv(tmp_path / "messages.csv", index=False)
    data = load(tmp_path / "messages.csv", "dataset.metadata_columns=[score]", "preprocess.speaker_tokens=true")
    assert len(data.train) + len(data.validation) + len(data.test) == 20
    every = dict(zip(data.train.ids + data.validation.ids + data.test.ids,
                     data.train.texts + data.validation.texts + data.test.texts))
    assert every["t1"] == "xxspka the hotel is by the beach\nxxspkb we took the train\nxxspka pack your bags"
    metadata = dict(zip(data.train.ids + data.validation.ids + data.test.ids,
                        np.concatenate([data.train.metadata, data.validation.metadata, data.test.metadata])[:, 0]))
    assert metadata["t3"] == 3.0 and np.isnan(metadata["t5"])
    with pytest.raises(DataError, match=r"no column 'who' \(dataset.speaker_column\).*'thread_id', 'speaker'"):
        load(tmp_path / "messages.csv", "dataset.speaker_column=who")


def test_flat_text_parquet_with_a_test_file_and_named_columns(tmp_path):
    train = pd.DataFrame({"body": ["good film", "bad film", "great acting", "awful plot"] * 3,
                          "stars": [5, 1, 5, 1] * 3})
    test = pd.DataFrame({"body": ["good", "bad"], "stars": [5, 1]})
    train.to_parquet(tmp_path / "train.parquet")
    test.to_parquet(tmp_path / "test.parquet")
    data = load(tmp_path / "train.parquet", f"dataset.test_path={tmp_path / 'test.parquet'}",
                "dataset.text_column=body", "dataset.label_column=stars")
    assert data.class_names == ["1", "5"] and data.test.texts == ["good", "bad"]
    assert data.test.labels.tolist() == [1, 0] and len(data.train) + len(data.validation) == 12


def test_numeric_labels_sort_as_numbers_and_gzip_is_read(tmp_path):
    rows = [{"text": f"review {i}", "label": [2, 10, 1][i % 3]} for i in range(30)]
    with gzip.open(tmp_path / "reviews.jsonl.gz", "wt", encoding="utf-8") as file:
        file.writelines(json.dumps(row) + "\n" for row in rows)
    assert load(tmp_path / "reviews.jsonl.gz").class_names == ["1", "2", "10"]


def test_latin1_file_needs_dataset_encoding(tmp_path):
    path = tmp_path / "old.csv"
    path.write_bytes("text,label\ncaf\xe9 au lait,pos\nsoupe froide,neg\n".encode("latin-1") * 1 +
                     "".join(f"film {i},{'pos' if i % 2 else 'neg'}\n" for i in range(20)).encode("latin-1"))
    with pytest.raises(DataError, match=r"not valid utf-8 .*dataset\.encoding"):
        load(path)
    data = load(path, "dataset.encoding=latin-1")
    assert "café au lait" in data.train.texts + data.validation.texts + data.test.texts
    with pytest.raises(ConfigError, match="dataset.encoding"):
        load(path, "dataset.encoding=klingon")


def test_malformed_jsonl_lines_stop_with_the_line_number_or_are_skipped(tmp_path, caplog):
    path = tmp_path / "bad.jsonl"
    lines = [json.dumps(row) for row in threads()]
    lines[3] = '{"thread_id": "t3", "label": "travel", "messages": ['  # cut off
    lines[7] = '["a list", "not an object"]'
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"line 4 is not valid JSON.*on_bad_lines=skip"):
        load(path)
    data = load(path, "dataset.on_bad_lines=skip")
    assert len(data.train) + len(data.validation) + len(data.test) == 18
    assert "skipped 2 malformed line(s)" in caplog.text


def test_csv_line_with_too_many_fields(tmp_path, caplog):
    path = tmp_path / "bad.csv"
    path.write_text("text,label\n" + "".join(f"film {i},{'pos' if i % 2 else 'neg'}\n" for i in range(20)) +
                    "one,two,three\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"could not be read as CSV .*line 22"):
        load(path)
    assert len(load(path, "dataset.on_bad_lines=skip").test) == 4
    assert "skipped 1 CSV line" in caplog.text


def test_threads_without_messages_empty_texts_and_missing_labels(tmp_path):
    rows = threads()
    rows[2]["messages"] = []
    rows[4]["messages"] = [{"speaker": "A", "text": "   "}]
    rows[6]["label"] = None
    path = write_jsonl(tmp_path / "threads.jsonl", rows)
    with pytest.raises(DataError, match=r"line 3 holds a thread with no messages \(3 bad record\(s\)"):
        load(path)
    kept = load(path, "dataset.on_bad_lines=skip")
    assert len(kept.train) + len(kept.validation) + len(kept.test) == 17
    flat = tmp_path / "flat.csv"
    flat.write_text("text,label\n" + "".join(f"film {i},{'pos' if i % 2 else 'neg'}\n" for i in range(20)) +
                    ",pos\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"row 21 holds an empty text"):
        load(flat)


def test_missing_columns_list_the_columns_found(tmp_path):
    path = tmp_path / "x.csv"
    pd.DataFrame({"review": ["a", "b"], "sentiment": ["pos", "neg"]}).to_csv(path, index=False)
    with pytest.raises(DataError, match=r"no text column.*its columns are 'review', 'sentiment'"):
        load(path)
    with pytest.raises(DataError, match=r"no label column 'label'.*'review', 'sentiment'.*dataset.label_column"):
        load(path, "dataset.text_column=review")
    with pytest.raises(DataError, match=r"no metadata column 'age'"):
        load(path, "dataset.text_column=review", "dataset.label_column=sentiment", "dataset.metadata_columns=[age]")
    with pytest.raises(ConfigError, match=r"label column 'sentiment'.*never an input"):
        load(path, "dataset.text_column=review", "dataset.label_column=sentiment",
             "dataset.metadata_columns=[sentiment]")


def test_label_in_test_unseen_in_train_and_a_single_class(tmp_path):
    train = write_jsonl(tmp_path / "train.jsonl", threads())
    test = write_jsonl(tmp_path / "test.jsonl", [{**threads(1)[0], "label": "sports"}])
    with pytest.raises(DataError, match=r"label 'sports', which the training data never shows"):
        load(train, f"dataset.test_path={test}")
    one_class = write_jsonl(tmp_path / "one.jsonl", [{**row, "label": "food"} for row in threads()])
    with pytest.raises(DataError, match=r"only one class \('food'\)"):
        load(one_class)


def test_missing_empty_and_unknown_files(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        load(tmp_path / "nope.csv")
    (tmp_path / "empty.jsonl").write_text("\n\n", encoding="utf-8")
    with pytest.raises(DataError, match="is empty"):
        load(tmp_path / "empty.jsonl")
    (tmp_path / "empty.csv").write_text("", encoding="utf-8")
    with pytest.raises(DataError, match="is empty"):
        load(tmp_path / "empty.csv")
    (tmp_path / "data.xlsx").write_text("x", encoding="utf-8")
    with pytest.raises(DataError, match="unknown suffix"):
        load(tmp_path / "data.xlsx")
    (tmp_path / "fake.parquet").write_text("not parquet", encoding="utf-8")
    with pytest.raises(DataError, match="could not be read as Parquet"):
        load(tmp_path / "fake.parquet")
    with pytest.raises(ConfigError, match="dataset.path=FILE"):
        load_dataset(data_part(compose_config(["dataset=custom"])))


def test_metadata_needs_a_dataset_with_metadata_columns():
    with pytest.raises(ConfigError, match=r"'model.metadata' is true, but dataset 'imdb' has no metadata"):
        validate(compose_config(["model.metadata=true"]))
    validate(compose_config(["dataset=persuasion", "model.metadata=true"]))


# --- one rule for labels and thread ids, whatever the format -------------------------------------------------

SPELLINGS = ["1", "1.0", "01", "1.5", "1.50", "2", "+2", "2e0"]  # three numbers, each written several ways
AS_JSON = [1, 1.0, "01", 1.5, "1.50", 2, "+2", 2.0]  # the same numbers as a JSON writer might give them


def write_table(path, frame):
    suffixes = "".join(path.suffixes)
    if suffixes.startswith(".jsonl"):
        with (gzip.open(path, "wt", encoding="utf-8") if suffixes.endswith(".gz") else open(path, "w")) as file:
            file.writelines(json.dumps(row) + "\n" for row in frame.to_dict("records"))
    elif suffixes == ".parquet":
        frame.to_parquet(path)
    else:
        frame.to_csv(path, index=False, sep="\t" if ".tsv" in suffixes else ",")
    return path


@pytest.mark.parametrize("name", ["labels.csv", "labels.tsv", "labels.csv.gz", "labels.jsonl", "labels.jsonl.gz",
                                  "labels.parquet", "floats.parquet"])
def test_numeric_labels_are_one_class_per_number_in_every_format(tmp_path, caplog, name):
    """'1', '1.0', '01' (and JSON 1, 1.0) are the number 1: one class, named by its shortest spelling, with a warning
    that lists the spellings merged."""
    values = {"labels.jsonl": AS_JSON, "labels.jsonl.gz": AS_JSON,
              "floats.parquet": [1.0, 1.0, 1.0, 1.5, 1.5, 2.0, 2.0, 2.0]}.get(name, SPELLINGS)
    frame = pd.DataFrame({"text": [f"text number {i}" for i in range(48)], "label": values * 6})
    data = load(write_table(tmp_path / name, frame))
    assert data.class_names == ["1", "1.5", "2"]
    counts = np.bincount(np.concatenate([data.train.labels, data.validation.labels, data.test.labels]))
    assert counts.tolist() == [18, 12, 18]
    if name != "floats.parquet":  # a float column holds one spelling per number
        warning = next(r for r in caplog.records if r.levelname == "WARNING" and "spelling" in r.getMessage())
        assert warning.name == "seqlab.data.labels" and "'1', '1.0', '01'" in warning.getMessage().replace(
            "'01', '1', '1.0'", "'1', '1.0', '01'")


def test_text_labels_stay_as_written(tmp_path, caplog):
    frame = pd.DataFrame({"text": [f"text {i}" for i in range(20)], "label": ["Pos", "pos", " neg", "1a", "a1"] * 4})
    assert load(write_table(tmp_path / "x.csv", frame)).class_names == ["1a", "Pos", "a1", "neg", "pos"]
    assert "spelling" not in caplog.text


@pytest.mark.parametrize("suffix", [".jsonl", ".csv", ".parquet"])
def test_a_thread_id_written_as_1_and_1_0_is_one_thread(tmp_path, caplog, suffix):
    """Thread ids are grouped by the same rule as labels: JSON 1, "1" and 1.0 (CSV 1, 1.0, 01) are one thread, named
    as its first row writes it; text ids are compared as written."""
    ids = [1, "1", 1.0] if suffix == ".jsonl" else ["1", "1.0", "01"]
    if suffix == ".parquet":
        ids = ["1", "1", "1"]  # a column has one type: the ints of a float column are the case below
    rows = [{"thread_id": ids[k], "text": f"first thread message {k}", "label": "a"} for k in range(3)]
    for thread in range(2, 13):
        rows += [{"thread_id": f"t{thread}", "text": f"message {k} of {thread}", "label": "ab"[thread % 2]}
                 for k in range(2)]
    frame = pd.DataFrame(rows)
    data = load(write_table(tmp_path / f"threads{suffix}", frame))
    ids = data.train.ids + data.validation.ids + data.test.ids
    texts = dict(zip(ids, data.train.texts + data.validation.texts + data.test.texts))
    assert len(ids) == 12 and "1" in texts
    assert texts["1"] == "first thread message 0\nfirst thread message 1\nfirst thread message 2"
    if suffix != ".parquet":
        assert "thread" in caplog.text and "spelling" in caplog.text


def test_float_thread_ids_of_a_column_with_missing_values_keep_their_integer_names(tmp_path):
    """A Parquet/JSONL integer id column with a gap is no reason for ids like '7.0'."""
    rows = [{"id": None if i == 3 else i, "text": f"text {i}", "label": "ab"[i % 2]} for i in range(20)]
    for name in ("x.jsonl", "x.parquet"):
        frame = pd.DataFrame(rows).astype({"id": "Int64"})
        data = load(write_table(tmp_path / name, frame))
        ids = set(data.train.ids + data.validation.ids + data.test.ids)
        assert ids == {str(i) for i in range(20) if i != 3} | {""}, name


# --- the test split: fixed across trainer.seed, drawn with dataset.split_seed ---------------------------------

def test_the_test_split_follows_split_seed_not_trainer_seed(tmp_path, caplog):
    caplog.set_level("INFO", logger="seqlab")
    path = tmp_path / "x.csv"
    pd.DataFrame({"text": [f"text {i}" for i in range(60)], "label": ["a", "b"] * 30}).to_csv(path, index=False)
    tests = {(seed, split): tuple(load(path, f"trainer.seed={seed}", f"dataset.split_seed={split}").test.texts)
             for seed in (1, 2) for split in (0, 7)}
    assert tests[1, 0] == tests[2, 0] and tests[1, 7] == tests[2, 7]  # trainer.seed leaves the test split alone
    assert tests[1, 0] != tests[1, 7]  # a new split_seed draws another
    assert tests[1, 0] == tuple(load(path).test.texts)  # split_seed=0 by default
    assert "dataset.split_seed=7" in caplog.text  # the draw is said, and logged with the run's params


# --- broken gzip ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["x.csv.gz", "x.tsv.gz", "x.jsonl.gz"])
@pytest.mark.parametrize("damage", ["truncated", "corrupt"])
def test_a_truncated_or_corrupt_gzip_file_is_named_so(tmp_path, name, damage):
    path = tmp_path / name
    frame = pd.DataFrame({"text": [f"some text number {i} " * 20 for i in range(400)], "label": ["a", "b"] * 200})
    write_table(path, frame)
    content = path.read_bytes()
    if damage == "truncated":
        content = content[:len(content) // 2]
    else:  # flipped bytes in the middle of the compressed stream
        middle = len(content) // 2
        content = content[:middle] + bytes(b ^ 0xFF for b in content[middle:middle + 64]) + content[middle + 64:]
    path.write_bytes(content)
    for skip in ("error", "skip"):
        with pytest.raises(DataError) as caught:
            load(path, f"dataset.on_bad_lines={skip}")
        message = str(caught.value)
        assert str(path) in message and "gzip" in message and "on_bad_lines" not in message, message
        assert ("truncated" if damage == "truncated" else "corrupt") in message, message
