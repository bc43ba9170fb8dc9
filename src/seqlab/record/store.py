"""The MLflow store: reaching it, opening it (a lock for new SQLite stores), the experiment, and waiting while
another process holds it."""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import re
import time
from pathlib import Path

import mlflow
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from mlflow.utils.mlflow_tags import MLFLOW_RUN_NOTE

from seqlab.errors import ConfigError
from seqlab.jobs import current_job
from seqlab.record.store_checks import check_store
from seqlab.redaction import URI_CREDENTIALS, redact_uri

log = logging.getLogger(__name__)
# MLflow logs every failed store write with its traceback, then raises it; seqlab reports what it raises, once.
logging.getLogger("mlflow.store.db.utils").addFilter(
    lambda record: not record.getMessage().startswith("SQLAlchemy database error"))
# MLflow's system-metrics monitor announces its start and stop at INFO on every run: noise beside seqlab's lines
logging.getLogger("mlflow.system_metrics").setLevel(logging.WARNING)


def artifact_root_for(uri: str) -> str | None:
    """For a SQLite store, artifacts go beside the database (else MLflow uses ./mlruns of the cwd)."""
    if uri.startswith("sqlite:///"):
        database = Path(uri[len("sqlite:///"):]).expanduser()
        return (database.resolve().parent / "mlartifacts").as_uri()
    return None


def experiment_tags(name: str, dataset: str) -> dict[str, str]:
    """Its description, and its kind: without it, MLflow 3's UI opens a new experiment on its GenAI overview page
    instead of the runs table."""
    return {MLFLOW_RUN_NOTE: experiment_description(name, dataset), "mlflow.experimentKind": "custom_model_development"}


def experiment_description(name: str, dataset: str) -> str:
    """The experiment's description (markdown, shown above its runs in the MLflow UI): its data, how its runs are
    named and how they compare."""
    return (f"Runs of `seqlab train` on the dataset **{dataset}** (the runs' `dataset.*` params say where "
            "its files are and how they were sampled), one MLflow run per training run.\n\n"
            "- **Names**: the model and the overrides that differ from the defaults (`cnn_lstm dropout=0.2`). A sweep "
            "(`seqlab train -m`) is one parent run named after the sweep (`tracking.sweep`) that holds its best "
            "child's params and metrics, a comparison table and figure; its children, one per job, are nested "
            "under it (expand the parent's row, or sort the table by a metric to list every run flat).\n"
            "- **Metrics**: `<quantity>/<split>`: `loss/train`, `accuracy/val`, ... per epoch (step = epoch index); "
            "`accuracy/test`, `f1_macro/test`, ... once, at the step of the epoch whose weights were tested.\n"
            f"- **Compare**: `seqlab compare --experiment {name}` (runs that differ only in `trainer.seed` averaged), "
            "`seqlab compare --sweep NAME` for one sweep; here, select runs and press *Compare*, or *Group by* the "
            "`seed_group` tag.")


def configure(uri: str, experiment: str, dataset: str) -> str:
    """Point MLflow at the store `uri` and return the id of `experiment` (of runs on `dataset`), creating it if
    needed."""
    check_no_inherited_run()
    check_reachable(uri)
    mlflow.set_tracking_uri(uri)
    job = current_job()
    if job is not None:  # a sweep's job: its run joins the parent's experiment, whatever the job's config says
        return job.experiment_id
    from sqlalchemy.exc import SQLAlchemyError

    try:
        with store_creation_lock(uri):
            return ensure_experiment(uri, experiment, experiment_tags(experiment, dataset))
    # ImportError: no driver for postgresql:// or mysql://; SQLAlchemyError: a store that broke after check_reachable
    except (MlflowException, ImportError, OSError, SQLAlchemyError) as error:
        hint = (" (pip install the database driver, e.g. psycopg2-binary or pymysql)"
                if isinstance(error, ImportError) else "")
        raise ConfigError(f"Cannot use the MLflow store tracking.uri={redact_uri(uri)!r}: "
                          f"{redact_uri((str(error).splitlines() or [type(error).__name__])[0])}{hint}") from None


@contextlib.contextmanager
def store_creation_lock(uri: str):
    """For a SQLite store, an exclusive lock on `<database>.lock` while MLflow opens it: processes that open one new
    store at once (the workers of a search) race in MLflow's table creation and migrations ("table ... already
    exists", "duplicate column name"). A file lock, where the OS has one (fcntl: not Windows)."""
    try:
        import fcntl
    except ImportError:
        fcntl = None
    if not uri.startswith("sqlite:///") or uri == "sqlite:///:memory:" or fcntl is None:
        yield
        return
    database = Path(uri[len("sqlite:///"):]).expanduser()
    database.parent.mkdir(parents=True, exist_ok=True)
    with open(f"{database}.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def ensure_experiment(uri: str, name: str, tags: dict[str, str]) -> str:
    """The id of experiment `name` in the store `uri` (set as MLflow's), created with `tags` and its artifacts
    beside a SQLite database if it is new; an existing one gets the tags it lacks."""
    experiment = mlflow.get_experiment_by_name(name)
    if experiment is not None:
        if experiment.lifecycle_stage == "deleted":
            raise ConfigError(f"MLflow experiment {name!r} at {redact_uri(uri)} is deleted; restore it in the UI or "
                              "pick another tracking.experiment.")
        for key, value in tags.items():  # experiments made before seqlab set these
            if key not in experiment.tags:
                MlflowClient().set_experiment_tag(experiment.experiment_id, key, value)
        return experiment.experiment_id
    root = artifact_root_for(uri)
    location = f"{root}/{re.sub(r'[^A-Za-z0-9_.-]+', '_', name)}" if root else None
    try:
        return mlflow.create_experiment(name, artifact_location=location, tags=tags)
    except MlflowException:  # a parallel job created it first
        return mlflow.get_experiment_by_name(name).experiment_id


@functools.lru_cache(maxsize=1)  # once per process
def _warn_credentials() -> None:
    log.warning("tracking.uri holds credentials; they are kept out of the run, but prefer the "
                "MLFLOW_TRACKING_USERNAME/MLFLOW_TRACKING_PASSWORD (or MLFLOW_TRACKING_TOKEN) environment variables.")


def check_reachable(uri: str, timeout: float = 5.0, option: str = "tracking.uri", write: bool = True) -> None:
    """A store MLflow cannot use fails here, in seconds, naming `option` (MLflow's own client retries for minutes):
    a tracking server that does not answer, an unusable SQLite path or file (seqlab.record.store_checks; `write`: the command
    records runs there), a database server that does not answer."""
    if URI_CREDENTIALS.search(uri):
        _warn_credentials()
        # MLflow prints "View run <name> at: <uri>/#/..." on stdout as each run ends: with the password in it
        os.environ["MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT"] = "true"
    check_store(uri, option, write, timeout)
    if not uri.startswith(("http://", "https://")):
        return
    import requests

    try:
        requests.get(f"{uri.rstrip('/')}/health", timeout=timeout)
    except (requests.RequestException, ValueError) as error:  # ValueError: a URI that does not parse
        raise ConfigError(f"Cannot reach the MLflow tracking server at {option}={redact_uri(uri)!r} "
                          f"({type(error).__name__}): start it (make server), or point {option} at a running "
                          "server or at a local store such as sqlite:///mlflow.db.") from None


def check_no_inherited_run() -> None:
    """MLflow's start_run() joins the run named by MLFLOW_RUN_ID: a new run would write into an old one."""
    if os.environ.get("MLFLOW_RUN_ID"):
        raise ConfigError(f"The environment variable MLFLOW_RUN_ID is set ({os.environ['MLFLOW_RUN_ID']}); seqlab "
                          "never writes into an existing run except to resume it: unset MLFLOW_RUN_ID, or pass "
                          "trainer.resume=<run_id> to continue that run from its last checkpoint.")


def run_link(uri: str, experiment_id: str, run_id: str) -> str:
    """Where the run is in the MLflow UI: the tracking server's own page, or `make ui`'s for a local store."""
    base = uri.rstrip("/") if uri.startswith(("http://", "https://")) else "http://127.0.0.1:5000"
    # without workflowType, MLflow 3's UI may open the run in its GenAI layout
    return redact_uri(f"{base}/#/experiments/{experiment_id}/runs/{run_id}?workflowType=machine_learning")


STORE_BUSY_SECONDS = 300  # how long a write waits for a SQLite store that another process holds


def store_busy(error: BaseException) -> bool:
    return "database is locked" in str(error)  # SQLite's answer once MLflow's 20 s busy timeout is over


def when_store_free(call, *args, what: str, **kwargs):
    """`call(*args, **kwargs)`, retried while the SQLite store is locked by another process (a long transaction, a
    backup, a `sqlite3` shell), for up to STORE_BUSY_SECONDS with a message; then its error is raised. A locked
    write changes nothing, so it can be repeated."""
    deadline, waited = time.monotonic() + STORE_BUSY_SECONDS, False
    while True:
        try:
            result = call(*args, **kwargs)
            if waited:
                log.info(f"the MLflow store is free again: {what} done")
            return result
        except Exception as error:
            if not store_busy(error) or time.monotonic() > deadline:
                raise
            if not waited:
                log.warning(f"the MLflow store is busy (another process holds its write lock): waiting up to "
                            f"{STORE_BUSY_SECONDS} s to {what}")
            waited = True
            time.sleep(2)


def store_error_text(error: BaseException) -> str:
    """What a store error says happened ("database or disk is full"), not SQLAlchemy's preamble around it."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    for line in lines:
        said = re.match(r"\([\w.]+\) (.+)", line)  # "(sqlite3.OperationalError) database or disk is full"
        if said:
            return redact_uri(said.group(1))
    return redact_uri(lines[0]) if lines else type(error).__name__
