"""Property-based tests (hypothesis): whatever bytes or records the user's file holds, loading ends in a
clean DataError/ConfigError or a valid dataset, never a traceback; hierarchical preprocessing turns any
text into a valid batch."""

import csv
import gzip
import io
import json
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from omegaconf import OmegaConf

from seqlab.data import load_dataset
from seqlab.data.texts import thread_text
from seqlab.errors import ConfigError, DataError
from seqlab.features.preprocess import HierarchicalPreprocessor, WordPreprocessor
from seqlab.config.plan import data_part
from tests.conftest import compose_config

pytestmark = pytest.mark.unit

SETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
BASE = compose_config(["dataset=custom", "dataset.path=unused", "dataset.validation_split=0.25"])


def load_or_clean_error(content: bytes, suffix: str, *overrides: str):
    """Load `content` as a dataset=custom file: a valid dataset, or None after a one-paragraph seqlab error."""
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / f"data.{suffix}"
        path.write_bytes(content)
        cfg = OmegaConf.merge(BASE, OmegaConf.from_dotlist([f"dataset.path={path}", *overrides]))
        try:
            data = load_dataset(data_part(cfg))
        except (DataError, ConfigError) as error:
            assert_one_paragraph(error)
            return None
    for split in (data.train, data.validation, data.test):
        assert len(split) > 0 and all(isinstance(t, str) and t.strip() for t in split.texts)
        assert split.labels.dtype == np.int64 and 0 <= split.labels.min() and split.labels.max() < data.num_classes
        if data.metadata_names:
            assert split.metadata.shape == (len(split), len(data.metadata_names))
            assert split.metadata.dtype == np.float32 and not np.isinf(split.metadata).any()
    assert data.num_classes >= 2 and len(set(data.class_names)) == data.num_classes
    return data


def assert_one_paragraph(error) -> None:
    """What `seqlab train` prints of it is one line, `seqlab: error: <message>` (seqlab.errors.report_error), and
    exits with the error's code: so the message is one complete sentence or more on one line, with none of the
    multi-line text the readers underneath raise (pandas' and pyarrow's errors, tracebacks) pasted in."""
    message = str(error)
    assert message and message == message.strip() and "\n" not in message and "\r" not in message, repr(message)
    assert message.endswith("."), repr(message)
    assert error.exit_code == (2 if isinstance(error, ConfigError) else 3)


VALID = "".join(json.dumps({"messages": [f"message {i}", {"text": "a reply", "speaker": "B"}], "label": "ab"[i % 2],
                            "score": i}) + "\n" for i in range(24)).encode()


@SETTINGS
@given(content=st.binary(max_size=600), suffix=st.sampled_from(["jsonl", "csv", "tsv", "parquet", "jsonl.gz",
                                                                "csv.gz"]),
       skip=st.booleans())
def test_any_bytes_load_or_fail_cleanly(content, suffix, skip):
    load_or_clean_error(content, suffix, f"dataset.on_bad_lines={'skip' if skip else 'error'}")


@SETTINGS
@given(position=st.integers(0, len(VALID)), inserted=st.binary(min_size=1, max_size=40), cut=st.integers(0, 20),
       skip=st.booleans())
def test_a_valid_file_with_bytes_inserted_or_cut_loads_or_fails_cleanly(position, inserted, cut, skip):
    content = VALID[:position] + inserted + VALID[position + cut:]
    load_or_clean_error(content, "jsonl", f"dataset.on_bad_lines={'skip' if skip else 'error'}",
                        "dataset.metadata_columns=[score]")


json_values = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=12),
                           lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner,
                                                                                       max_size=3),
                           max_leaves=6)
words = st.text(st.sampled_from("abcdé日 .!\n\t"), min_size=1, max_size=15)
messages = st.lists(st.one_of(words, st.fixed_dictionaries(
    {}, optional={"text": st.one_of(words, json_values), "speaker": st.one_of(st.sampled_from("AB"), json_values)})),
    max_size=4)
good_records = st.fixed_dictionaries({"messages": messages, "label": st.sampled_from(["a", "b"])},
                                     optional={"score": st.one_of(st.none(), st.floats(), st.integers())})
records = st.fixed_dictionaries({}, optional={"messages": st.one_of(messages, json_values),
                                              "label": st.one_of(st.sampled_from(["a", "b", 1, 2.0]), json_values),
                                              "text": st.one_of(words, json_values), "thread_id": json_values,
                                              "score": json_values})
lines = st.one_of(good_records.map(json.dumps), good_records.map(json.dumps), good_records.map(json.dumps),
                  records.map(json.dumps), st.text(max_size=30))


@SETTINGS
@given(rows=st.lists(lines, min_size=1, max_size=40), skip=st.booleans(), metadata=st.booleans())
def test_malformed_jsonl_records_load_or_fail_cleanly(rows, skip, metadata):
    content = "\n".join(rows).encode("utf-8", errors="surrogatepass")
    overrides = [f"dataset.on_bad_lines={'skip' if skip else 'error'}"]
    if metadata:
        overrides.append("dataset.metadata_columns=[score]")
    load_or_clean_error(content, "jsonl", *overrides)


cells = st.one_of(words, st.sampled_from(["a", "b", "1", "2.5", "", "nan"]), st.text(max_size=10))
# (header, row strategy): one text per row, one message per row, or anything
CSV_LAYOUTS = {
    "texts": (["text", "label"], st.tuples(words, st.sampled_from(["a", "b", ""])).map(list)),
    "messages": (["thread_id", "speaker", "text", "label", "score"],
                 st.tuples(st.sampled_from(["t1", "t2", "t3", "t4", "t5", "t6"]), st.sampled_from("AB"), words,
                           st.sampled_from(["a", "b"]), st.sampled_from(["1", "2.5", "", "x"])).map(list)),
}


@SETTINGS
@given(data=st.data(), layout=st.sampled_from(["texts", "messages", "anything"]),
       encoding=st.sampled_from(["utf-8", "latin-1"]), skip=st.booleans())
def test_csv_tables_load_or_fail_cleanly(data, layout, encoding, skip):
    if layout == "anything":
        header = data.draw(st.lists(st.sampled_from(["text", "label", "thread_id", "speaker", "score", "other"]),
                                    min_size=1, max_size=5))
        rows = data.draw(st.lists(st.lists(cells, max_size=6), max_size=30))
    else:
        header, row = CSV_LAYOUTS[layout]
        rows = data.draw(st.lists(st.one_of(row, row, row, st.lists(cells, max_size=6)), max_size=40))
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(header)
    writer.writerows(rows)
    content = buffer.getvalue().encode(encoding, errors="replace")
    metadata = "[score]" if "score" in header else "null"
    load_or_clean_error(content, "csv", f"dataset.on_bad_lines={'skip' if skip else 'error'}",
                        f"dataset.metadata_columns={metadata}", f"dataset.encoding={encoding}")


def test_a_valid_jsonl_file_loads(tmp_path):
    """The generators above do reach valid datasets: the same checks on a file known to be valid."""
    data = load_or_clean_error(VALID, "jsonl", "dataset.metadata_columns=[score]")
    assert data is not None and data.num_classes == 2
    with gzip.open(tmp_path / "x.jsonl.gz", "wb") as file:
        file.write(VALID)
    assert load_or_clean_error((tmp_path / "x.jsonl.gz").read_bytes(), "jsonl.gz") is not None


@SETTINGS
@given(value=json_values, speaker_tokens=st.booleans())
def test_thread_text_gives_a_string_or_a_type_error(value, speaker_tokens):
    try:
        text = thread_text(value, speaker_tokens)
    except TypeError:
        assert not isinstance(value, (list, str))
    else:
        assert isinstance(text, str) and "\n\n" not in text


@pytest.fixture(scope="module")
def units_preprocessor():
    cfg = OmegaConf.create(dict(name="hierarchical", vocab_size=30, max_length=5, padding="post", truncating="post",
                                max_units=4, max_unit_length=5, keep="last", speaker_tokens=False))
    return HierarchicalPreprocessor(cfg).fit(["the cat sat\non the mat", "a dog. the dog ran! <br />away", "é ü 日本"])


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(texts=st.lists(st.text(max_size=80), min_size=1, max_size=4))
def test_any_text_becomes_units_by_words_with_empty_slots_last(units_preprocessor, texts):
    batch = np.asarray(units_preprocessor.apply(np.asarray(texts, dtype=object)))  # eager: no tracing per example
    assert batch.shape == (len(texts), 4, 5) and batch.dtype == np.int32
    assert batch.min() >= 0 and batch.max() < units_preprocessor.vocabulary_size
    present = batch.any(axis=-1)
    assert (np.sort(present, axis=1)[:, ::-1] == present).all()  # empty slots only after the last unit
    words = batch != 0
    assert (np.sort(words, axis=-1)[..., ::-1] == words).all()  # words post-padded within a unit


@pytest.fixture(scope="module")
def words_preprocessor():
    cfg = OmegaConf.create(dict(name="words", vocab_size=30, max_length=6, padding="pre", truncating="pre"))
    return WordPreprocessor(cfg).fit(["the cat sat on the mat", "a dog ran<br />away", "é ü 日本\nnext message"])


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(texts=st.lists(st.text(max_size=80), min_size=1, max_size=4))
def test_any_text_becomes_pre_padded_word_ids(words_preprocessor, texts):
    ids = np.asarray(words_preprocessor.apply(np.asarray(texts, dtype=object)))
    assert ids.shape == (len(texts), 6) and ids.min() >= 0 and ids.max() < words_preprocessor.vocabulary_size
    words = ids != 0
    assert (np.sort(words, axis=-1) == words).all()  # padding only at the start


def spellings(number):
    """Ways a CSV may write `number` (1 -> '1', '1.0', '01', '+1', '1e0')."""
    plain = str(number)
    ways = {plain, repr(float(number)), f"{float(number):.3f}", f"{number:e}"}
    if number >= 0:
        ways |= {"0" + plain, "+" + plain}
    return sorted(ways)


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])  # three loads each
@given(numbers=st.lists(st.sampled_from([0, 1, 2, 10, -3, 1.5, 0.25, 1e-3]), min_size=2, max_size=4, unique=True),
       data=st.data())
def test_numeric_labels_name_the_same_classes_in_every_format(numbers, data):
    """However a CSV spells the numbers, and whether JSON gives them as ints or floats or a Parquet column as floats,
    the classes are one per number, named alike."""
    labels = [number for number in numbers for _ in range(6)]
    texts = [f"text {i}" for i in range(len(labels))]
    csv_labels = [data.draw(st.sampled_from(spellings(number))) for number in labels]
    json_labels = [data.draw(st.sampled_from([number, float(number)])) for number in labels]
    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        buffer = io.StringIO()
        writer = csv.writer(buffer)
        writer.writerows([["text", "label"], *zip(texts, csv_labels)])
        (folder / "x.csv").write_text(buffer.getvalue(), encoding="utf-8")
        (folder / "x.jsonl").write_text("".join(json.dumps({"text": t, "label": label}) + "\n"
                                                for t, label in zip(texts, json_labels)), encoding="utf-8")
        import pandas as pd

        pd.DataFrame({"text": texts, "label": [float(number) for number in labels]}).to_parquet(folder / "x.parquet")
        names = [load_dataset(data_part(OmegaConf.merge(BASE, OmegaConf.from_dotlist([f"dataset.path={folder / name}"]))))
                 .class_names for name in ("x.csv", "x.jsonl", "x.parquet")]
    assert names[0] == names[1] == names[2] and len(names[0]) == len(numbers), names
