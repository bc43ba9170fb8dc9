"""Cross-validation (trainer.cv_folds): folds stratified and grouped (IMDB by movie), k fold runs nested under a
parent holding mean and std, the test split never touched, usable as a search objective."""

import tarfile
import tempfile
from pathlib import Path

import numpy as np
import pytest
from mlflow.tracking import MlflowClient

from seqlab.config.validate import validate
from seqlab.data.common import Examples, cv_fold
from seqlab.errors import ConfigError
from seqlab.config.plan import data_part
from tests.conftest import compose_config, write_aclimdb


@pytest.mark.unit
def test_folds_are_stratified_grouped_and_partition_the_pool():
    rng = np.random.default_rng(0)
    groups = [f"movie{i // 5}" for i in range(200)]  # 40 movies of 5 reviews, each movie one sentiment
    labels = np.array([int(g[5:]) % 2 for g in groups])
    pool = Examples(texts=[f"review {i}" for i in range(200)], labels=labels, ids=[str(i) for i in range(200)],
                    groups=groups)
    held_out = []
    for fold in range(4):
        train, validation = cv_fold(pool, 4, fold, seed=1, name="toy")
        assert not set(train.groups) & set(validation.groups)  # no movie on both sides
        assert len(train) + len(validation) == 200 and 0.4 <= validation.labels.mean() <= 0.6
        held_out += validation.ids
    assert sorted(held_out, key=int) == pool.ids  # every example validated exactly once
    assert cv_fold(pool, 4, 2, seed=1, name="toy")[1].ids == cv_fold(pool, 4, 2, seed=1, name="toy")[1].ids
    assert cv_fold(pool, 4, 2, seed=2, name="toy")[1].ids != cv_fold(pool, 4, 2, seed=1, name="toy")[1].ids

    ungrouped = Examples(texts=pool.texts, labels=labels[rng.permutation(200)])
    train, validation = cv_fold(ungrouped, 5, 0, seed=1, name="toy")
    assert len(validation) == 40 and validation.labels.mean() == pytest.approx(ungrouped.labels.mean(), abs=0.03)


@pytest.mark.unit
def test_cv_keys_are_checked():
    with pytest.raises(ConfigError, match="trainer.cv_folds is null"):
        validate(compose_config(["trainer.cv_fold=1"]))
    with pytest.raises(ConfigError, match=r"'trainer.cv_fold' is 3; it must lie in \[0, 2\]"):
        validate(compose_config(["trainer.cv_folds=3", "trainer.cv_fold=3"]))
    with pytest.raises(ConfigError, match=r"'trainer.cv_folds' is 1"):
        validate(compose_config(["trainer.cv_folds=1"]))


@pytest.mark.unit
def test_imdb_folds_keep_a_movies_reviews_together(tmp_path):
    """The movies come from the URL lists of an aclImdb_unsup.tar.gz beside the labeled reviews (tiny ones here)."""
    from seqlab.data import load_dataset

    labeled = write_aclimdb(tmp_path / "data", per_class=24)
    lists = tmp_path / "unsup" / "aclImdb"
    (lists / "train" / "unsup").mkdir(parents=True)
    (lists / "train" / "unsup" / "0_0.txt").write_text("an unlabeled review")
    for split in ("train", "test"):
        (lists / split).mkdir(exist_ok=True)
        for sentiment in ("pos", "neg"):  # 4 reviews per movie, as IMDB's pages: http://www.imdb.com/title/ttN/...
            (lists / split / f"urls_{sentiment}.txt").write_text("".join(
                f"http://www.imdb.com/title/tt{split[:2]}{sentiment}{i // 4:03d}/usercomments\n" for i in range(24)))
    with tarfile.open(tmp_path / "data" / "aclImdb_unsup.tar.gz", "w:gz") as tar:
        tar.add(lists, arcname="aclImdb")
    cfg = compose_config([f"dataset.path={labeled}", f"data_dir={tmp_path / 'data'}", "trainer.cv_folds=3",
                          "trainer.cv_fold=1"])
    data = load_dataset(data_part(cfg))
    assert sorted(set(data.train.groups + data.validation.groups)) == sorted(
        f"tttr{s}{m:03d}" for s in ("pos", "neg") for m in range(6))
    assert not set(data.train.groups) & set(data.validation.groups)
    assert len(data.validation) == 16 and len(data.test) == 48  # 4 of 12 movies; the test split untouched


@pytest.mark.slow
def test_the_shared_url_lists_name_each_reviews_movie():
    """The real lists parse as the README of the data says: 3,456 train movies, 3,581 test, one review a line."""
    from seqlab.data.imdb import _movies
    from tests.conftest import REAL_DATA

    archive = REAL_DATA / "imdb" / "aclImdb_unsup.tar.gz"
    if not archive.is_file():
        pytest.skip(f"{archive} not found (set SEQLAB_DATA_DIR to the shared data folder)")
    movies = {}
    with tarfile.open(archive) as tar:
        for member in tar:
            if "/urls_" in member.name and "unsup" not in member.name:
                path = tar.extractfile(member)
                local = Path(tempfile.mkdtemp()) / "urls.txt"
                local.write_bytes(path.read())
                movies[member.name.split("aclImdb/")[1]] = _movies(local)
    assert sorted(movies) == ["test/urls_neg.txt", "test/urls_pos.txt", "train/urls_neg.txt", "train/urls_pos.txt"]
    assert all(len(lines) == 12500 for lines in movies.values())
    assert len(set(movies["train/urls_neg.txt"] + movies["train/urls_pos.txt"])) == 3456
    assert len(set(movies["test/urls_neg.txt"] + movies["test/urls_pos.txt"])) == 3581
    assert all(movie.startswith("tt") for lines in movies.values() for movie in lines)


@pytest.mark.integration
def test_cv_folds_3_gives_three_fold_runs_and_a_parent_with_mean_and_std(tmp_path):
    from seqlab.workflow.train import train

    data = write_aclimdb(tmp_path / "data", per_class=15)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    cfg = compose_config([f"dataset.path={data}", f"tracking.uri={uri}", "tracking.experiment=cv",
                          "trainer.cv_folds=3", "debug=tiny", "tracking.log_model=false"])
    value = train(cfg)
    client = MlflowClient(uri)
    runs = client.search_runs([client.get_experiment_by_name("cv").experiment_id])
    [parent] = [r for r in runs if r.data.tags.get("cv.role") == "parent"]
    folds = sorted((r for r in runs if r.data.tags.get("cv.role") == "fold"), key=lambda r: r.data.tags["cv.fold"])
    assert len(runs) == 4 and [r.data.tags["cv.fold"] for r in folds] == ["0", "1", "2"]
    assert {r.info.status for r in runs} == {"FINISHED"}
    assert {r.data.tags["mlflow.parentRunId"] for r in folds} == {parent.info.run_id}
    assert [r.data.params["trainer.cv_fold"] for r in folds] == ["0", "1", "2"]
    assert parent.data.params["trainer.cv_folds"] == "3" and "trainer.cv_fold" not in parent.data.params
    for run in runs:  # the test split is left for the final model
        assert not any(key.endswith("/test") for key in run.data.metrics)
    kept = [client.get_metric_history(r.info.run_id, "accuracy/val")[-1].value for r in folds]  # last epoch kept
    assert parent.data.metrics["accuracy/val"] == pytest.approx(np.mean(kept))
    assert parent.data.metrics["accuracy/val_std"] == pytest.approx(np.std(kept, ddof=1))
    assert "loss/val_std" in parent.data.metrics
    assert value == pytest.approx(np.mean(kept))  # optimized_metric accuracy/test -> its validation side

    from seqlab.analysis.compare import runs_frame

    table = runs_frame(uri, "cv", metric="accuracy/val")
    assert len(table) == 1 and table["accuracy/val"].iloc[0] == pytest.approx(np.mean(kept))  # the folds stay out
