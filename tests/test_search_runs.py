"""Optuna searches end to end (seqlab train -m hparams_search=optuna): interrupted and resumed, two workers on one
study with pruning. The worker loop alone, on toy objectives: test_search.py."""

import io
import json
import os
import signal
import subprocess
import time
from pathlib import Path

import optuna
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient
from omegaconf import OmegaConf

from tests.conftest import default_sigint
from tests.conftest import run_seqlab, seqlab_command
from tests.test_sweeps import own_data, runs_of, split_runs, tiny_reviews  # noqa: F401 (fixture)

pytestmark = pytest.mark.slow


# --- Optuna: interrupted after two trials, resumed, three in all; pruned trials; two workers ----------------

def study_trials(path: Path, name: str) -> list:
    """The study's trials as the journal holds them now ([] before the worker created the study)."""
    from seqlab.search.study import open_storage

    if not path.exists():
        return []
    try:
        return optuna.load_study(study_name=name, storage=open_storage(str(path))).trials
    except KeyError:
        return []


def test_optuna_search_resumes_after_an_interruption(tiny_reviews, tmp_path):
    from seqlab.search.study import counted

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    args = ["train", "-m", "hparams_search=optuna", "hydra.sweeper.n_trials=3", "tracking.sweep=search",
            f"tracking.uri={uri}", "tracking.experiment=search", "tracking.log_model=false",
            f"dataset.path={tiny_reviews}", "debug=tiny"]  # the search space's keys: the sampler's values win
    journal = tmp_path / "optuna" / "search" / "search.log"  # next to the MLflow store
    log = (tmp_path / "first.log").open("w")
    first = subprocess.Popen(seqlab_command(*args), cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT,
                             start_new_session=True, preexec_fn=default_sigint)
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

    second = run_seqlab(*args, cwd=tmp_path, env=own_data(tmp_path), timeout=420)
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
    tags = parent.data.tags
    best = next(t for t in trials if t.number == int(tags["best_trial"]))  # on a tie, the summary's best child's
    assert best.value == max(t.value for t in trials) and json.loads(tags["best_params"]) == best.params
    assert float(tags["best_value"]) == best.value
    best_run = client.get_run(tags["best_run_id"])
    assert best_run.data.tags["optuna.trial"] == tags["best_trial"]  # the tags agree
    # the objective: the validation accuracy of the model as kept (the last epoch: no early stopping here)
    history = client.get_metric_history(best_run.info.run_id, "accuracy/val")
    assert max(history, key=lambda m: m.step).value == best.value
    [results] = list(tmp_path.glob("multirun/*/*/optimization_results.yaml"))
    assert OmegaConf.load(results).best_value == best.value


def test_two_search_workers_share_one_study_and_one_parent_and_pruned_trials_keep_their_curves(
        tiny_reviews, tmp_path, capsys):
    """Two `seqlab train -m hparams_search=...` started at once on a new store: one study of exactly n_trials distinct
    trials, one parent. Their pruner (ThresholdPruner below 2.0) stops every trial after its first epoch."""
    from seqlab.search.study import counted

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    args = ["train", "-m", "hparams_search=optuna", "hydra.sweeper.n_trials=4", "tracking.sweep=shared",
            "hydra.sweeper.pruner={_target_:optuna.pruners.ThresholdPruner,lower:2.0}", f"tracking.uri={uri}",
            "tracking.experiment=shared", f"dataset.path={tiny_reviews}", "debug=tiny", "trainer.epochs=2"]
    env = {**os.environ, "SEQLAB_DATA_DIR": str(tmp_path), "TF_NUM_INTRAOP_THREADS": "1"}
    logs = [(tmp_path / f"worker{i}.log").open("w") for i in range(2)]
    workers = []
    for i, log in enumerate(logs):
        workers.append(subprocess.Popen(seqlab_command(*args, f"hydra.sweep.dir=multirun/w{i}"), cwd=tmp_path,
                                        env=env, stdout=log, stderr=subprocess.STDOUT))
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
    assert len(trials) == 4 and {t.state.name for t in trials} == {"PRUNED"}
    assert {tuple(t.intermediate_values) for t in trials} == {(0,)}  # reported epoch 0, stopped there
    assert len({json.dumps(t.params, sort_keys=True) for t in trials}) == 4  # no trial twice
    ran = [int(out.split("trials ran in this worker")[0].rsplit("'shared': ", 1)[-1]) for out in outputs]
    assert sum(ran) == 4 and min(ran) >= 1, ran
    assert "pruned after epoch 1" in outputs[0] + outputs[1] and "has no completed trial" in outputs[0]

    client = MlflowClient(uri)
    [parent], children = split_runs(runs_of(client, "shared"))  # one parent for both workers
    assert len(children) == 4 and {r.data.tags["mlflow.parentRunId"] for r in children} == {parent.info.run_id}
    assert sorted(int(r.data.tags["optuna.trial"]) for r in children) == sorted(t.number for t in trials)
    for run in children:  # a pruned run says so at a glance, keeps its curves, never touched the test split
        assert run.info.status == "FINISHED" and run.data.tags["optuna.state"] == "PRUNED"
        assert run.info.run_name.startswith("(pruned) ") and "**Pruned**" in run.data.tags["mlflow.note.content"]
        assert [m.step for m in client.get_metric_history(run.info.run_id, "accuracy/val")] == [0]
        assert "accuracy/test" not in run.data.metrics
        artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
        assert "learning_curves.png" in artifacts and "model" not in artifacts
    parent = client.get_run(parent.info.run_id)
    assert parent.info.status == "FINISHED" and parent.data.tags["sweep.children"] == "4 PRUNED"
    assert "best_run_id" not in parent.data.tags

    from seqlab.cli.compare import main as compare_main

    capsys.readouterr()
    assert compare_main(["--tracking-uri", uri, "--experiment", "shared", "--format", "csv"]) == 1  # none finished
    assert compare_main(["--tracking-uri", uri, "--experiment", "shared", "--format", "csv", "--pruned",
                         "--metric", "accuracy/val"]) == 0
    assert list(pd.read_csv(io.StringIO(capsys.readouterr().out))["status"]) == ["PRUNED"] * 4
