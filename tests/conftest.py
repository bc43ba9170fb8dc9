"""Shared fixtures: config composition with tiny limits, tiny aclImdb fixtures, the real data folder."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra

from seqlab.config.compose import config_dir
from seqlab.config.compose import register_configs
from seqlab.models.catalog import MODELS

REPO = Path(__file__).resolve().parents[1]
REAL_DATA = Path(os.environ.get("SEQLAB_DATA_DIR", REPO.parent / "shared" / "data"))

# TensorFlow's and MLflow's environment defaults come from importing seqlab (above), as for every entry.


@pytest.fixture(autouse=True)
def no_mlflow_state_from_earlier_tests(monkeypatch):
    """tracking.uri defaults to $MLFLOW_TRACKING_URI, which mlflow.set_tracking_uri also sets; a test's
    mlflow.set_experiment (process-wide, and $MLFLOW_EXPERIMENT_ID) would pick the next test's experiment: not
    across tests."""
    from mlflow.tracking import fluent

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("MLFLOW_EXPERIMENT_ID", raising=False)
    monkeypatch.delenv("MLFLOW_EXPERIMENT_NAME", raising=False)
    yield
    fluent._active_experiment_id = None


@pytest.fixture(scope="session", autouse=True)
def isolated_cache(tmp_path_factory):
    """Archives are extracted into a cache of the test session, never beside the data."""
    os.environ["SEQLAB_CACHE_DIR"] = str(tmp_path_factory.mktemp("cache"))


@pytest.fixture(scope="session", autouse=True)
def migrated_store_template(tmp_path_factory):
    """A new SQLite MLflow store opened in a test process gets the tables of a template made once per test process,
    copied with SQLite's backup API, instead of running MLflow's ~60 schema migrations again (2-4 s a store, over a
    hundred stores). Test speed only: processes the tests start (seqlab train ...) still create stores themselves."""
    import sqlite3

    import mlflow.store.db.utils as db_utils
    import sqlalchemy

    initialize = db_utils._initialize_tables
    template = tmp_path_factory.mktemp("store-template") / "mlflow.db"
    template_engine = sqlalchemy.create_engine(f"sqlite:///{template}")
    initialize(template_engine)
    template_engine.dispose()

    def from_template(engine):
        if engine.dialect.name != "sqlite" or not engine.url.database or engine.url.database == ":memory:":
            return initialize(engine)
        source, target = sqlite3.connect(template), sqlite3.connect(engine.url.database)
        try:
            source.backup(target)
        finally:
            source.close()
            target.close()

    db_utils._initialize_tables = from_template
    yield
    db_utils._initialize_tables = initialize


def compose_config(overrides: list[str] | None = None):
    """The config `seqlab train OVERRIDES` would get, without running Hydra's app."""
    register_configs()
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        return compose(config_name="config", overrides=list(overrides or []))


# Small sizes for whichever of these keys a model has (each model owns its keys: seqlab.models.register).
TINY_SIZES = {"units": 4, "embedding_dim": 4, "filters": 4, "attention_units": 4, "ngram_buckets": 64,
              "message_units": 4, "heads": 2, "ff_dim": 8}
# Every registered model, found in the registry: a model added with its builder and YAML joins the tests.
FLAT_MODELS = sorted(name for name, info in MODELS.items() if not info.hierarchical)
HIERARCHICAL_MODELS = sorted(name for name, info in MODELS.items() if info.hierarchical)


def tiny_model(name: str, sizes: dict | None = None) -> list[str]:
    """Overrides `model=NAME` plus small sizes for the keys that model has."""
    from dataclasses import fields

    keys = {field.name for field in fields(MODELS[name].config)}
    return [f"model={name}", *(f"model.{key}={value}" for key, value in (sizes or TINY_SIZES).items() if key in keys)]


@pytest.fixture
def tracking_uri(tmp_path) -> str:
    return f"sqlite:///{tmp_path / 'mlflow.db'}"


@pytest.fixture(scope="session")
def real_data_dir() -> Path:
    if not (REAL_DATA / "imdb" / "aclImdb_labeled.tar.gz").exists():
        pytest.skip(f"real data not found at {REAL_DATA} (set SEQLAB_DATA_DIR to the shared data folder)")
    return REAL_DATA


POSITIVE = ["a wonderful film with great acting", "loved it, brilliant and moving", "great story, superb cast",
            "an excellent, delightful movie", "beautiful and brilliant work", "superb, I loved every minute"]
NEGATIVE = ["a terrible film with awful acting", "hated it, boring and dull", "awful story, wooden cast",
            "a dreadful, tedious movie", "ugly and boring work", "awful, I hated every minute"]


def write_aclimdb(root: Path, per_class: int = 6) -> Path:
    """A tiny aclImdb-shaped folder: train/test x pos/neg, files <id>_<rating>.txt."""
    folder = root / "aclImdb"
    for split in ("train", "test"):
        for sentiment, texts, ratings in (("pos", POSITIVE, (7, 8, 9, 10)), ("neg", NEGATIVE, (1, 2, 3, 4))):
            directory = folder / split / sentiment
            directory.mkdir(parents=True)
            for i in range(per_class):
                rating = ratings[i % len(ratings)]
                text = f"{texts[i % len(texts)]}<br /><br />{split} review number {i}."
                (directory / f"{i}_{rating}.txt").write_text(text, encoding="utf-8")
    return folder


@pytest.fixture
def tiny_aclimdb(tmp_path) -> Path:
    return write_aclimdb(tmp_path / "data")


@pytest.fixture
def tiny_archive(tmp_path) -> Path:
    folder = write_aclimdb(tmp_path / "src")
    archive = tmp_path / "archives" / "aclImdb_v1.tar.gz"
    archive.parent.mkdir()
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(folder, arcname="aclImdb")
    return archive


def default_sigint() -> None:
    """For Popen(preexec_fn=): a child that Ctrl-C interrupts even when pytest runs in the background (`&`,
    nohup), where SIGINT is ignored and children inherit that."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_DFL)


def stop_process_group(process) -> None:
    """SIGTERM to a server started with start_new_session=True and its children (uvicorn workers), SIGKILL if it
    lingers."""
    import signal
    import subprocess

    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def mlflow_server_at(folder: Path, store: str, workers: int = 1):
    """`mlflow server` as `make server` starts it, on a free port, artifacts in folder/artifacts; yields its URL once
    it answers /health; the whole process group stops at the end."""
    import urllib.request

    port = free_port()
    log = (folder / "server.log").open("w")
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    server = subprocess.Popen([str(Path(sys.executable).parent / "mlflow"), "server", "--host", "127.0.0.1", "--port",
                               str(port), "--workers", str(workers), "--backend-store-uri", store,
                               "--artifacts-destination", str(folder / "artifacts")],
                              cwd=folder, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while True:
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=2):
                    break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"mlflow server did not start: {(folder / 'server.log').read_text()[-2000:]}")
                time.sleep(0.5)
        yield url
    finally:
        stop_process_group(server)
        log.close()


# The test files that take longest (seconds, summed over their tests on a 2-core machine): handed out first, so that
# `make test`'s two workers (`--dist loadfile`: a file stays on one worker) do not end with one long file alone.
SLOW_FILES = {"test_robustness": 200, "test_pretrain": 165, "test_serving": 160, "test_search_runs": 140,
              "test_pipeline": 140, "test_train": 120, "test_postgres_server": 100, "test_sweeps": 90,
              "test_seed_tutorial": 85, "test_architectures": 75, "test_record": 70, "test_failures": 70,
              "test_threads": 65, "test_slurm": 60, "test_models": 55, "test_resume": 55}


def pytest_collection_modifyitems(items):
    items.sort(key=lambda item: -SLOW_FILES.get(item.path.stem, 0))  # stable: the order within a file stays
