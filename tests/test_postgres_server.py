"""A tracking server on PostgreSQL, as `make server DB=postgres` runs it: a real cluster started by scripts/postgres.sh,
`mlflow server` on it with two workers, and four parallel jobs writing to it at once, every run recorded whole.

Skipped where PostgreSQL or its driver is missing (the reason says how to install it); under CI (CI=true) it fails
instead, since .ci/run installs PostgreSQL."""

import glob
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from tests.conftest import REPO, free_port, mlflow_server_at, run_seqlab, write_aclimdb

pytestmark = pytest.mark.slow

SCRIPT = REPO / "scripts" / "postgres.sh"
EPOCHS = 2
TINY = ["debug=tiny", f"trainer.epochs={EPOCHS}"]
SEEDS = (1, 2, 3, 4)


def unavailable(reason: str):
    """Skip, naming what is missing; under CI a missing PostgreSQL is a failure, not a skip."""
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(f"{reason} (CI=true: it must run there; .ci/run installs PostgreSQL)")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def postgres():
    """A fresh cluster on a free port; its SQLAlchemy URL. Stopped and removed at the end."""
    try:
        import psycopg2  # noqa: F401  (MLflow's driver for postgresql:// stores)
    except ImportError:
        unavailable("psycopg2 is not installed: pip install -e '.[server]' (make install does)")
    if not (glob.glob("/usr/lib/postgresql/*/bin/initdb") or shutil.which("initdb")):
        unavailable("PostgreSQL is not installed: apt-get install postgresql (.ci/run does this)")
    # As root the cluster belongs to the `postgres` user, who must reach the folder: a fresh one in /tmp, o+x.
    base = Path(tempfile.mkdtemp(prefix="seqlab-pg-"))
    base.chmod(0o711)
    cluster = base / "pg"
    try:
        started = subprocess.run(["bash", str(SCRIPT), "start", str(cluster), str(free_port())], capture_output=True,
                                 text=True, timeout=120)
        if started.returncode != 0:
            unavailable(f"PostgreSQL did not start (scripts/postgres.sh): {started.stderr[-1500:]}")
        url = started.stdout.strip().splitlines()[-1]
        assert url.startswith("postgresql+psycopg2://mlflow@127.0.0.1:"), started.stdout
        yield url
    finally:
        subprocess.run(["bash", str(SCRIPT), "stop", str(cluster)], capture_output=True, timeout=120)
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="module")
def tracking_server(postgres, tmp_path_factory):
    """`mlflow server` on the cluster, two worker processes, artifacts in a folder of its own; (url, that folder)."""
    folder = tmp_path_factory.mktemp("pg-server")
    with mlflow_server_at(folder, postgres, workers=2) as url:
        yield url, folder / "artifacts"


def test_four_parallel_jobs_on_a_postgres_server_lose_nothing(postgres, tracking_server, tmp_path):
    import sqlalchemy

    url, artifacts = tracking_server
    reviews = write_aclimdb(tmp_path / "data", per_class=20)
    result = run_seqlab("train", "-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=4",
                        f"trainer.seed={','.join(map(str, SEEDS))}", f"dataset.path={reviews}", *TINY,
                        "trainer.checkpoint=false", "tracking.log_model=false", f"tracking.uri={url}",
                        "tracking.experiment=pg_parallel", "tracking.sweep=four", cwd=tmp_path,
                        env={"SEQLAB_DATA_DIR": str(tmp_path)})  # never the user's data: dataset.path names it
    assert result.returncode == 0, result.stderr[-3000:]

    client = MlflowClient(url)
    experiment = client.get_experiment_by_name("pg_parallel")
    runs = client.search_runs([experiment.experiment_id], max_results=100)
    parents = [r for r in runs if r.data.tags.get("sweep.role") == "parent"]
    children = [r for r in runs if r.data.tags.get("sweep.role") == "child"]
    assert len(runs) == 5 and len(parents) == 1 and len(children) == 4
    [parent] = parents
    assert {r.info.status for r in runs} == {"FINISHED"}
    assert parent.data.tags["sweep"] == "four" and parent.data.tags["sweep.launcher"] == "JoblibLauncher"
    assert "4 FINISHED" in parent.data.tags["sweep.children"]
    assert {r.data.tags["mlflow.parentRunId"] for r in children} == {parent.info.run_id}
    assert sorted(int(r.data.params["trainer.seed"]) for r in children) == list(SEEDS)
    assert len({frozenset(r.data.params) for r in children}) == 1  # the same keys for every job: none dropped
    for run in children:
        assert run.data.params["model.name"] == "lstm" and run.data.params["trainer.epochs"] == str(EPOCHS)
        assert 0 <= run.data.metrics["accuracy/test"] <= 1
        for key in ("loss/train", "loss/val", "accuracy/val"):  # every epoch of every job
            assert [m.step for m in client.get_metric_history(run.info.run_id, key)] == list(range(EPOCHS)), key
        assert "config.yaml" in {a.path for a in client.list_artifacts(run.info.run_id)}
    assert len(list(artifacts.rglob("config.yaml"))) >= 4  # through the server, into its artifact folder

    # The same, read from PostgreSQL itself: the runs are there, and no local store was written instead.
    engine = sqlalchemy.create_engine(postgres)
    try:
        with engine.connect() as db:
            statuses = db.execute(sqlalchemy.text(
                "SELECT r.status FROM runs r JOIN experiments e ON r.experiment_id = e.experiment_id "
                "WHERE e.name = 'pg_parallel'")).scalars().all()
            epochs_logged = dict(db.execute(sqlalchemy.text(
                "SELECT run_uuid, count(*) FROM metrics WHERE key = 'loss/train' GROUP BY run_uuid")).all())
    finally:
        engine.dispose()
    assert sorted(statuses) == ["FINISHED"] * 5
    assert [epochs_logged.get(r.info.run_id) for r in children] == [EPOCHS] * 4
    assert not (tmp_path / "mlflow.db").exists() and not (tmp_path / "mlruns").exists()


def test_two_search_workers_share_a_study_in_postgres(postgres, tmp_path):
    """hparams_search.storage=postgresql://... (the `optuna` database scripts/postgres.sh creates): two worker
    processes, exactly n_trials distinct trials."""
    import optuna

    from seqlab.search.study import counted, open_storage
    from tests.test_search import start_worker

    url = postgres.replace("/mlflow?", "/optuna?")
    workers = [start_worker(tmp_path, url, 6, 0.3) for _ in range(2)]
    outputs = [worker.communicate(timeout=180)[0] for worker in workers]
    assert [worker.returncode for worker in workers] == [0, 0], outputs
    trials = [t for t in optuna.load_study(study_name="toy", storage=open_storage(url)).trials if counted(t)]
    assert len(trials) == 6 and {t.state.name for t in trials} == {"COMPLETE"}
    assert len({t.params["x"] for t in trials}) == 6
    assert all(int(output.split("ran ")[-1]) >= 1 for output in outputs), outputs
