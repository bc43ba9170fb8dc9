"""Sweeps: nested MLflow runs whatever the launcher, a tracking server end to end, a resumable Optuna
search, and the fast failure on an unreachable server. Tiny jobs on a tiny aclImdb written here."""

import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import mlflow
import optuna
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient
from omegaconf import OmegaConf

from seqlab.errors import ConfigError
from seqlab.sweep import safe_overrides, sweep_name, threads_per_job
from tests.conftest import compose_config, default_sigint, free_port, mlflow_server_at, write_aclimdb

SMALL_INPUTS = ["preprocess.max_length=20", "preprocess.vocab_size=200", "model.embedding_dim=4", "trainer.epochs=1"]
TINY = [*SMALL_INPUTS, "model.units=4", "trainer.batch_size=16"]


def seqlab(*args: str, cwd: Path, timeout: float = 300, **options) -> subprocess.CompletedProcess:
    env = {**os.environ, "SEQLAB_DATA_DIR": str(cwd)}  # never the user's data; tests pass dataset.path
    return subprocess.run([sys.executable, "-m", "seqlab.cli", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=timeout, **options)


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
    two_epochs = [o for o in SMALL_INPUTS if not o.startswith("trainer.epochs=")] + ["trainer.epochs=2"]
    result = seqlab("train", "-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", "model.units=4,6",
                    f"dataset.path={tiny_reviews}", *two_epochs, "trainer.early_stopping=1", "trainer.checkpoint=false",
                    f"tracking.uri={mlflow_server}", "tracking.experiment=server_sweep", "tracking.sweep=pair",
                    "tracking.registered_model=pair_model", cwd=tmp_path, timeout=540)
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

    from seqlab.compare import main as compare_main  # in this process: a second interpreter would cost seconds

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
    from seqlab.predict import main as predict_main

    assert predict_main(["models:/pair_model@champion", "--text", "a wonderful film", "--tracking-uri",
                         mlflow_server]) == 0
    assert "a wonderful film" in capsys.readouterr().out


# --- Optuna: interrupted after two trials, resumed, three in all; pruned trials; two workers ----------------

def study_trials(path: Path, name: str) -> list:
    """The study's trials as the journal holds them now ([] before the worker created the study)."""
    from seqlab.search import open_storage

    if not path.exists():
        return []
    try:
        return optuna.load_study(study_name=name, storage=open_storage(str(path))).trials
    except KeyError:
        return []


@pytest.mark.slow
def test_optuna_search_resumes_after_an_interruption(tiny_reviews, tmp_path):
    from seqlab.search import counted

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    command = [sys.executable, "-m", "seqlab.cli", "train", "-m", "hparams_search=optuna", "hydra.sweeper.n_trials=3",
               "tracking.sweep=search", f"tracking.uri={uri}", "tracking.experiment=search", "tracking.log_model=false",
               f"dataset.path={tiny_reviews}", *SMALL_INPUTS]  # the search space's keys left to the sampler
    journal = tmp_path / "optuna" / "search" / "search.log"  # next to the MLflow store
    log = (tmp_path / "first.log").open("w")
    first = subprocess.Popen(command, cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                             preexec_fn=default_sigint)
    try:
        deadline = time.monotonic() + 420
        while [t.state.name for t in study_trials(journal, "search")] != ["COMPLETE", "COMPLETE", "RUNNING"]:
            assert first.poll() is None, (tmp_path / "first.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "two trials did not finish in time"
            time.sleep(0.1)
        os.killpg(first.pid, signal.SIGINT)  # Ctrl-C during the third trial
        first.wait(timeout=120)
    finally:
        if first.poll() is None:
            os.killpg(first.pid, signal.SIGKILL)
        log.close()
    assert first.returncode != 0
    trials = study_trials(journal, "search")
    assert [t.state.name for t in trials] == ["COMPLETE", "COMPLETE", "FAIL", "WAITING"]  # the third queued again
    assert trials[3].params == trials[2].params and not counted(trials[2])
    client = MlflowClient(uri)
    [parent], children = split_runs(runs_of(client, "search"))
    assert parent.info.status in ("KILLED", "FAILED")  # never left RUNNING
    assert "RUNNING" not in {r.info.status for r in children}
    # summarised from the two trials that finished, the champion left alone (none here: no registry)
    assert parent.data.tags["best_run_id"] in {r.info.run_id for r in children if r.info.status == "FINISHED"}
    assert f"ended {parent.info.status} before all its jobs finished" in parent.data.tags["mlflow.note.content"]

    second = seqlab(*command[3:], cwd=tmp_path, timeout=420)
    assert second.returncode == 0, second.stderr[-3000:]
    output = second.stdout + second.stderr
    assert "2 of 3 trials finished before" in output
    assert output.count("Launching 1 jobs locally") == 1  # only the interrupted trial ran again
    assert "SEQLAB_TRIAL" not in output  # Hydra's job lines leave the trial's address out

    trials = [t for t in study_trials(journal, "search") if counted(t)]
    assert [t.number for t in trials] == [0, 1, 3] and {t.state.name for t in trials} == {"COMPLETE"}
    [parent], children = split_runs(runs_of(client, "search"))  # the same parent, continued
    finished = [r for r in children if r.info.status == "FINISHED"]
    assert parent.info.status == "FINISHED" and len(finished) == 3
    assert {r.data.tags["mlflow.parentRunId"] for r in children} == {parent.info.run_id}  # no run nested in another
    assert sorted(r.data.tags["optuna.trial"] for r in finished) == ["0", "1", "3"]
    assert {r.data.tags["sweep.job"] for r in finished} == {"0", "1", "3"}  # a search's jobs are numbered as trials
    for run in finished:  # what the sampler chose is in each child's params, within the preset's space
        assert 0 <= float(run.data.params["model.dropout"]) <= 0.5
        assert run.data.params["model.units"] in {"32", "64", "100", "128"}
        assert run.data.params["trainer.batch_size"] in {"32", "64", "128"}
        assert run.data.params["optimized_metric"] == "accuracy/val"
        assert run.data.tags["optuna.study"] == "search"
    best = max(trials, key=lambda t: t.value)
    tags = parent.data.tags
    assert float(tags["best_value"]) == best.value and json.loads(tags["best_params"]) == best.params
    assert tags["best_run_id"] in {r.info.run_id for r in finished}
    best_run = client.get_run(tags["best_run_id"])
    # the objective: the validation accuracy of the model as kept (the last epoch: no early stopping here)
    history = client.get_metric_history(best_run.info.run_id, "accuracy/val")
    assert max(history, key=lambda m: m.step).value == best.value
    [results] = list(tmp_path.glob("multirun/*/*/optimization_results.yaml"))
    assert OmegaConf.load(results).best_value == best.value


@pytest.mark.slow
def test_pruned_trials_keep_their_curves_and_compare_leaves_them_out(tiny_reviews, tmp_path, capsys):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    two_epochs = [o for o in SMALL_INPUTS if not o.startswith("trainer.epochs=")] + ["trainer.epochs=2"]
    # a pruner that stops every trial after its first epoch: below 2.0 accuracy, always
    result = seqlab("train", "-m", "hparams_search=optuna", "hydra.sweeper.n_trials=2", "tracking.sweep=pruned",
                    "hydra.sweeper.pruner={_target_:optuna.pruners.ThresholdPruner,lower:2.0}", f"tracking.uri={uri}",
                    "tracking.experiment=pruning", f"dataset.path={tiny_reviews}", *two_epochs, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "pruned after epoch 1" in result.stderr and "has no completed trial" in result.stderr
    client = MlflowClient(uri)
    [parent], children = split_runs(runs_of(client, "pruning"))
    assert len(children) == 2
    for run in children:
        assert run.info.status == "FINISHED" and run.data.tags["optuna.state"] == "PRUNED"
        assert run.info.run_name.endswith("(pruned)") and "**Pruned**" in run.data.tags["mlflow.note.content"]
        assert [m.step for m in client.get_metric_history(run.info.run_id, "accuracy/val")] == [0]  # its curve
        assert "accuracy/test" not in run.data.metrics  # never touched the test split
        assert {a.path for a in client.list_artifacts(run.info.run_id)} >= {"learning_curves.png"}
        assert "model" not in {a.path for a in client.list_artifacts(run.info.run_id)}
    assert "2 PRUNED" in parent.data.tags["sweep.children"] and "best_run_id" not in parent.data.tags

    from seqlab.compare import main as compare_main

    capsys.readouterr()
    assert compare_main(["--tracking-uri", uri, "--experiment", "pruning", "--format", "csv"]) == 1  # none finished
    assert compare_main(["--tracking-uri", uri, "--experiment", "pruning", "--format", "csv", "--pruned",
                         "--metric", "accuracy/val"]) == 0
    frame = pd.read_csv(io.StringIO(capsys.readouterr().out))
    assert list(frame["status"]) == ["PRUNED", "PRUNED"]


@pytest.mark.slow
def test_two_search_workers_share_one_study_and_one_parent(tiny_reviews, tmp_path):
    from seqlab.search import counted

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    args = ["train", "-m", "hparams_search=optuna", "hydra.sweeper.n_trials=4", "tracking.sweep=shared",
            f"tracking.uri={uri}", "tracking.experiment=shared", "tracking.log_model=false",
            "tracking.system_metrics=false", f"dataset.path={tiny_reviews}", *TINY]
    env = {**os.environ, "SEQLAB_DATA_DIR": str(tmp_path), "TF_NUM_INTRAOP_THREADS": "1"}
    logs = [(tmp_path / f"worker{i}.log").open("w") for i in range(2)]
    workers = []
    for i, log in enumerate(logs):
        workers.append(subprocess.Popen([sys.executable, "-m", "seqlab.cli", *args, f"hydra.sweep.dir=multirun/w{i}"],
                                        cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT))
        time.sleep(0.5)  # both start at once: one new store, one study, one parent between them
    try:
        for worker in workers:
            worker.wait(timeout=540)
    finally:
        for worker, log in zip(workers, logs):
            if worker.poll() is None:
                worker.kill()
            log.close()
    outputs = [(tmp_path / f"worker{i}.log").read_text() for i in range(2)]
    assert [w.returncode for w in workers] == [0, 0], outputs[0][-2000:] + outputs[1][-2000:]
    trials = [t for t in study_trials(tmp_path / "optuna" / "shared" / "shared.log", "shared") if counted(t)]
    assert len(trials) == 4 and {t.state.name for t in trials} == {"COMPLETE"}
    assert len({json.dumps(t.params, sort_keys=True) for t in trials}) == 4  # no trial twice
    ran = [int(out.split("trials ran in this worker")[0].rsplit("'shared': ", 1)[-1]) for out in outputs]
    assert sum(ran) == 4 and min(ran) >= 1, ran
    client = MlflowClient(uri)
    [parent], children = split_runs(runs_of(client, "shared"))  # one parent for both workers
    assert len(children) == 4 and {r.info.status for r in children} == {"FINISHED"}
    assert {r.data.tags["mlflow.parentRunId"] for r in children} == {parent.info.run_id}
    assert sorted(int(r.data.tags["optuna.trial"]) for r in children) == sorted(t.number for t in trials)
    assert parent.info.status == "FINISHED" and "4 FINISHED" in parent.data.tags["sweep.children"]


# --- fast failures, names, threads ------------------------------------------------------------------------

def test_unreachable_server_fails_fast_before_any_work(tmp_path):
    from seqlab.train import train

    uri = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    cfg = compose_config([f"tracking.uri={uri}", f"dataset.path={tmp_path / 'missing'}", *TINY])
    started = time.monotonic()
    with pytest.raises(ConfigError, match="Cannot reach the MLflow tracking server"):
        train(cfg)  # a ConfigError, not the DataError of the missing data: nothing was loaded
    assert time.monotonic() - started < 30

    for args in (["train", f"tracking.uri={uri}"], ["train", "-m", "trainer.seed=1,2", f"tracking.uri={uri}"]):
        started = time.monotonic()
        result = seqlab(*args, cwd=tmp_path, timeout=120)
        assert time.monotonic() - started < 30, args
        assert result.returncode == 2, result.stderr
        assert f"Cannot reach the MLflow tracking server at tracking.uri='{uri}'" in result.stderr
        assert "Traceback" not in result.stderr and "Launching" not in result.stdout + result.stderr


def test_registered_model_needs_a_logged_model_and_a_failed_registration_is_a_recording_error(monkeypatch):
    from types import SimpleNamespace

    from seqlab import tracking
    from seqlab.config import validate
    from seqlab.errors import RecordingError

    cfg = compose_config(["tracking.registered_model=imdb_lstm"])
    validate(cfg)
    assert "tracking.registered_model" not in tracking.compared_params(cfg)  # where the model goes, not what it is
    with pytest.raises(ConfigError, match="tracking.log_model is false"):
        validate(compose_config(["tracking.registered_model=imdb_lstm", "tracking.log_model=false"]))

    def unreachable(*args, **kwargs):
        raise ConnectionError("registry unreachable")

    monkeypatch.setattr(mlflow, "register_model", unreachable)
    run = SimpleNamespace(info=SimpleNamespace(run_id="0123abcd", run_name="lstm"))
    with pytest.raises(RecordingError, match="register the model of MLflow run 0123abcd as 'imdb_lstm'.*unreachable"):
        tracking.register_model(cfg, run, None, {"accuracy/test": 0.5})


def test_sweep_name_and_overrides_as_logged():
    config = OmegaConf.create({"tracking": {"sweep": None}, "hydra": {"sweep": {"dir": "multirun/2025-01-02/03-04-05"}}})
    assert sweep_name(config) == "2025-01-02_03-04-05"
    config.tracking.sweep = "seeds"
    assert sweep_name(config) == "seeds"
    assert safe_overrides(["model.units=4", "tracking.uri=http://ann:pw@host:5000", "+dataset.api_key=xyz"]) == [
        "model.units=4", "tracking.uri=http://<redacted>@host:5000", "+dataset.api_key=<redacted>"]


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


@pytest.mark.parametrize("launcher", ["joblib", "submitit_local", "submitit_slurm"])
def test_launcher_presets_compose(launcher, tmp_path):
    result = seqlab("train", f"hydra/launcher={launcher}", "--cfg", "hydra", "-p", "hydra.launcher", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "_target_: hydra_plugins." in result.stdout
