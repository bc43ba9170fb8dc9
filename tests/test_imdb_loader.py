"""The aclImdb loader on tiny folders and archives that the tests write."""

import os
import stat

import numpy as np
import pytest

from seqlab.data import load_dataset
from seqlab.data.imdb import find_aclimdb, read_reviews
from seqlab.errors import DataError
from seqlab.config.plan import data_part
from tests.conftest import compose_config

pytestmark = pytest.mark.unit


def load(*overrides):
    return load_dataset(data_part(compose_config(list(overrides))))


def test_folder_labels_ratings_and_splits(tiny_aclimdb):
    data = load(f"dataset.path={tiny_aclimdb}", "dataset.validation_split=0.25")
    assert data.class_names == ["neg", "pos"]
    assert len(data.test) == 12 and len(data.train) + len(data.validation) == 12
    assert len(data.validation) == 3
    # labels come from the pos/neg folders
    for text, label in zip(data.test.texts, data.test.labels):
        assert ("wonderful" in text or "loved" in text or "great" in text or "excellent" in text
                or "beautiful" in text or "superb" in text) == (label == 1)
    # validation is held out of train, never taken from test
    assert not set(data.validation.ids) & set(data.train.ids)
    assert all(i.startswith("train/") for i in data.validation.ids + data.train.ids)
    assert all(i.startswith("test/") for i in data.test.ids)


def test_rating_target_has_eight_classes(tiny_aclimdb):
    before = sorted(p.name for p in tiny_aclimdb.parent.iterdir())
    data = load(f"dataset.path={tiny_aclimdb}", "dataset.target=rating")
    assert sorted(p.name for p in tiny_aclimdb.parent.iterdir()) == before  # nothing written beside a user's folder
    assert data.class_names == ["1", "2", "3", "4", "7", "8", "9", "10"]
    frame = read_reviews(tiny_aclimdb)
    expected = {f"{row.split}/{row.sentiment}/{row.id.split('/')[-1]}": row.rating for row in frame.itertuples()}
    for review_id, label in zip(data.test.ids, data.test.labels):
        assert int(data.class_names[label]) == int(review_id.split("_")[-1])
    assert len(expected) == 24


def test_archive_is_extracted_once_into_the_cache_not_beside_it(tiny_archive, tmp_path):
    archive_dir = tiny_archive.parent
    os.chmod(archive_dir, stat.S_IRUSR | stat.S_IXUSR)  # read-only, like ../shared/data
    try:
        cache = tmp_path / "cache"
        folder = find_aclimdb(str(tiny_archive), "unused", str(cache))
        assert folder.is_relative_to(cache) and (folder / "train" / "pos").is_dir()
        assert sorted(p.name for p in archive_dir.iterdir()) == ["aclImdb_v1.tar.gz"]
        mtime = folder.stat().st_mtime_ns
        assert find_aclimdb(str(tiny_archive), "unused", str(cache)) == folder
        assert folder.stat().st_mtime_ns == mtime  # not extracted again
    finally:
        os.chmod(archive_dir, stat.S_IRWXU)


def test_found_under_data_dir(tiny_archive, tmp_path):
    data_dir = tmp_path / "datadir"
    (data_dir / "imdb").mkdir(parents=True)
    (data_dir / "imdb" / "aclImdb_labeled.tar.gz").write_bytes(tiny_archive.read_bytes())
    data = load(f"data_dir={data_dir}")
    assert len(data.test) == 12


def test_max_train_and_test_are_seeded_stratified_samples_the_test_one_the_same_for_every_seed(tiny_aclimdb):
    a = load(f"dataset.path={tiny_aclimdb}", "dataset.max_train=8", "dataset.max_test=6", "trainer.seed=1")
    b = load(f"dataset.path={tiny_aclimdb}", "dataset.max_train=8", "dataset.max_test=6", "trainer.seed=1")
    c = load(f"dataset.path={tiny_aclimdb}", "dataset.max_train=8", "dataset.max_test=6", "trainer.seed=2")
    assert len(a.train) + len(a.validation) == 8 and len(a.test) == 6
    assert np.bincount(a.test.labels).tolist() == [3, 3]
    assert a.test.ids == b.test.ids and a.train.ids == b.train.ids
    assert a.train.ids != c.train.ids  # the training sample follows trainer.seed
    assert a.test.ids == c.test.ids  # the test sample does not: seed runs are scored on the same examples


def test_missing_path_and_wrong_layout_are_clear_errors(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        load(f"dataset.path={tmp_path / 'nowhere'}")
    (tmp_path / "notimdb").mkdir()
    with pytest.raises(DataError, match="not an aclImdb folder"):
        load(f"dataset.path={tmp_path / 'notimdb'}")


def test_offline_without_data_says_where_to_put_the_archive(tmp_path, monkeypatch):
    import urllib.request

    def offline(*args, **kwargs):
        raise OSError("network is unreachable")

    monkeypatch.setattr(urllib.request, "urlretrieve", offline)
    with pytest.raises(DataError, match="aclImdb_v1.tar.gz") as caught:
        load(f"data_dir={tmp_path / 'empty'}")
    assert "network is unreachable" in str(caught.value) and "SEQLAB_DATA_DIR" in str(caught.value)


def test_undecodable_file_names_the_encoding(tiny_aclimdb):
    (tiny_aclimdb / "train" / "pos" / "99_9.txt").write_bytes("caf\xe9 lovely".encode("latin-1"))
    with pytest.raises(DataError, match="utf-8.*dataset.encoding"):
        load(f"dataset.path={tiny_aclimdb}")
    data = load(f"dataset.path={tiny_aclimdb}", "dataset.encoding=latin-1")
    assert any("café" in t for t in data.train.texts + data.validation.texts)
