"""What a run records and how runs are told apart: each option owns its keys, params are what the run used,
names say what differs, `compare` never merges runs that differ, a sweep across models batches them alike,
and a model added with a builder and a config runs through the model checks."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest
from hydra.core.config_store import ConfigStore
from mlflow.tracking import MlflowClient

from seqlab.analysis.compare import runs_frame
from seqlab.config.validate import validate
from seqlab.errors import ConfigError
from seqlab.models.registry import ModelConfig, register
from seqlab.models.catalog import MODELS
from tests.conftest import compose_config, run_seqlab, write_aclimdb

# debug=tiny, with the input length and vocabulary the record's derived params are checked against
TINY = ["debug=tiny", "preprocess.max_length=12", "preprocess.vocab_size=60", "tracking.log_model=false",
        "trainer.checkpoint=false"]


def train_runs(uri: str, data: Path, variants: list[list[str]]):
    from seqlab.workflow.train import train

    for overrides in variants:
        train(compose_config([f"dataset.path={data}", f"tracking.uri={uri}", *TINY, *overrides]))
    client = MlflowClient(uri)
    return client.search_runs([client.get_experiment_by_name("imdb").experiment_id], order_by=["attributes.start_time"])


@pytest.fixture(scope="module")
def dropout_runs(tmp_path_factory):
    """The issue's case: four lstm runs, embedding_dropout 0 and 0.3, seeds 1 and 2."""
    tmp = tmp_path_factory.mktemp("record")
    uri = f"sqlite:///{tmp / 'mlflow.db'}"
    runs = train_runs(uri, write_aclimdb(tmp / "data", per_class=12),
                      [[f"model.embedding_dropout={rate}", f"trainer.seed={seed}"] for rate in (0, 0.3) for seed in (1, 2)])
    return uri, runs


@pytest.mark.integration
def test_runs_differing_in_one_param_never_share_a_compare_row_and_seeds_do(dropout_runs):
    uri, runs = dropout_runs
    table = runs_frame(uri, "imdb")
    assert sorted(table["model.embedding_dropout"].astype(float)) == [0.0, 0.3]
    assert list(table["runs"]) == [2, 2] and all(seeds == "1 2" for seeds in table["seeds"])


@pytest.mark.integration
def test_an_lstm_run_logs_its_own_keys_and_what_ran_and_nothing_else(dropout_runs):
    _, runs = dropout_runs
    params = runs[0].data.params
    own = {"embedding_dim", "units", "layers", "dropout", "recurrent_dropout", "embedding_dropout", "residual", "name",
           "metadata"}
    assert {key.split(".", 1)[1] for key in params if key.startswith("model.")} == own
    assert "null" not in params.values() and "None" not in params.values()
    assert not [key for key in params if key.startswith(("tracking.", "optimizer_", "overrides", "data_dir",
                                                         "cache_dir"))]
    assert params["trainer.bucketing"] == "True" and params["preprocess.padding"] == "post"  # resolved, as run
    assert params["derived.input_length"] == "12 words" and int(params["derived.trainable_params"]) > 0
    assert int(params["derived.vocabulary"]) <= 60 and params["derived.batching"].startswith("length buckets")


@pytest.mark.integration
def test_default_run_names_say_what_differs_and_are_unique(dropout_runs):
    from seqlab.record.naming import default_run_name

    uri, runs = dropout_runs
    names = [run.info.run_name for run in runs]
    # in-process train() has no command line: the model alone, then numbered (never MLflow's seeded draw)
    assert names == ["lstm", "lstm (2)", "lstm (3)", "lstm (4)"]
    # from a command line (a CLI run's or a sweep job's overrides, as seqlab.jobs hands them over)
    cfg = compose_config(["model=cnn_lstm", "model.dropout=0.2"])
    overrides = ["experiment=imdb_cnn_lstm", "model=cnn_lstm", "model.dropout=0.2", "dataset.path=/data/x.csv",
                 "tracking.uri=sqlite:///m.db", "data_dir=/data", "trainer.seed=3"]
    assert default_run_name(cfg.model.name, overrides) == "cnn_lstm dropout=0.2 seed=3"
    assert default_run_name(cfg.model.name, overrides, swept=["trainer.seed"]) == "cnn_lstm seed=3"  # a sweep's child
    sampled = ["model.dropout=0.18727005942368125", "trainer.learning_rate=0.000518420294119955", "model.units=64"]
    assert default_run_name(cfg.model.name, sampled) == "cnn_lstm dropout=0.1873 learning_rate=0.0005184 units=64"  # a search's


@pytest.mark.unit
def test_an_unknown_key_for_the_chosen_option_lists_that_options_keys():
    with pytest.raises(Exception) as raised:  # Hydra's composition error; seqlab.cli.entry words it (test_config)
        compose_config(["model=lstm", "model.filters=8"])
    assert "filters" in str(raised.value)
    cfg = compose_config(["model=cnn_lstm", "model.filters=8"])
    assert cfg.model.filters == 8 and "attention_units" not in cfg.model
    with pytest.raises(ConfigError, match=r"model.dropout"):
        validate(compose_config(["model=fasttext_bigram", "model.dropout=1.5"]))
    assert "speaker_tokens" in compose_config(["preprocess=words"]).preprocess  # read by the thread loaders


@pytest.mark.slow
def test_a_sweep_across_models_batches_them_alike(tmp_path):
    data = write_aclimdb(tmp_path / "data", per_class=6)
    uri = f"sqlite:///{tmp_path / 'm.db'}"
    result = run_seqlab("train", "-m", "model=lstm,gru", f"dataset.path={data}", *TINY, f"tracking.uri={uri}",
                        "tracking.sweep=alike", cwd=tmp_path, timeout=600)
    assert result.returncode == 0, result.stderr
    assert (result.stdout + result.stderr).count("like for like") == 1  # said once, in the sweep's process
    client = MlflowClient(uri)
    runs = client.search_runs([client.get_experiment_by_name("imdb").experiment_id])
    children = {run.data.params["model.name"]: run for run in runs if run.data.tags.get("sweep.role") == "child"}
    assert {name: run.data.params["trainer.bucketing"] for name, run in children.items()} == {"lstm": "False",
                                                                                               "gru": "False"}
    assert {run.info.run_name for run in children.values()} == {"lstm", "gru"}  # named by their jobs' overrides


@dataclass
class MeanConfig(ModelConfig):
    embedding_dim: int = 8


@pytest.mark.integration
def test_a_model_added_with_a_builder_and_a_config_runs_through_the_model_checks(tmp_path):
    from seqlab.config.plan import resolve
    from tests import test_models, test_pipeline

    @register("toy_mean", MeanConfig, recurrent=False, masks_padding=True)
    def build_toy_mean(cfg, spec):
        from seqlab.models.layers import classifier_head, keras, layers, token_input

        tokens = token_input(spec)
        x = layers.Embedding(spec.vocab_size, cfg.embedding_dim, mask_zero=True)(tokens)
        return keras.Model(tokens, classifier_head(layers.GlobalAveragePooling1D()(x), spec.num_classes))

    # its conf/model/toy_mean.yaml, as a ConfigStore node (tests never write into conf/)
    ConfigStore.instance().store(group="model", name="toy_mean", node={
        "defaults": ["/model_toy_mean_schema@_here_", "_self_"], "name": "toy_mean", "embedding_dim": 6})
    try:
        cfg = compose_config(["model=toy_mean"])
        validate(cfg)
        assert cfg.model.embedding_dim == 6 and resolve(cfg).features.bucketing is False
        test_models.test_output_and_loss_follow_the_number_of_classes("toy_mean")
        test_models.test_each_model_trains_one_step_and_saves_with_its_preprocessing("toy_mean", tmp_path)
        skewed = test_pipeline.skewed.__wrapped__()
        test_pipeline.test_every_flat_model_trains_on_buckets_and_ignores_their_padding("toy_mean", skewed)
    finally:
        MODELS.pop("toy_mean", None)
