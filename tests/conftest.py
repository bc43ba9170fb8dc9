"""Shared fixtures and helpers: test tiers, config composition, the `seqlab` command, tiny aclImdb folders, a tiny
logged model trained once per test process, the real data folder.

Every test has exactly one tier (pyproject.toml registers them; `make test-fast` runs `unit`):
- `unit`: no training and no subprocess (configs, parsing, data loading, small numpy and Keras layer checks);
- `integration`: tiny in-process training runs (`debug=tiny` on tiny files the tests write);
- `slow`: real data under SEQLAB_DATA_DIR, `seqlab` or Python subprocesses, servers and clusters.
A whole file of one tier says so with `pytestmark = pytest.mark.<tier>`; other files mark each test.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import os
import socket
import subprocess
import sys
import tarfile
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import OmegaConf

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
    """The config `seqlab train OVERRIDES` would get, without running Hydra's app: a copy of its own (a test may
    change it). Composing takes Hydra about 0.15 s of CPU, copying 2 ms: each list of overrides is composed once
    per test process (interpolations such as ${oc.env:...} stay unresolved in the copy, as Hydra leaves them)."""
    return copy.deepcopy(_composed(tuple(overrides or ())))


@functools.lru_cache(maxsize=None)
def _composed(overrides: tuple[str, ...]):
    register_configs()
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        return compose(config_name="config", overrides=list(overrides))


# Every registered model, found in the registry: a model added with its builder and YAML joins the tests.
FLAT_MODELS = sorted(name for name, info in MODELS.items() if not info.hierarchical)
HIERARCHICAL_MODELS = sorted(name for name, info in MODELS.items() if info.hierarchical)


def tiny_model(name: str, sizes: dict | None = None) -> list[str]:
    """Overrides `model=NAME` with debug=tiny's layer sizes for that model (conf/debug/model/tiny_NAME.yaml; none
    for a model without one), or with `sizes` for whichever of its keys that model has. The model group only: for
    a whole tiny run, compose with `debug=tiny` instead."""
    from dataclasses import fields

    if sizes is None:
        preset = config_dir() / "debug" / "model" / f"tiny_{name}.yaml"
        sizes = OmegaConf.to_container(OmegaConf.load(preset)) if preset.is_file() else {}
    keys = {field.name for field in fields(MODELS[name].config)}
    return [f"model={name}", *(f"model.{key}={value}" for key, value in sizes.items() if key in keys)]


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


def seqlab_command(*args) -> list[str]:
    """The argv of the `seqlab` command as this interpreter runs it (`python -m seqlab.cli ARGS`): for Popen, where
    a test signals the process or reads its output as it comes."""
    return [sys.executable, "-m", "seqlab.cli", *map(str, args)]


def run_seqlab(*args, cwd=None, env: dict | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    """`seqlab ARGS` in a process of its own, to its end: exit code, stdout and stderr as text. `env` adds to (a value
    of None: removes from) this process's environment; the command reads the data and the MLflow store the
    arguments name, or SEQLAB_DATA_DIR and MLFLOW_TRACKING_URI as set here."""
    environment = {key: value for key, value in {**os.environ, **(env or {})}.items() if value is not None}
    return subprocess.run(seqlab_command(*args), cwd=cwd, env=environment, capture_output=True, text=True,
                          timeout=timeout)


def fit_with_callbacks(monkeypatch, *callbacks) -> None:
    """Hands `callbacks` (Keras callbacks) to the model fitting of every training run started while the test runs,
    after the run's own: how a test stops or breaks a run at a chosen epoch (a signal, a held store lock, an error).
    train() takes no callbacks, so this patches the one call a run fits through, `seqlab.workflow.run.fit` (whose
    `callbacks=` seqlab's own pruning and fine-tuning schedule use): the only place tests reach into a run."""
    from seqlab.workflow import run as run_module

    fit = run_module.fit

    def fit_adding_callbacks(*args, callbacks=None, **kwargs):
        return fit(*args, callbacks=[*(callbacks or []), *added], **kwargs)

    added = list(callbacks)
    monkeypatch.setattr(run_module, "fit", fit_adding_callbacks)


def raising_callback(error: BaseException, hook: str = "on_train_begin"):
    """A Keras callback that raises `error` at `hook` (on_train_begin: before the first epoch, on_train_end: after
    the last, on_epoch_begin: every epoch)."""
    import keras

    def raise_error(*args, **kwargs):
        raise error

    return type("Raising", (keras.callbacks.Callback,), {hook: raise_error})()


TINY_POSITIVE = ["great film", "wonderful acting", "superb story", "loved it"]
TINY_NEGATIVE = ["awful film", "boring acting", "dull story", "hated it"]


@pytest.fixture(scope="session")
def tiny_logged_model(tmp_path_factory) -> SimpleNamespace:
    """A tiny LSTM trained once per test process (`debug=tiny` on 80 short texts, a few seconds), for the tests that
    only read a run and its logged model: `model_uri` (runs:/<id>/model), `uri` (its store), `run_id`, `cfg`.
    Tests read it and never write into its store."""
    import pandas as pd
    from mlflow.tracking import MlflowClient

    from seqlab.workflow.train import train

    folder = tmp_path_factory.mktemp("tiny-logged-model")
    rows = [{"text": (TINY_POSITIVE if i % 2 else TINY_NEGATIVE)[i % 4], "label": "pos" if i % 2 else "neg"}
            for i in range(80)]
    pd.DataFrame(rows).to_csv(folder / "train.csv", index=False)
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    cfg = compose_config(["dataset=custom", f"dataset.path={folder / 'train.csv'}", "debug=tiny", f"tracking.uri={uri}",
                          "tracking.experiment=tiny", "trainer.checkpoint=false"])
    train(cfg)
    client = MlflowClient(uri)
    [run] = client.search_runs([client.get_experiment_by_name("tiny").experiment_id])
    return SimpleNamespace(model_uri=f"runs:/{run.info.run_id}/model", uri=uri, run_id=run.info.run_id, cfg=cfg)


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
              "test_threads": 65, "test_slurm": 60, "test_models": 55, "test_resume": 55, "test_lifecycle": 90,
              "test_faults": 90}


TIERS = ("unit", "integration", "slow")
WRONG_TIERS = pytest.StashKey[str]()


@pytest.hookimpl(tryfirst=True)  # before `-m` deselects, so that `make test-fast` runs (and fails) them too
def pytest_collection_modifyitems(config, items):
    for item in items:
        tiers = sorted({mark.name for mark in item.iter_markers() if mark.name in TIERS})
        if len(tiers) != 1:
            item.stash[WRONG_TIERS] = (
                f"{item.nodeid} has {' and '.join(tiers) or 'no tier'}: every test needs exactly one of "
                f"{', '.join(TIERS)} (tests/conftest.py), `pytestmark = pytest.mark.unit` in a file of one tier, "
                "`@pytest.mark.unit` on each test otherwise")
            for tier in TIERS:  # selected by every tier's run, where it fails
                item.add_marker(tier)
    items.sort(key=lambda item: -SLOW_FILES.get(item.path.stem, 0))  # stable: the order within a file stays


def pytest_runtest_setup(item):
    if WRONG_TIERS in item.stash:
        pytest.fail(item.stash[WRONG_TIERS], pytrace=False)
