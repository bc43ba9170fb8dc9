"""Secrets never printed nor left in Hydra's output files, and an unusable MLflow store refused in seconds with one
paragraph that names the option, the path and what was expected (exit 2).

MLflow's REST client talks here to a small stand-in server (the endpoints these commands call, with canned
answers): a real `mlflow server` takes 20 s to start on this machine. The code under test (seqlab's redaction and
MLflow's own printing of the run's URL) is the real one."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import threading
import time
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from seqlab.record.store import check_reachable
from seqlab.cli.entry import log_to_stderr
from seqlab.cli.compare import main as compare_main
from seqlab.errors import ConfigError
from seqlab.redaction import REDACTED, redact_uri, redact_credentials
from tests.conftest import run_seqlab

PASSWORDS = ["hunter2", "pa/ss", "p@ss", "p@a/b", "se:cr:et", "p%40ss", "a/b@c:d/e", "x?y#z@w", "p@ss/"]
SCHEMES = ["http", "https", "postgresql", "mysql+pymysql"]


# --- URI redaction ----------------------------------------------------------------------------------------

@pytest.mark.unit
@pytest.mark.parametrize("scheme", SCHEMES)
@pytest.mark.parametrize("password", PASSWORDS)
@pytest.mark.parametrize("rest", ["127.0.0.1:5000", "db.example:5432/mlflow", "host/path/x", "host"])
def test_uri_credentials_are_redacted_whatever_the_password_holds(scheme, password, rest):
    uri = f"{scheme}://alice:{password}@{rest}"
    for text in (uri, f"tracking.uri={uri!r}", f"Cannot use {uri}: connection refused", f"({uri}), by accuracy/test"):
        shown = redact_uri(text)
        assert password not in shown and "alice" not in shown, shown
        assert f"{scheme}://{REDACTED}@{rest}" in shown, shown  # the host and path still say where
        assert redact_uri(shown) == shown


@pytest.mark.unit
@pytest.mark.parametrize("text", [
    "sqlite:///mlflow.db", "sqlite:////tmp/a@b/mlflow.db", "file:///home/me/x@y", "models:/classifier@champion",
    "runs:/abc/model", "http://127.0.0.1:5000/#/experiments/1/runs/abc?workflowType=machine_learning",
    "mail me at bob@example.com", "http://host:5000 and bob@example.com"])
def test_uris_without_credentials_are_left_as_they_are(text):
    assert redact_uri(text) == text


@pytest.mark.unit
def test_two_uris_in_one_line_each_lose_their_credentials():
    shown = redact_uri("copied http://a:p/1@h1/x to https://b:p@2@h2:5000 at bob@example.com")
    assert shown == f"copied http://{REDACTED}@h1/x to https://{REDACTED}@h2:5000 at bob@example.com"


@pytest.mark.unit
def test_log_lines_lose_credentials_with_slashes_and_ats():
    import logging

    record = logging.LogRecord("hydra", logging.INFO, __file__, 1, "#%d : %s", (0, "tracking.uri=http://a:p/w@d@h:1"),
                               None)
    assert redact_credentials(record) and record.getMessage() == f"#0 : tracking.uri=http://{REDACTED}@h:1"
    # a sweep's launcher logs each job's overrides: a secret-looking key's value goes too
    record = logging.LogRecord("hydra", logging.INFO, __file__, 1, "#%d : %s", (1, "+db_password=pw-1 model=gru"), None)
    assert redact_credentials(record) and record.getMessage() == f"#1 : +db_password={REDACTED} model=gru"


# --- a stand-in MLflow server --------------------------------------------------------------------------

RUN = {"info": {"run_id": "0123456789abcdef", "run_uuid": "0123456789abcdef", "experiment_id": "1", "run_name": "lstm",
                "status": "FINISHED", "start_time": 1, "end_time": 2, "lifecycle_stage": "active",
                "artifact_uri": "mlflow-artifacts:/1/0123456789abcdef/artifacts", "user_id": "alice"},
       "data": {"metrics": [{"key": "accuracy/test", "value": 0.8, "timestamp": 1, "step": 0}],
                "params": [{"key": "model.name", "value": "lstm"}],
                "tags": [{"key": "mlflow.runName", "value": "lstm"}]}}
EXPERIMENT = {"experiment_id": "1", "name": "imdb", "artifact_location": "mlflow-artifacts:/1",
              "lifecycle_stage": "active"}


@contextmanager
def stand_in_server(runs: list):
    """Answers /health and the MLflow REST calls that compare and set_terminated make; anything else gets {}."""

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):  # quiet
            pass

        def answer(self):
            path = self.path.split("?")[0]
            if path == "/health":
                body = b"OK"
            else:
                length = int(self.headers.get("Content-Length") or 0)
                self.rfile.read(length)
                reply = {}
                if path.endswith("/runs/get"):
                    reply = {"run": RUN}
                elif path.endswith("/runs/update"):
                    reply = {"run_info": RUN["info"]}
                elif path.endswith("/experiments/search"):
                    reply = {"experiments": [EXPERIMENT]}
                elif path.endswith("/experiments/get-by-name") or path.endswith("/experiments/get"):
                    reply = {"experiment": EXPERIMENT}
                elif path.endswith("/runs/search"):
                    reply = {"runs": runs}
                body = json.dumps(reply).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_GET = do_POST = do_PATCH = answer

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def no_url_printing_setting(monkeypatch):
    """MLflow's switch for its "View run ... at:" line, as a fresh process has it (unset), restored afterwards."""
    monkeypatch.delenv("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", raising=False)


@pytest.mark.unit
@pytest.mark.parametrize("password", ["hunter2", "p@ss", "p%40ss", "p@ss:x"])
def test_mlflow_never_prints_a_run_url_holding_the_password(password, capsys, no_url_printing_setting):
    with stand_in_server([RUN]) as port:
        uri = f"http://alice:{password}@127.0.0.1:{port}"
        check_reachable(uri)  # what train, compare and ensemble call before MLflow sees the store
        MlflowClient(uri).set_terminated(RUN["info"]["run_id"])  # MLflow's end of a run: it prints "View run ... at:"
    output = capsys.readouterr()
    assert password not in output.out + output.err and "alice" not in output.out + output.err


@pytest.mark.unit
@pytest.mark.parametrize("password", ["hunter2", "p@ss", "p%40ss", "p@ss:x"])
def test_compare_title_and_no_runs_message_never_show_the_password(password, capsys):
    log_to_stderr()  # as `seqlab compare` shows its status lines
    with stand_in_server([RUN]) as port:
        uri = f"http://alice:{password}@127.0.0.1:{port}"
        assert compare_main(["--tracking-uri", uri, "--format", "table"]) == 0
        shown = capsys.readouterr()
        assert "0.8000" in shown.out and f"http://{REDACTED}@127.0.0.1:{port}" in shown.out
        assert password not in shown.out + shown.err
    with stand_in_server([]) as port:
        uri = f"http://alice:{password}@127.0.0.1:{port}"
        assert compare_main(["--tracking-uri", uri]) == 1
        shown = capsys.readouterr()
        assert f"no finished runs in http://{REDACTED}@127.0.0.1:{port}" in shown.err
        assert password not in shown.out + shown.err


@pytest.mark.unit
@pytest.mark.parametrize("password", ["pa/ss", "p@a/b", "a/b@c:d/e"])
def test_compare_errors_never_show_a_password_holding_slashes(password, capsys):
    """A password with a raw "/" is no valid URI (the host cannot be found): the error still hides all of it."""
    assert compare_main(["--tracking-uri", f"http://alice:{password}@127.0.0.1:9"]) == 2
    shown = capsys.readouterr()
    assert password not in shown.err and "alice" not in shown.err and "--tracking-uri" in shown.err


# --- Hydra's output files -----------------------------------------------------------------------------

def files_holding(folder: Path, secrets: list[str]) -> list[str]:
    return [f"{path}: {secret}" for path in sorted(folder.rglob("*")) if path.is_file()
            for secret in secrets if secret in path.read_text(errors="replace")]


@pytest.mark.slow
def test_hydra_output_files_of_a_run_keep_no_secret(tmp_path):
    run_dir = tmp_path / "run"
    result = run_seqlab("train", "tracking.uri=http://alice:s3cr/et@x@127.0.0.1:9",
                        "+hydra.job.env_set.MLFLOW_TRACKING_PASSWORD=hunter3", f"hydra.run.dir={run_dir}", cwd=tmp_path)
    assert result.returncode == 2 and "Cannot reach" in result.stderr, result.stderr  # the server does not answer
    secrets = ["alice", "s3cr", "et@x", "hunter3"]
    assert not [s for s in secrets if s in result.stdout + result.stderr], result.stderr
    written = sorted(path.name for path in (run_dir / ".hydra").iterdir())
    assert written == ["config.yaml", "hydra.yaml", "overrides.yaml"]
    assert files_holding(run_dir, secrets) == []
    config = (run_dir / ".hydra" / "config.yaml").read_text()
    assert f"uri: http://{REDACTED}@127.0.0.1:9" in config
    assert "data_dir: ${oc.env:SEQLAB_DATA_DIR,data}" in config  # the rest as Hydra wrote it, unresolved
    assert f"tracking.uri=http://{REDACTED}@127.0.0.1:9" in (run_dir / ".hydra" / "overrides.yaml").read_text()
    hydra = (run_dir / ".hydra" / "hydra.yaml").read_text()
    assert f"MLFLOW_TRACKING_PASSWORD: {REDACTED}" in hydra
    assert f"override_dirname: tracking.uri=http://{REDACTED}@127.0.0.1:9" in hydra


@pytest.mark.slow
def test_hydra_output_files_of_a_sweep_keep_no_secret(tmp_path):
    sweep_dir = tmp_path / "sweep"
    result = run_seqlab("train", "-m", "trainer.epochs=1,2", "dataset.max_train=0",
                        "+hydra.job.env_set.MLFLOW_TRACKING_TOKEN=hunter4",
                        f"tracking.uri=sqlite:///{tmp_path / 'mlflow.db'}", f"hydra.sweep.dir={sweep_dir}",
                        cwd=tmp_path)
    assert result.returncode == 2 and "job 0: error: Config key 'dataset.max_train'" in result.stderr, result.stderr
    assert "hunter4" not in result.stdout + result.stderr
    assert (sweep_dir / "multirun.yaml").is_file() and (sweep_dir / "1" / ".hydra" / "hydra.yaml").is_file()
    assert files_holding(sweep_dir, ["hunter4"]) == []
    assert f"MLFLOW_TRACKING_TOKEN={REDACTED}" in (sweep_dir / "multirun.yaml").read_text()


# --- unusable stores ------------------------------------------------------------------------------------

def sqlite_database(path: Path, table: str) -> Path:
    with sqlite3.connect(path) as connection:
        connection.execute(f"CREATE TABLE {table} (id INTEGER)")
    connection.close()
    return path


def read_only_mount(folder: str) -> bool:
    import tempfile

    try:
        descriptor, probe = tempfile.mkstemp(dir=folder)
    except OSError:
        return os.path.isdir(folder)
    os.close(descriptor)
    os.unlink(probe)
    return False


def unusable_stores(tmp_path: Path) -> dict[str, tuple[Path, list[str]]]:
    """Name -> (the database path, words the refusal must hold besides the option and the path)."""
    (tmp_path / "folder.db").mkdir()
    (tmp_path / "notes.txt").write_text("not a database\n")
    (tmp_path / "a_file").write_text("x")
    stores = {
        "a directory": (tmp_path / "folder.db", ["directory"]),
        "a text file": (tmp_path / "notes.txt", ["not an SQLite database"]),
        "another program's database": (sqlite_database(tmp_path / "other.db", "customers"),
                                       ["not an MLflow store", "customers"]),
        "a parent that is a file": (tmp_path / "a_file" / "mlflow.db", ["cannot be created"]),
    }
    if read_only_mount("/sys"):  # Linux's sysfs: no file can be made there, not even by root
        stores["a read-only mount"] = (Path("/sys/mlflow.db"), ["write"])
        stores["a parent that cannot be created"] = (Path("/sys/seqlab-missing/mlflow.db"), ["cannot be created"])
    if os.geteuid() != 0:  # root reads and writes whatever the permissions say
        locked = tmp_path / "locked"
        locked.mkdir()
        sqlite_database(locked / "mlflow.db", "alembic_version")
        (locked / "mlflow.db").chmod(0)
        stores["a file without permissions"] = (locked / "mlflow.db", ["permission"])
        (tmp_path / "readonly").mkdir(mode=0o555)
        stores["a read-only folder"] = (tmp_path / "readonly" / "mlflow.db", ["write"])
    return stores


@pytest.mark.unit
def test_unusable_stores_are_refused_in_seconds_naming_the_key_path_and_what_was_expected(tmp_path):
    for name, (path, words) in unusable_stores(tmp_path).items():
        before = path.read_bytes() if path.is_file() else None
        started = time.perf_counter()
        with pytest.raises(ConfigError) as refusal:
            check_reachable(f"sqlite:///{path}")
        message = str(refusal.value)
        assert time.perf_counter() - started < 5, name
        assert "tracking.uri" in message and str(path) in message and "expected" in message, (name, message)
        assert "\n" not in message and all(word in message for word in words), (name, message)
        assert (path.read_bytes() if path.is_file() else None) == before, name  # nothing recorded is touched


@pytest.mark.unit
def test_compare_refuses_unusable_stores_naming_its_option(tmp_path, capsys):
    stores = unusable_stores(tmp_path)
    stores["a missing file"] = (tmp_path / "nowhere.db", ["does not exist"])
    empty = tmp_path / "empty.db"
    empty.touch()
    stores["an empty file"] = (empty, ["not an MLflow store"])  # compare reads: it would write MLflow's tables there
    for name, (path, words) in stores.items():
        words = words if path.exists() else ["does not exist"]  # compare reads a store, never creates one
        started = time.perf_counter()
        assert compare_main(["--tracking-uri", f"sqlite:///{path}"]) == 2, name
        err = capsys.readouterr().err
        assert time.perf_counter() - started < 5, name
        assert err.startswith("seqlab: error: ") and len(err.strip().splitlines()) == 1, err
        assert "--tracking-uri" in err and str(path) in err and "expected" in err, (name, err)
        assert all(word in err for word in words), (name, err)
    assert not empty.read_bytes()


@pytest.mark.unit
def test_usable_stores_pass_the_check(tmp_path):
    check_reachable(f"sqlite:///{tmp_path / 'new' / 'deeper' / 'mlflow.db'}")  # created when used
    assert not (tmp_path / "new").exists()  # the check creates nothing
    (tmp_path / "empty.db").touch()
    check_reachable(f"sqlite:///{tmp_path / 'empty.db'}")  # SQLite's new database; MLflow makes its tables
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    client.create_experiment("kept")
    check_reachable(f"sqlite:///{tmp_path / 'mlflow.db'}")
    assert client.get_experiment_by_name("kept") is not None
    check_reachable("sqlite:///:memory:")


@pytest.mark.unit
@pytest.mark.parametrize("password", ["p%40ss", "se:cr:et", "pa/ss"])
def test_a_database_server_that_does_not_answer_is_refused_in_seconds(password):
    from tests.conftest import free_port

    uri = f"postgresql+psycopg2://alice:{password}@127.0.0.1:{free_port()}/mlflow"  # nothing listens there
    started = time.perf_counter()
    with pytest.raises(ConfigError, match="Cannot reach the database server of tracking.uri=") as refusal:
        check_reachable(uri)
    assert time.perf_counter() - started < 10 and password not in str(refusal.value) and "expected" in str(refusal.value)


@pytest.mark.unit
@pytest.mark.parametrize("password", ["p@ss", "p@a/b"])
def test_a_database_url_whose_password_hides_its_host_is_refused_without_dialling_part_of_it(password):
    uri = f"postgresql+psycopg2://alice:{password}@127.0.0.1:5432/mlflow"  # SQLAlchemy's host would be "ss@127..."
    with pytest.raises(ConfigError, match="percent-encoded") as refusal:
        check_reachable(uri)
    assert "alice" not in str(refusal.value) and password not in str(refusal.value)


@pytest.mark.slow
def test_seqlab_train_on_a_directory_store_exits_2_in_seconds(tmp_path):
    (tmp_path / "store").mkdir()
    started = time.perf_counter()
    try:
        result = run_seqlab("train", f"tracking.uri=sqlite:///{tmp_path / 'store'}", "dataset.download=false",
                            cwd=tmp_path, env={"SEQLAB_DATA_DIR": str(tmp_path)}, timeout=90)
    except subprocess.TimeoutExpired:
        pytest.fail("seqlab train took over 90 s to refuse a directory as its store (MLflow's retries)")
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith("seqlab: error: ") and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert "tracking.uri" in result.stderr and str(tmp_path / "store") in result.stderr
    assert time.perf_counter() - started < 60


@pytest.mark.unit
def test_an_unknown_secret_looking_key_is_refused_without_its_value():
    from seqlab.config.validate import validate
    from seqlab.errors import ConfigError
    from tests.conftest import compose_config

    with pytest.raises(ConfigError, match="Unknown config key 'password'") as refused:
        validate(compose_config(["+password=hunter3"]))
    assert "hunter3" not in str(refused.value)
