"""experiment=seed_tutorial: the tutorial's variants as one multirun into one MLflow experiment, then the table."""

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from mlflow.tracking import MlflowClient

from seqlab.config.compose import config_dir
from seqlab.cli.compare import main as compare_main
from seqlab.config.compose import register_configs
from seqlab.config.validate import validate
from tests.conftest import compose_config, run_seqlab

VARIANTS = ["lstm", "lstm_dropout", "lstm_recurrent_dropout", "cnn_lstm", "bilstm", "lstm_no_embedding"]


def compose_with_hydra(overrides):
    register_configs()
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        return compose(config_name="config", overrides=overrides, return_hydra_config=True)


@pytest.mark.unit
def test_the_experiment_composes_as_one_sweep_over_the_tutorial_variants():
    cfg = compose_with_hydra(["experiment=seed_tutorial"])
    assert str(cfg.hydra.mode) == "RunMode.MULTIRUN"
    assert cfg.hydra.sweeper.params.model.split(",") == VARIANTS
    assert cfg.tracking.experiment == "seed_tutorial"
    assert (cfg.trainer.epochs, cfg.preprocess.vocab_size, cfg.preprocess.max_length) == (3, 5000, 500)
    for variant in VARIANTS:  # every job of the sweep is a valid config
        job = compose_config(["experiment=seed_tutorial", f"model={variant}"])
        validate(job)
        assert job.model.name == variant


@pytest.mark.slow
def test_the_sweep_runs_on_a_tiny_subset_and_compare_prints_its_table(real_data_dir, tmp_path, capsys):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    # debug=tiny comes after the preset: each variant at its tiny sizes, one epoch
    tiny = [f"data_dir={real_data_dir}", "debug=tiny", "tracking.log_model=false", f"tracking.uri={uri}"]
    result = run_seqlab("train", "experiment=seed_tutorial", *tiny, cwd=tmp_path, env={"PYTHONUNBUFFERED": "1"},
                        timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("seed_tutorial")
    every = client.search_runs([experiment.experiment_id])
    runs = [run for run in every if run.data.tags.get("sweep.role") == "child"]  # the parent holds the best's params
    [parent] = [run for run in every if run.data.tags.get("sweep.role") == "parent"]
    assert parent.data.tags["best_run_id"] in {run.info.run_id for run in runs}
    assert "`model` over `lstm`, `lstm_dropout`" in parent.data.tags["mlflow.note.content"]  # the preset's sweep
    assert sorted(run.data.params["model.name"] for run in runs) == sorted(VARIANTS)
    assert all(run.info.status == "FINISHED" and "accuracy/test" in run.data.metrics for run in runs)
    assert {run.data.params["trainer.epochs"] for run in runs} == {"1"}
    # like for like: every variant on the tutorial's pre-padded batches, none switched to buckets
    assert {(run.data.params["trainer.bucketing"], run.data.params["preprocess.padding"]) for run in runs} == {
        ("False", "pre")}

    assert compare_main(["--experiment", "seed_tutorial", "--format", "csv", "--tracking-uri", uri]) == 0
    table = capsys.readouterr().out
    assert all(f",{variant}," in table for variant in VARIANTS)
