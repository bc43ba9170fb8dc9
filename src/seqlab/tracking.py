"""MLflow glue: the store, the experiment, one run's lifecycle, tags and artifacts."""

from __future__ import annotations

import logging
import contextlib
import functools
import hashlib
import json
import os
import re
import signal
import subprocess
import threading
import time
import warnings
from pathlib import Path

import mlflow
import numpy as np
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from mlflow.utils.mlflow_tags import MLFLOW_RUN_NOTE
from omegaconf import DictConfig, OmegaConf

import seqlab
from seqlab.config import is_location_key, structured, to_flat_dict
from seqlab.jobs import child_description, current_job, current_trial, job_overrides, request_stop, stop_requested
from seqlab.errors import ConfigError, RecordingError, SeqlabError, Terminated
from seqlab.redaction import REDACTED, URI_CREDENTIALS, redact_uri, redacted, safe_overrides

log = logging.getLogger(__name__)
# MLflow logs every failed store write with its traceback, then raises it; seqlab reports what it raises, once.
logging.getLogger("mlflow.store.db.utils").addFilter(
    lambda record: not record.getMessage().startswith("SQLAlchemy database error"))
# MLflow's system-metrics monitor announces its start and stop at INFO on every run: noise beside seqlab's lines
logging.getLogger("mlflow.system_metrics").setLevel(logging.WARNING)

MAX_PARAM_LENGTH = 6000  # MLflow's limit on one param value
CHECKPOINT_PATH = "checkpoint"  # run artifact folder holding Keras' BackupAndRestore files



# Overrides a default run name leaves out: the model leads the name; presets and searches say nothing of what differs.
UNNAMED_OVERRIDES = ("model", "experiment", "hparams_search")


def compared_params(cfg: DictConfig) -> dict[str, object]:
    """The params that make a run what it is: every resolved key the run used, none of where things are, no nulls."""
    return {key: value for key, value in to_flat_dict(redacted(cfg)).items()
            if value is not None and not is_location_key(key)}


def seed_group(cfg: DictConfig) -> str:
    """Runs with the same config except `trainer.seed` share this id (MLflow UI: group by tag)."""
    kept = {key: value for key, value in compared_params(cfg).items() if key != "trainer.seed"}
    return hashlib.sha1(json.dumps(kept, sort_keys=True, default=str).encode()).hexdigest()[:12]


def default_run_name(cfg: DictConfig, overrides: list[str], swept: list[str] | None = None) -> str:
    """The model and the overrides that differ from its defaults: 'cnn_lstm dropout=0.2', 'hier_lstm metadata=true'
    (the last part of each key; where-things-are keys, presets and the model override left out). A sweep's child
    names only the keys its sweep varies (`swept`): what the rest say is the same for every child."""
    parts = [str(cfg.model.name)]
    for override in overrides:
        key, _, value = override.partition("=")
        key = key.lstrip("+~")
        if swept is not None and key not in swept:
            continue
        if key in UNNAMED_OVERRIDES or key.startswith("hydra") or is_location_key(key) or key.endswith("path"):
            continue  # files are where the data are (the dataset.* params say which), too long for a name
        parts.append(f"{key.rsplit('.', 1)[-1]}={_short(value)}")
    return re.sub(r"['\"\\]", "", " ".join(parts))[:250]  # quotes would need escaping in MLflow's search filters


def _short(value: str) -> str:
    """A sampled float as 4 significant digits (0.18727005942368125 -> 0.1873): a name to read; params keep it all."""
    if re.fullmatch(r"-?\d+\.\d{5,}(e-?\d+)?", value):
        return f"{float(value):.4g}"
    return value


def unique_run_name(experiment_id: str, name: str) -> str:
    """`name`, or `name (2)`, `name (3)`, ... where the experiment already has runs of that name."""
    taken = {run.info.run_name for run in MlflowClient().search_runs(
        [experiment_id], f"attributes.run_name LIKE '{name}%'", max_results=10000)}
    number = 1
    while (candidate := name if number == 1 else f"{name} ({number})") in taken:
        number += 1
    return candidate


_cv_fold: list = []  # (parent run id, fold) while seqlab.train.cross_validate trains a fold


@contextlib.contextmanager
def cv_parent(run_id: str, fold: int):
    _cv_fold[:] = [run_id, fold]
    try:
        yield
    finally:
        _cv_fold.clear()


def run_tags(cfg: DictConfig) -> dict[str, str]:
    """Tags of one training run: its seed group, its overrides, and its parent when in a sweep."""
    tags = {"seed_group": seed_group(cfg)}
    overrides = [o for o in job_overrides() if not is_location_key(o.partition("=")[0].lstrip("+~"))]
    if overrides:
        tags["overrides"] = " ".join(overrides)
    job = current_job()
    if _cv_fold:  # a cross-validation fold: nested under its cross-validation run, not under a sweep's parent
        tags.update({"mlflow.parentRunId": _cv_fold[0], "cv.role": "fold", "cv.fold": str(_cv_fold[1])})
    elif job is not None:
        tags.update({"mlflow.parentRunId": job.parent_run_id, "sweep": job.name, "sweep.role": "child",
                     "sweep.job": str(job.job)})
    trial = current_trial()
    if trial is not None:  # a search's trial: its study and number (seqlab.search)
        tags.update({"optuna.study": trial.study, "optuna.trial": str(trial.number)})
    return tags


def run_link(uri: str, experiment_id: str, run_id: str) -> str:
    """Where the run is in the MLflow UI: the tracking server's own page, or `make ui`'s for a local store."""
    base = uri.rstrip("/") if uri.startswith(("http://", "https://")) else "http://127.0.0.1:5000"
    # without workflowType, MLflow 3's UI may open the run in its GenAI layout
    return redact_uri(f"{base}/#/experiments/{experiment_id}/runs/{run_id}?workflowType=machine_learning")


def artifact_root_for(uri: str) -> str | None:
    """For a SQLite store, artifacts go beside the database (else MLflow uses ./mlruns of the cwd)."""
    if uri.startswith("sqlite:///"):
        database = Path(uri[len("sqlite:///"):]).expanduser()
        return (database.resolve().parent / "mlartifacts").as_uri()
    return None


def experiment_name(cfg: DictConfig) -> str:
    return cfg.tracking.experiment or cfg.dataset.name


def experiment_tags(cfg: DictConfig) -> dict[str, str]:
    """Its description, and its kind: without it, MLflow 3's UI opens a new experiment on its GenAI overview page
    instead of the runs table."""
    return {MLFLOW_RUN_NOTE: experiment_description(cfg), "mlflow.experimentKind": "custom_model_development"}


def experiment_description(cfg: DictConfig) -> str:
    """The experiment's description (markdown, shown above its runs in the MLflow UI): its data, how its runs are
    named and how they compare."""
    name = experiment_name(cfg)
    return (f"Runs of `seqlab train` on the dataset **{cfg.dataset.name}** (the runs' `dataset.*` params say where "
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


def configure(cfg: DictConfig) -> str:
    """Point MLflow at the store and return the experiment's id, creating the experiment if needed."""
    uri = cfg.tracking.uri
    check_no_inherited_run()
    check_reachable(uri)
    mlflow.set_tracking_uri(uri)
    job = current_job()
    if job is not None:  # a sweep's job: its run joins the parent's experiment, whatever the job's config says
        return job.experiment_id
    from sqlalchemy.exc import SQLAlchemyError

    try:
        with store_creation_lock(uri):
            return ensure_experiment(uri, experiment_name(cfg), experiment_tags(cfg))
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
    a tracking server that does not answer, an unusable SQLite path or file (seqlab.stores; `write`: the command
    records runs there), a database server that does not answer."""
    from seqlab.stores import check_store

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


def _git(*args: str) -> str | None:
    try:
        return subprocess.run(["git", *args], cwd=Path(seqlab.__file__).parent, text=True, capture_output=True,
                              timeout=5, check=True).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def source_tags(command: str = "seqlab train") -> dict[str, str]:
    """MLflow's standard source tags (the UI's Source and Version columns): the command, and the commit of seqlab's
    own checkout where it is one (MLflow would look at the script that started Python: pytest, hydra's launcher)."""
    tags = {"mlflow.source.name": command, "mlflow.source.type": "LOCAL", "seqlab_version": seqlab.__version__}
    commit = _git("rev-parse", "HEAD")
    if commit:
        tags["mlflow.source.git.commit"] = commit
        tags["mlflow.source.git.branch"] = _git("rev-parse", "--abbrev-ref", "HEAD") or ""
        tags["mlflow.source.git.repoURL"] = _git("config", "--get", "remote.origin.url") or ""
        if _git("status", "--porcelain", "--untracked-files=no"):
            tags["git_dirty"] = "true"  # the commit alone does not say what ran
    return {key: value for key, value in tags.items() if value}


def description(cfg: DictConfig, overrides: list[str]) -> str:
    """The run's description (`mlflow.note.content`, markdown in the UI): what ran, and how it was asked for."""
    command = " ".join(["seqlab train", *overrides])
    lines = [f"**{cfg.model.name}** on **{cfg.dataset.name}**, seed {cfg.trainer.seed}: `{command}`"]
    job = current_job()
    if job is not None:
        lines.append(child_description(job, overrides))
    lines.append("Params: what this run used (its options' keys and `derived.*` facts); the whole config is "
                 "`config.yaml`. Metrics: `<quantity>/<split>` per epoch (step = epoch index), test metrics once, at "
                 "the step of the epoch whose weights were tested.")
    return "\n\n".join(lines)


PRUNED_TAG = "optuna.state"  # PRUNED on a search's run that the pruner stopped; compare leaves those out


def mark_pruned(run, epochs: int, monitor: str) -> None:
    """A pruned trial's run ends FINISHED with its curves, and says at a glance that it was pruned: the state tag,
    a name starting "(pruned)", and a line in its description."""
    from mlflow.tracking import MlflowClient

    from seqlab.callbacks import named_failure

    note = MlflowClient().get_run(run.info.run_id).data.tags.get("mlflow.note.content", "")
    with named_failure(f"record that MLflow run {run.info.run_id} was pruned"):
        mlflow.set_tags({PRUNED_TAG: "PRUNED", "pruned_at_epoch": str(epochs),
                         "mlflow.runName": f"(pruned) {run.info.run_name}",  # first: names are cut in the UI
                         "mlflow.note.content": f"**Pruned** by the search's Optuna pruner after epoch {epochs}: its "
                                                f"`{monitor}` was behind the other trials' at that epoch. It has no test "
                                                f"metrics and no model; `seqlab compare --pruned` lists it.\n\n{note}"})


def start_system_metrics(run_id: str, resume: bool = False) -> None:
    """MLflow's system metrics for run `run_id` from now on, ended by mlflow.end_run. Started once the first epoch's
    metrics are logged: the MLflow UI's compare page plots a run's first-logged metric by default, which should be
    `accuracy/val`, not `system/cpu_utilization_percentage` or a data-loading time."""
    from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor
    from mlflow.tracking import fluent

    if run_id in fluent.run_id_to_system_metrics_monitor:
        return
    monitor = SystemMetricsMonitor(run_id, resume_logging=resume)
    fluent.run_id_to_system_metrics_monitor[run_id] = monitor  # where mlflow.end_run finds and stops it
    monitor.start()


def log_dataset(data) -> None:
    """The splits as MLflow dataset inputs (the UI's Dataset column): name, source, a digest of the examples read,
    rows, the schema (text, label, metadata columns) and the target. The digest covers every text and label of the
    split, so that two runs with the same digest read the same examples."""
    import mlflow.data
    import pandas as pd

    for context, split in (("train", data.train), ("validation", data.validation), ("test", data.test)):
        frame = pd.DataFrame({"text": split.texts, "label": [data.class_names[i] for i in split.labels]})
        for number, name in enumerate(data.metadata_names if split.metadata is not None else []):
            frame[name] = split.metadata[:, number]
        digest = hashlib.sha256()
        for text in split.texts:
            digest.update(text.encode("utf-8", "surrogatepass") + b"\0")
        digest.update(np.asarray(split.labels, np.int64).tobytes())
        with warnings.catch_warnings():  # MLflow registers two local sources for one path, and says so each time
            warnings.simplefilter("ignore")
            dataset = mlflow.data.from_pandas(frame, source=data.source or data.name, targets="label",
                                              name=data.name, digest=digest.hexdigest()[:16])
        for attempt in range(3):
            try:
                mlflow.log_input(dataset, context=context)
                break
            except MlflowException as error:  # parallel jobs inserting the same new dataset row: it exists now
                if attempt == 2 or not re.search(r"duplicate key|UNIQUE constraint", str(error), re.IGNORECASE):
                    raise


def join_run(run_id: str, **start_run_args):
    """mlflow.start_run(run_id=...) of an existing run, whatever experiment the process has active.

    start_run refuses a run of another experiment than one left active by mlflow.set_experiment (a notebook's, an
    earlier job's); set_experiment to the run's own would stay active after it (and in MLFLOW_EXPERIMENT_ID for child
    processes), so the check is skipped for this call only: MLflow has no public way to unset it.
    """
    from mlflow.tracking import fluent

    active, fluent._active_experiment_id = fluent._active_experiment_id, None
    try:
        return mlflow.start_run(run_id=run_id, **start_run_args)
    finally:
        fluent._active_experiment_id = active


@contextlib.contextmanager
def tracked_run(cfg: DictConfig, experiment_id: str, tags: dict[str, str], resume_run_id: str | None = None):
    """An MLflow run that always ends: FINISHED, FAILED (error message as a tag) or KILLED (Ctrl-C, SIGTERM).

    With `resume_run_id` the same run continues (back to RUNNING); its params and config.yaml stay as first
    logged, so the record still says how the run was started.
    """
    with interrupts_raised():
        if stop_requested():  # this worker of a sweep was told to stop while it loaded the job's data
            raise Terminated("SIGTERM")
        nested = mlflow.active_run() is not None
        if resume_run_id:
            run = join_run(resume_run_id, nested=nested, log_system_metrics=False)
        else:  # always named here: MLflow would draw a name from the seeded generator (the same one every run)
            job = current_job()
            name = cfg.tracking.run_name or unique_run_name(
                experiment_id, default_run_name(cfg, job_overrides(), job.swept if job else None))
            run = mlflow.start_run(experiment_id=experiment_id, run_name=name, nested=nested,
                                   log_system_metrics=False)  # started after the first epoch: start_system_metrics
        try:
            mlflow.set_tags({"dataset": cfg.dataset.name, "model": cfg.model.name, **source_tags(), **tags,
                             OWNER_TAG: process_owner()})
            if resume_run_id:
                with contextlib.suppress(MlflowException):  # the last interruption is over
                    MlflowClient().delete_tag(resume_run_id, "error")
            else:
                log_config(cfg)
                mlflow.set_tags(run_tags(cfg))  # seed group; overrides and parent run for CLI/sweep jobs
                mlflow.set_tag(MLFLOW_RUN_NOTE, description(cfg, safe_overrides(job_overrides())))
            yield run
            raise_if_interrupted()  # a Ctrl-C that nothing raised still ends the run KILLED
        except KeyboardInterrupt as error:
            job = current_job()
            if job is not None and job.in_launcher_worker:
                request_stop()  # a launcher's worker (joblib) starts no further job of the sweep
            _end(run.info.run_id, "KILLED",
                 "interrupted by SIGTERM" if isinstance(error, Terminated) else "interrupted (Ctrl-C)")
            raise
        except BaseException as error:
            ours = isinstance(error, SeqlabError)  # its message is amended below; others' get a line of their own
            unrecorded = _end(run.info.run_id, "FAILED", f"{type(error).__name__}: {error}", quiet=ours)
            if unrecorded and ours:  # its "marked FAILED" would not be true
                said = str(error).replace(" The run is marked FAILED;", "")
                error.args = (f"{said} The store took no more writes either ({unrecorded}): the run still "
                              f"shows RUNNING there; trainer.resume={run.info.run_id} continues it once the store "
                              "works again.",)
            raise
        else:
            end_run(run.info.run_id, "FINISHED")


def _end(run_id: str, status: str, message: str, quiet: bool = False) -> str | None:
    """End the run `status` with `message` as its error tag, and fail a model it was logging (left PENDING).
    A second Ctrl-C or SIGTERM (a process group's, a launcher's) waits until the run is ended. A store that takes no
    more writes (a full disk): returns what it said (logged too unless `quiet`), not a second traceback."""
    with interrupts_deferred():
        with contextlib.suppress(Exception):
            mlflow.set_tag("error", redact_uri(message)[:5000])
        with contextlib.suppress(Exception):
            fail_pending_models(run_id)
        try:
            end_run(run_id, status)
        except Exception as error:
            cause = store_error_text(error)
            if not quiet:
                log.error(f"Could not mark run {run_id} {status} in the MLflow store ({cause}); it shows RUNNING "
                          f"there; trainer.resume={run_id} continues it.")
            return cause
    return None


def store_error_text(error: BaseException) -> str:
    """What a store error says happened ("database or disk is full"), not SQLAlchemy's preamble around it."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    for line in lines:
        said = re.match(r"\([\w.]+\) (.+)", line)  # "(sqlite3.OperationalError) database or disk is full"
        if said:
            return redact_uri(said.group(1))
    return redact_uri(lines[0]) if lines else type(error).__name__


def end_run(run_id: str, status: str) -> None:
    """mlflow.end_run, whose run leaves the active stack even when the store refuses the write; the status write
    is then retried while the store is busy (seqlab.tracking.when_store_free)."""
    try:
        mlflow.end_run(status)
    except Exception as error:
        if not store_busy(error):
            raise
        when_store_free(MlflowClient().set_terminated, run_id, status, what=f"end run {run_id} {status}")


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


def fail_pending_models(run_id: str) -> None:
    """A model that was being logged when the run stopped stays PENDING (and listed) in MLflow: mark it FAILED."""
    from mlflow.entities import LoggedModelStatus

    client = MlflowClient()
    run = client.get_run(run_id)
    for model in client.search_logged_models([run.info.experiment_id], f"source_run_id = '{run_id}'"):
        if model.status == LoggedModelStatus.PENDING:
            client.finalize_logged_model(model.model_id, LoggedModelStatus.FAILED)


def _main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()  # only there can Python handle signals


_interrupted: list[int] = []  # signals received during the run, kept in case their exception was swallowed


def _raise_interrupt(signum: int, frame=None):
    if signum not in _interrupted:
        _interrupted.append(signum)
    raise Terminated("SIGTERM") if signum == signal.SIGTERM else KeyboardInterrupt


@contextlib.contextmanager
def _interrupt_handlers(handler):
    """`handler` for SIGINT and SIGTERM during the block, the previous ones after it (main thread only)."""
    if not _main_thread():
        yield
        return
    previous = {number: signal.signal(number, handler) for number in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for number, old in previous.items():
            signal.signal(number, old if old is not None else signal.SIG_DFL)


@contextlib.contextmanager
def interrupts_raised():
    """Ctrl-C raises KeyboardInterrupt and SIGTERM raises Terminated (one too) instead of killing the process on
    the spot, and both are remembered: TensorFlow's C++ fast path calls back into Python and drops what that
    raises (seen: Ctrl-C landing in TensorShape.__len__ while an epoch's iterator is made), so the trainer asks
    `raise_if_interrupted()` again at every batch."""
    _interrupted.clear()
    try:
        with _interrupt_handlers(_raise_interrupt):
            yield
    finally:
        _interrupted.clear()


def raise_if_interrupted() -> None:
    """Raise again a Ctrl-C or SIGTERM received during the run, in case something swallowed its exception."""
    if _interrupted:
        _raise_interrupt(_interrupted[0])


@contextlib.contextmanager
def interrupts_deferred():
    """Hold SIGINT and SIGTERM until the block ends, so that an epoch's metrics and checkpoint are written whole."""
    received: list[int] = []
    try:
        with _interrupt_handlers(lambda signum, frame: received.append(signum)):
            yield
    finally:
        if received:
            signal.raise_signal(received[0])  # delivered now, to the usual handler (KeyboardInterrupt/Terminated)


def log_config(cfg: DictConfig) -> None:
    """The params (what the run used, seqlab.tracking.compared_params) and the whole resolved config.yaml."""
    mlflow.log_params({key: _param_text(value) for key, value in compared_params(cfg).items()})
    mlflow.log_text(OmegaConf.to_yaml(redacted(cfg)), "config.yaml")


# --- trainer.resume ---------------------------------------------------------------------------------------
# Everything a resumed run needs lives in its own MLflow record: config.yaml (the config it started with),
# the data_fingerprint tag (same data, same vocabulary) and the checkpoint/ artifacts (weights, optimizer
# state, epochs done). So a run can be resumed from any machine that sees the store.

RESUME_OVERRIDABLE = ("trainer.resume", "trainer.takeover", "trainer.progress", "tracking.uri", "data_dir",
                      "cache_dir")
OWNER_TAG = "seqlab.owner"  # host:pid:start time of the process that trains the run (resume refuses a live one)


def process_owner(pid: int | None = None) -> str:
    """This process as a run's owner: its start time tells a live owner from a later process given the same pid."""
    import socket

    import psutil

    process = psutil.Process(pid)
    return f"{socket.gethostname()}:{process.pid}:{int(process.create_time())}"


def owner_parts(owner: str) -> tuple[str, str, str]:
    """host, pid and start time of a `process_owner` value ('' for what a malformed one lacks)."""
    host, pid, started = (owner.rsplit(":", 2) + ["", ""])[:3]
    return host, pid, started


def owner_state(owner: str) -> str:
    """'alive' or 'gone' for an owner on this host, 'elsewhere' for one on another host (unknowable from here)."""
    import socket

    import psutil

    host, pid, started = owner_parts(owner)
    if host != socket.gethostname():
        return "elsewhere"
    try:
        alive = int(psutil.Process(int(pid)).create_time()) == int(started)
    except (psutil.Error, ValueError):  # no such process (any more)
        alive = False
    return "alive" if alive else "gone"


def check_not_trained_elsewhere(cfg: DictConfig, run) -> None:
    """A RUNNING run may be resumed only when the process that trained it is gone: two processes writing into one
    run would duplicate its epochs, test metrics and model. Raises ConfigError."""
    run_id, owner = run.info.run_id, run.data.tags.get(OWNER_TAG)
    if owner is None:  # a run of an earlier seqlab: no owner recorded
        log.warning(f"run {run_id} is marked {run.info.status}: its process died without ending it, or is still "
                    "running (then stop it first).")
        return
    if owner == process_owner():  # this process, whose earlier attempt could not end the run (a full disk)
        return
    host, pid, _ = owner_parts(owner)
    state = owner_state(owner)
    if state == "alive":
        raise ConfigError(f"Config key 'trainer.resume' is {run_id!r}, a run that process {pid} on this host is still "
                          f"training. Stop it first (kill -TERM {pid} ends the run KILLED, resumable from its last "
                          "epoch) or wait for it to end.")
    if state == "elsewhere" and not cfg.trainer.takeover:
        raise ConfigError(f"Config key 'trainer.resume' is {run_id!r}, a run marked {run.info.status} by process {pid} "
                          f"on host {host!r}, which cannot be checked from here. If that process is gone (its machine "
                          "or job was killed), add trainer.takeover=true to continue the run here; if it still trains, "
                          "stop it first: two processes writing into one run duplicate its epochs.")
    log.info(f"run {run_id} is marked {run.info.status} but its process ({pid} on {host}) is gone: continuing it here")


def resumable_run(cfg: DictConfig):
    """The run `trainer.resume` names, checked to be one that can continue. Raises ConfigError."""
    run_id, uri = cfg.trainer.resume, cfg.tracking.uri
    check_no_inherited_run()
    check_reachable(uri)
    mlflow.set_tracking_uri(uri)
    try:
        run = MlflowClient().get_run(run_id)
    except MlflowException as error:
        if error.error_code != "RESOURCE_DOES_NOT_EXIST" and "not found" not in str(error).lower():
            raise ConfigError(f"Cannot read run {run_id!r} from the MLflow store tracking.uri={redact_uri(uri)!r}: "
                              f"{redact_uri(str(error).splitlines()[0])}") from None
        raise ConfigError(f"Config key 'trainer.resume' is {run_id!r}, but the MLflow store at {redact_uri(uri)} "
                          "(tracking.uri) has no run with that id. Use the id 'seqlab train' printed "
                          "('seqlab: MLflow run <id> ...') or the one shown in the MLflow UI.") from None
    if run.info.lifecycle_stage == "deleted":
        raise ConfigError(f"Config key 'trainer.resume' is {run_id!r}, a deleted run; restore it in the MLflow UI "
                          "first.")
    if run.info.status == "FINISHED":
        raise ConfigError(f"Config key 'trainer.resume' is {run_id!r}, a run that already FINISHED: there is "
                          "nothing to resume. Start a new run instead (without trainer.resume).")
    if run.info.status in ("RUNNING", "SCHEDULED"):
        check_not_trained_elsewhere(cfg, run)
    return run


def resumed_config(cfg: DictConfig, run) -> DictConfig:
    """The config the run started with (its config.yaml), with where-things-are keys taken from `cfg`."""
    run_id = run.info.run_id
    _refuse_other_overrides(run_id)
    try:
        text = mlflow.artifacts.load_text(f"{run.info.artifact_uri}/config.yaml")
    except Exception:  # MLflow raises several types for a missing artifact
        raise ConfigError(f"Config key 'trainer.resume' is {run_id!r}, a run without config.yaml: it was not "
                          "started by 'seqlab train' and cannot be resumed.") from None
    try:
        stored = structured(OmegaConf.to_container(OmegaConf.create(text)))
    except Exception as error:  # OmegaConf's errors for keys or types that this version does not know
        raise ConfigError(f"Run {run_id}'s config.yaml does not fit this seqlab version's config schema "
                          f"({str(error).splitlines()[0]}); resume it with the version that started it "
                          f"(tag seqlab_version {run.data.tags.get('seqlab_version', '?')}).") from None
    for key, value in to_flat_dict(stored).items():
        if value == REDACTED or key in RESUME_OVERRIDABLE:
            OmegaConf.update(stored, key, OmegaConf.select(cfg, key), merge=False)
    return stored


def _refuse_other_overrides(run_id: str) -> None:
    """On the command line, only where things are may change: the run continues with its own config."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return
    keys = [override.split("=", 1)[0].lstrip("+~") for override in HydraConfig.get().overrides.task]
    others = [key for key in keys if key not in RESUME_OVERRIDABLE]
    if others:
        raise ConfigError(f"trainer.resume={run_id} continues that run with the config it was started with; drop "
                          f"the other overrides ({', '.join(others)}). Only {', '.join(RESUME_OVERRIDABLE)} may "
                          "be given with it.")


def download_checkpoint(run_id: str, destination: Path) -> int:
    """Copy the run's last checkpoint into `destination`/checkpoint; returns its number of finished epochs."""
    try:
        if not MlflowClient().list_artifacts(run_id, CHECKPOINT_PATH):
            return 0  # killed in its first epoch: nothing was backed up yet
        mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=CHECKPOINT_PATH, dst_path=str(destination))
        return int(json.loads((destination / CHECKPOINT_PATH / "training_metadata.json").read_text())["epoch"])
    except (MlflowException, OSError, ValueError, KeyError) as error:  # restarting from epoch 0 would hide it
        raise RecordingError(f"Could not read the checkpoint of run {run_id} (its {CHECKPOINT_PATH}/ artifacts): "
                             f"{type(error).__name__}: {redact_uri(str(error))}. Resume again once the store is "
                             "readable, or start a new run.") from None


def delete_checkpoint(run_id: str) -> None:
    """A FINISHED run cannot be resumed: its checkpoint would only take space. Best effort."""
    from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

    with contextlib.suppress(Exception):  # some artifact stores cannot delete
        get_artifact_repository(MlflowClient().get_run(run_id).info.artifact_uri).delete_artifacts(CHECKPOINT_PATH)


def register_model(cfg: DictConfig, run, model_uri: str | None, metrics: dict[str, float]) -> None:
    """A new version of the registered model `tracking.registered_model` from the run's logged model, tagged with
    the run, model and dataset. A failure raises RecordingError (the run ends FAILED)."""
    from seqlab.callbacks import named_failure  # it imports Keras, which the sweep's own process never loads

    name, run_id, run_name = cfg.tracking.registered_model, run.info.run_id, run.info.run_name
    tags = {"run_name": run_name, "model": cfg.model.name, "dataset": cfg.dataset.name}
    job = current_job()
    if job is not None:
        tags["sweep"] = job.name
    scores = ", ".join(f"{key} {value:.4f}" for key, value in metrics.items() if key.endswith("/test"))
    with named_failure(f"register the model of MLflow run {run_id} as {name!r} in the model registry",
                       "The registry needs a database store (sqlite:///, postgresql://) or a tracking server."):
        version = mlflow.register_model(model_uri or f"runs:/{run_id}/model", name, tags=tags)
        client = MlflowClient()
        client.update_model_version(name, version.version, description=(
            f"`{run_name}`: {cfg.model.name} trained on {cfg.dataset.name} by run `{run_id}`"
            + (f" in sweep `{job.name}`" if job else "") + f" ({scores or 'no test metrics'}). Takes raw text: "
            f"`seqlab predict models:/{name}/{version.version} --text \"...\"`."))
        if not client.get_registered_model(name).description:
            client.update_registered_model(name, description=(
                f"Text classifiers trained by seqlab (`seqlab train tracking.registered_model={name}`), one version "
                "per run: the network with its text preprocessing, so it predicts from raw strings (class names in "
                "its metadata). Alias `champion`: the best child of the latest sweep that registered here, chosen "
                f"on the validation metric. `seqlab predict models:/{name}@champion --text \"...\"`."))
    log.info(f"registered model {name!r} version {version.version} (run {run_name!r})")


def metric_history(run_id: str, keys) -> dict[str, list[float]]:
    """{metric: values by step} as logged in the run (the last value where a step was logged twice)."""
    client = MlflowClient()
    history = {}
    for key in keys:
        by_step = {m.step: m.value for m in sorted(client.get_metric_history(run_id, key),
                                                   key=lambda m: (m.step, m.timestamp))}
        if by_step:
            history[key] = [by_step[step] for step in sorted(by_step)]
    return history


def _param_text(value) -> str:
    text = "null" if value is None else str(value)
    return text if len(text) <= MAX_PARAM_LENGTH else text[: MAX_PARAM_LENGTH - 3] + "..."
