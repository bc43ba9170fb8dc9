"""Sweeps: nested MLflow runs whatever the launcher, a tracking server end to end, and the fast failure on an
unreachable server (searches: test_search_runs.py). Tiny jobs on a tiny aclImdb written here."""

import io
import time
from pathlib import Path

import mlflow
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient
from omegaconf import OmegaConf

from seqlab.errors import ConfigError
from seqlab.redaction import safe_overrides
from seqlab.search.sweep import sweep_name, threads_per_job
from tests.conftest import compose_config, free_port, mlflow_server_at, run_seqlab, write_aclimdb


def own_data(folder: Path) -> dict:
    """The environment of a `seqlab` command that never reads the user's data (the tests pass dataset.path)."""
    return {"SEQLAB_DATA_DIR": str(folder)}


@pytest.fixture
def tiny_reviews(tmp_path) -> Path:
    return write_aclimdb(tmp_path / "data", per_class=20)  # 36 train / 4 validation / 40 test reviews


def runs_of(client: MlflowClient, experiment: str):
    return client.search_runs([client.get_experiment_by_name(experiment).experiment_id], max_results=100)


def split_runs(runs):
    parents = [r for r in runs if r.data.tags.get("sweep.role") == "parent"]
    children = [r for r in runs if r.data.tags.get("sweep.role") == "child"]
    return parents, children


# --- a tracking server, the joblib launcher, compare -------------------------------------------------------

@pytest.fixture
def mlflow_server(tmp_path):
    """`mlflow server` as `make server` starts it, on a free port; the whole process group stops at the end."""
    with mlflow_server_at(tmp_path, f"sqlite:///{tmp_path / 'server.db'}") as url:
        yield url


@pytest.mark.slow
def test_joblib_sweep_against_a_tracking_server(mlflow_server, tiny_reviews, tmp_path, monkeypatch, capsys):
    result = run_seqlab("train", "-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", "model.units=4,6",
                        f"dataset.path={tiny_reviews}", "debug=tiny", "trainer.epochs=2", "trainer.early_stopping=1",
                        "trainer.checkpoint=false", f"tracking.uri={mlflow_server}", "tracking.experiment=server_sweep",
                        "tracking.sweep=pair", "tracking.registered_model=pair_model", cwd=tmp_path,
                        env=own_data(tmp_path), timeout=540)
    assert result.returncode == 0, result.stderr[-3000:]

    client = MlflowClient(mlflow_server)
    monkeypatch.setattr(mlflow.tracking._tracking_service.utils, "_tracking_uri", mlflow_server)  # for models:/ lookups
    parents, children = split_runs(runs_of(client, "server_sweep"))
    [parent] = parents
    assert parent.info.status == "FINISHED"
    assert parent.data.tags["sweep"] == "pair" and parent.data.tags["sweep.launcher"] == "JoblibLauncher"
    assert "model.units=4,6" in parent.data.tags["sweep.overrides"]
    assert len(children) == 2 and {r.info.status for r in children} == {"FINISHED"}
    assert {r.data.tags["mlflow.parentRunId"] for r in children} == {parent.info.run_id}
    assert {r.data.params["model.units"] for r in children} == {"4", "6"}
    for run in children:
        assert run.data.tags["sweep"] == "pair"
        assert f"model.units={run.data.params['model.units']}" in run.data.tags["overrides"].split()
        assert run.info.run_name.startswith("lstm ") and f"units={run.data.params['model.units']}" in run.info.run_name
        assert 0 <= run.data.metrics["accuracy/test"] <= 1
        names = {a.path for a in client.list_artifacts(run.info.run_id)}
        assert {"config.yaml", "confusion_matrix.png", "learning_curves.png"} <= names
        model = mlflow.artifacts.download_artifacts(artifact_uri=f"runs:/{run.info.run_id}/model",
                                                    dst_path=str(tmp_path / run.info.run_id), tracking_uri=mlflow_server)
        assert (Path(model) / "MLmodel").is_file()
        config_text = Path(mlflow.artifacts.download_artifacts(
            artifact_uri=f"runs:/{run.info.run_id}/config.yaml", dst_path=str(tmp_path / run.info.run_id),
            tracking_uri=mlflow_server)).read_text()
        assert f"units: {run.data.params['model.units']}" in config_text
    # the server keeps the artifacts under its --artifacts-destination
    assert len(list((tmp_path / "artifacts").rglob("MLmodel"))) == 2

    from seqlab.cli.compare import main as compare_main  # in this process: a second interpreter would cost seconds

    capsys.readouterr()
    assert compare_main(["--tracking-uri", mlflow_server, "--sweep", "pair", "--format", "csv"]) == 0
    frame = pd.read_csv(io.StringIO(capsys.readouterr().out))
    assert sorted(frame["model.units"]) == [4, 6] and set(frame["model"]) == {"lstm"}
    assert frame["accuracy/test"].between(0, 1).all()

    # The parent summarises the sweep: the best child on accuracy/val at the epoch it kept (where it logged its
    # test metrics), ties to the lower loss/val, then to the earlier job; recomputed here from the histories.
    def at_kept_step(run, key):
        kept = client.get_metric_history(run.info.run_id, "accuracy/test")[0].step
        return [m.value for m in client.get_metric_history(run.info.run_id, key) if m.step == kept][-1]

    best = max(children, key=lambda r: (at_kept_step(r, "accuracy/val"), -at_kept_step(r, "loss/val"),
                                        -int(r.data.tags["sweep.job"])))
    parent = client.get_run(parent.info.run_id)
    tags = parent.data.tags
    assert tags["best_run_id"] == best.info.run_id and tags["best_run_name"] == best.info.run_name
    assert tags["best_metric"] == "accuracy/val"
    results = {key: value for key, value in best.data.metrics.items() if not key.startswith("system/")}
    assert parent.data.metrics == pytest.approx(results)  # its results, not its machine load
    assert parent.data.params == best.data.params
    assert [r.data.tags.get("sweep.best") for r in children if r.info.run_id != best.info.run_id] == [None]
    assert client.get_run(best.info.run_id).data.tags["sweep.best"] == "true"
    note = tags["mlflow.note.content"]
    assert "`model.units` over `4`, `6`" in note and "2 FINISHED" in note and best.info.run_name in note
    assert "seqlab compare --sweep pair" in note and "`pair_model` version" in note
    for run in children:  # each child's description names its sweep and what it varies
        assert "sweep **`pair`**" in run.data.tags["mlflow.note.content"]
        assert f"`model.units={run.data.params['model.units']}`" in run.data.tags["mlflow.note.content"]
    experiment_tags = client.get_experiment_by_name("server_sweep").tags
    assert "mlflow.note.content" in experiment_tags and experiment_tags["mlflow.experimentKind"] == "custom_model_development"
    assert {"comparison.csv", "comparison.md", "comparison.png"} <= {
        a.path for a in client.list_artifacts(parent.info.run_id)}
    summary = pd.read_csv(mlflow.artifacts.download_artifacts(run_id=parent.info.run_id, artifact_path="comparison.csv",
                                                              dst_path=str(tmp_path / "summary")))
    assert sorted(summary["model.units"]) == [4, 6]  # one row per variant, as seqlab compare --sweep pair

    # Registry: every child registered a version; the best child's is the champion, and predicts by that name.
    versions = client.search_model_versions("name='pair_model'")
    assert {v.run_id for v in versions} == {r.info.run_id for r in children}
    champion = client.get_model_version_by_alias("pair_model", "champion")
    assert champion.run_id == best.info.run_id and champion.tags["run_name"] == best.info.run_name
    assert client.get_registered_model("pair_model").description
    from seqlab.cli.predict import main as predict_main

    assert predict_main(["models:/pair_model@champion", "--text", "a wonderful film", "--tracking-uri",
                         mlflow_server]) == 0
    assert "a wonderful film" in capsys.readouterr().out


# --- fast failures, names, threads ------------------------------------------------------------------------

@pytest.mark.slow
def test_unreachable_server_fails_fast_before_any_work(tmp_path):
    from seqlab.workflow.train import train

    uri = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    cfg = compose_config([f"tracking.uri={uri}", f"dataset.path={tmp_path / 'missing'}", "debug=tiny"])
    started = time.monotonic()
    with pytest.raises(ConfigError, match="Cannot reach the MLflow tracking server"):
        train(cfg)  # a ConfigError, not the DataError of the missing data: nothing was loaded
    assert time.monotonic() - started < 60

    for args in (["train", f"tracking.uri={uri}"], ["train", "-m", "trainer.seed=1,2", f"tracking.uri={uri}"]):
        started = time.monotonic()
        result = run_seqlab(*args, cwd=tmp_path, env=own_data(tmp_path), timeout=120)
        assert time.monotonic() - started < 60, args
        assert result.returncode == 2, result.stderr
        assert f"Cannot reach the MLflow tracking server at tracking.uri='{uri}'" in result.stderr
        assert "Traceback" not in result.stderr and "Launching" not in result.stdout + result.stderr


@pytest.mark.unit
def test_registered_model_needs_a_logged_model_and_a_failed_registration_is_a_recording_error(monkeypatch):
    from types import SimpleNamespace

    from seqlab.record.naming import compared_params
    from seqlab.config.plan import resolve
    from seqlab.record.registry import register_model
    from seqlab.config.validate import validate
    from seqlab.errors import RecordingError

    cfg = compose_config(["tracking.registered_model=imdb_lstm"])
    validate(cfg)
    assert "tracking.registered_model" not in compared_params(cfg)  # where the model goes, not what it is
    with pytest.raises(ConfigError, match="tracking.log_model is false"):
        validate(compose_config(["tracking.registered_model=imdb_lstm", "tracking.log_model=false"]))

    def unreachable(*args, **kwargs):
        raise ConnectionError("registry unreachable")

    monkeypatch.setattr(mlflow, "register_model", unreachable)
    run = SimpleNamespace(info=SimpleNamespace(run_id="0123abcd", run_name="lstm"))
    with pytest.raises(RecordingError, match="register the model of MLflow run 0123abcd as 'imdb_lstm'.*unreachable"):
        register_model(resolve(cfg).record, run, None, {"accuracy/test": 0.5})


@pytest.mark.unit
def test_sweep_name_and_overrides_as_logged():
    config = OmegaConf.create({"tracking": {"sweep": None}, "hydra": {"sweep": {"dir": "multirun/2025-01-02/03-04-05"}}})
    assert sweep_name(config) == "2025-01-02_03-04-05"
    config.tracking.sweep = "seeds"
    assert sweep_name(config) == "seeds"
    assert safe_overrides(["model.units=4", "tracking.uri=http://ann:pw@host:5000", "+dataset.api_key=xyz"]) == [
        "model.units=4", "tracking.uri=http://<redacted>@host:5000", "+dataset.api_key=<redacted>"]


@pytest.mark.unit
def test_threads_per_job_share_the_cores_between_parallel_jobs():
    from joblib import cpu_count

    def launcher(**options):
        return OmegaConf.create({"hydra": {"launcher": options}})

    joblib_target = "hydra_plugins.hydra_joblib_launcher.joblib_launcher.JoblibLauncher"
    cores = cpu_count()
    assert threads_per_job(launcher(_target_=joblib_target, n_jobs=-1)) == 1  # one job per core
    assert threads_per_job(launcher(_target_=joblib_target, n_jobs=1)) == cores
    assert threads_per_job(launcher(_target_=joblib_target, n_jobs=2)) == max(1, cores // min(2, cores))
    local = "hydra_plugins.hydra_submitit_launcher.submitit_launcher.LocalLauncher"
    assert threads_per_job(launcher(_target_=local, cpus_per_task=3)) == 3
    assert threads_per_job(launcher(_target_="hydra._internal.core_plugins.basic_launcher.BasicLauncher")) is None


@pytest.mark.slow
@pytest.mark.parametrize("launcher", ["joblib", "submitit_local", "submitit_slurm"])
def test_launcher_presets_compose(launcher, tmp_path):
    result = run_seqlab("train", f"hydra/launcher={launcher}", "--cfg", "hydra", "-p", "hydra.launcher", cwd=tmp_path,
                        env=own_data(tmp_path))
    assert result.returncode == 0, result.stderr
    assert "_target_: hydra_plugins." in result.stdout
