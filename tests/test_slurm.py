"""hydra/launcher=submitit_slurm on a real single-node Slurm without accounting (scripts/slurm.sh starts it: as root,
installing slurm-wlm and munge with apt where missing): a grid sweep and a shared Optuna study across Slurm jobs,
each nested under one MLflow parent, and no sacct noise. Skipped where no cluster can be started (not root, no
apt), except under CI=true, where that fails."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from tests.conftest import REPO, run_seqlab, write_aclimdb

SCRIPT = REPO / "scripts" / "slurm.sh"
NO_ACCOUNTING = "this Slurm has no job accounting"  # seqlab.search.slurm's one line where sacct fails


@pytest.fixture(scope="module")
def slurm_conf():
    """A single-node Slurm from scripts/slurm.sh (in $TMPDIR/seqlab-slurm: one cluster for the whole machine),
    stopped at the end unless it was running before; yields its slurm.conf."""

    def unavailable(reason: str):
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(f"{reason} (CI=true: it must run there; .ci/run installs slurm-wlm and munge)")
        pytest.skip(reason)

    if sys.platform != "linux":
        unavailable("a Slurm cluster for the tests needs Linux (scripts/slurm.sh)")
    folder = Path(os.environ.get("TMPDIR", "/tmp")) / "seqlab-slurm"
    try:
        started = subprocess.run(["bash", str(SCRIPT), "start", str(folder)], capture_output=True, text=True,
                                 timeout=600)
    except subprocess.TimeoutExpired:
        unavailable("scripts/slurm.sh start took over 10 minutes")
    if started.returncode != 0:
        unavailable(f"no single-node Slurm (scripts/slurm.sh start failed): {started.stderr.strip()[-1500:]}")
    try:
        yield folder / "slurm.conf"
    finally:
        if "already running" not in started.stdout:
            subprocess.run(["bash", str(SCRIPT), "stop", str(folder)], capture_output=True, timeout=120)


def slurm_sweep(*overrides: str, cwd: Path, slurm_conf: Path) -> subprocess.CompletedProcess:
    """`seqlab train -m hydra/launcher=submitit_slurm OVERRIDES` against the test cluster (1 CPU, 1 GB per job)."""
    env = {"SLURM_CONF": str(slurm_conf), "SEQLAB_DATA_DIR": str(cwd)}  # never the user's data
    launcher = ["hydra/launcher=submitit_slurm", "hydra.launcher.partition=debug", "hydra.launcher.timeout_min=10",
                "hydra.launcher.cpus_per_task=1", "hydra.launcher.mem_gb=1", f"hydra.sweep.dir={cwd / 'multirun'}"]
    return run_seqlab("train", "-m", *launcher, *overrides, "debug=tiny",
                      f"dataset.path={write_aclimdb(cwd / 'data', per_class=20)}",
                      f"tracking.uri=sqlite:///{cwd / 'mlflow.db'}", "tracking.log_model=false", cwd=cwd, env=env,
                      timeout=540)


def assert_quiet(output: str) -> None:
    """One line says sacct is missing; no line per poll (sacct's own, submitit's) and no other warning."""
    assert output.count(NO_ACCOUNTING) == 1, output[-3000:]
    assert output.count("accounting storage is disabled") == 1  # sacct's own line, quoted in seqlab's only
    assert "Bypassing sacct error" not in output
    assert not [line for line in output.splitlines() if re.search(r"warn", line, re.IGNORECASE)], output[-3000:]


def parent_and_children(tmp_path: Path, experiment: str):
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name(experiment).experiment_id], max_results=100)
    parents = [r for r in runs if r.data.tags.get("sweep.role") == "parent"]
    children = [r for r in runs if r.data.tags.get("sweep.role") == "child"]
    assert len(parents) == 1, [r.info.run_name for r in parents]
    assert {r.data.tags["mlflow.parentRunId"] for r in children} == {parents[0].info.run_id}
    return parents[0], children


@pytest.mark.slow
def test_grid_sweep_on_slurm(slurm_conf, tmp_path):
    result = slurm_sweep("model.units=4,6", "tracking.experiment=slurm_grid", "tracking.sweep=grid", cwd=tmp_path,
                         slurm_conf=slurm_conf)
    assert result.returncode == 0, result.stderr[-3000:]
    assert_quiet(result.stdout + result.stderr)

    parent, children = parent_and_children(tmp_path, "slurm_grid")
    assert parent.info.status == "FINISHED" and parent.data.tags["sweep.launcher"] == "SlurmLauncher"
    assert parent.data.tags["sweep.children"] == "2 FINISHED"
    assert len(children) == 2 and {r.info.status for r in children} == {"FINISHED"}
    assert {r.data.params["model.units"] for r in children} == {"4", "6"}
    assert parent.data.tags["best_run_id"] in {r.info.run_id for r in children}
    # each job ran as a Slurm job (submitit's logs in the sweep folder name its job id)
    assert len(list((tmp_path / "multirun" / ".submitit").glob("*/*_log.out"))) == 2


@pytest.mark.slow
def test_optuna_search_shares_one_study_across_slurm_jobs(slurm_conf, tmp_path):
    import optuna
    from optuna.storages.journal import JournalFileBackend

    study_file = tmp_path / "study.log"
    result = slurm_sweep("hparams_search=optuna", f"hparams_search.storage={study_file}", "hydra.sweeper.n_trials=2",
                         "hydra.sweeper.n_jobs=2", "tracking.experiment=slurm_search", "tracking.sweep=search",
                         cwd=tmp_path, slurm_conf=slurm_conf)
    assert result.returncode == 0, result.stderr[-3000:]
    assert_quiet(result.stdout + result.stderr)

    parent, children = parent_and_children(tmp_path, "slurm_search")
    assert parent.info.status == "FINISHED" and parent.data.tags["sweep.launcher"] == "SlurmLauncher"
    assert len(children) == 2 and {r.info.status for r in children} == {"FINISHED"}
    assert sorted(r.data.tags["optuna.trial"] for r in children) == ["0", "1"]
    # both Slurm jobs told the one study their result; the parent holds the search's result
    study = optuna.load_study(study_name="search",
                              storage=optuna.storages.JournalStorage(JournalFileBackend(str(study_file))))
    assert [t.state.name for t in study.trials] == ["COMPLETE", "COMPLETE"]
    for run in children:
        value = study.trials[int(run.data.tags["optuna.trial"])].value
        assert run.data.metrics["accuracy/val"] == pytest.approx(value)
    tags = parent.data.tags
    assert float(tags["best_value"]) == study.best_value  # best_trial: of equal values, the summary's best child's
    best_run = next(r for r in children if r.info.run_id == tags["best_run_id"])
    assert best_run.data.tags["optuna.trial"] == tags["best_trial"]
    assert list((tmp_path / "multirun").glob("optimization_results.yaml"))


# --- the squeue fallback itself, without a cluster --------------------------------------------------------

@pytest.mark.unit
def test_job_states_come_from_squeue_where_sacct_fails(monkeypatch, caplog):
    pytest.importorskip("submitit")
    from seqlab.search import slurm

    answers = iter([(1, "", "Slurm accounting storage is disabled\n"),             # sacct, tried once
                    (0, "5_[0-1%256]|PENDING|\n", ""),                            # squeue: the array waits
                    (0, "5_0|RUNNING|vm\n5_1|CANCELLED|vm\n", ""),                # one cancelled, no result
                    (1, "", "slurm_load_jobs error: Invalid job id specified\n")])  # gone after MinJobAge
    commands = []

    def run(command, **kwargs):
        commands.append(command)
        code, out, err = next(answers)
        return subprocess.CompletedProcess(command, code, out, err)

    monkeypatch.setattr(slurm.subprocess, "run", run)
    watcher = slurm.squeue_watcher()
    for job_id in ("5_0", "5_1"):
        watcher.register_job(job_id)
    caplog.set_level("INFO", logger="seqlab.search.slurm")
    watcher.update()
    assert commands[0][0] == "sacct" and commands[1][0] == "squeue" and "--jobs=5" in commands[1]
    assert [watcher.get_state(j, mode="cache") for j in ("5_0", "5_1")] == ["PENDING", "PENDING"]
    watcher.update()
    assert [watcher.get_state(j, mode="cache") for j in ("5_0", "5_1")] == ["RUNNING", "CANCELLED"]
    assert watcher.is_done("5_1", mode="cache") and not watcher.is_done("5_0", mode="cache")
    watcher.update()  # a job squeue no longer knows has ended: its result file (or its absence) says how
    assert watcher.get_state("5_0", mode="cache") == slurm.ENDED and watcher.is_done("5_0", mode="cache")
    assert [c[0] for c in commands] == ["sacct", "squeue", "squeue", "squeue"]
    messages = [r.getMessage() for r in caplog.records if r.name == "seqlab.search.slurm"]
    assert messages == [f"{NO_ACCOUNTING} (sacct: Slurm accounting storage is disabled); job states come from squeue"]
