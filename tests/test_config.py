"""Config composition and validation: bad values stop the run before any work, naming the key."""

import pytest
from omegaconf.errors import ValidationError

from seqlab.config.compose import to_flat_dict
from seqlab.config.validate import validate
from seqlab.errors import ConfigError
from tests.conftest import compose_config, run_seqlab


@pytest.mark.unit
def test_default_config_is_the_tutorial_setup():
    cfg = compose_config()
    validate(cfg)
    assert cfg.dataset.name == "imdb" and cfg.model.name == "lstm"
    assert (cfg.preprocess.vocab_size, cfg.preprocess.max_length, cfg.preprocess.padding) == (5000, 500, "pre")
    assert (cfg.model.embedding_dim, cfg.model.units) == (32, 100)
    assert (cfg.trainer.batch_size, cfg.trainer.optimizer, cfg.trainer.epochs) == (64, "adam", 3)
    assert cfg.dataset.validation_split == 0.1
    assert cfg.tracking.uri == "sqlite:///mlflow.db"


@pytest.mark.unit
@pytest.mark.parametrize("override, key", [
    ("trainer.epochs=0", "trainer.epochs"),
    ("trainer.epochs=-3", "trainer.epochs"),
    ("model.dropout=1.0", "model.dropout"),
    ("model.dropout=-0.1", "model.dropout"),
    ("preprocess.padding=middle", "preprocess.padding"),
    ("preprocess.truncating=both", "preprocess.truncating"),
    ("preprocess.vocab_size=1", "preprocess.vocab_size"),
    ("dataset.validation_split=0", "dataset.validation_split"),
    ("trainer.learning_rate=0", "trainer.learning_rate"),
    ("trainer.optimizer=adamm", "trainer.optimizer"),
    ("trainer.device=tpu", "trainer.device"),
    ("trainer.monitor=val_f1", "trainer.monitor"),
])
def test_out_of_range_values_name_the_key(override, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")) as caught:
        validate(compose_config([override]))
    assert caught.value.exit_code == 2


@pytest.mark.unit
@pytest.mark.parametrize("monitor, better, worse", [("accuracy/val", 0.6, 0.4), ("loss/val", 0.4, 0.6),
                                                     ("val_loss", 0.4, 0.6)])  # the name of seqlab 0.1 too
def test_early_stopping_watches_trainer_monitor_and_restores_its_best_epoch(monitor, better, worse):
    """The other metric moves the wrong way throughout: only trainer.monitor may decide when to stop."""
    import keras
    import numpy as np

    from seqlab.metrics import to_keras
    from seqlab.training.fit import early_stopping, kept_epoch

    cfg = compose_config([f"trainer.monitor={monitor}", "trainer.early_stopping=2"])
    validate(cfg)
    monitor = to_keras(monitor)  # the name Keras logs
    other = "val_loss" if monitor == "val_accuracy" else "val_accuracy"
    model = keras.Sequential([keras.Input((1,)), keras.layers.Dense(1)])
    callback = early_stopping(cfg.trainer)
    callback.set_model(model)
    model.stop_training = False  # what fit() sets before the first epoch
    callback.on_train_begin()
    # epoch 0 and 1: the monitored metric improves (the other worsens); epochs 2 and 3: no better than epoch 1
    values = [(worse, 0.5), (better, 0.9 if other == "val_loss" else 0.1), (worse, 1.0), (worse, 1.0)]
    for epoch, (watched, others) in enumerate(values):
        model.layers[0].kernel.assign(np.full((1, 1), float(epoch)))  # weights that name their epoch
        callback.on_epoch_end(epoch, {monitor: watched, other: others})
        assert model.stop_training == (epoch == 3), epoch
    callback.on_train_end()
    assert float(model.layers[0].kernel.numpy()[0, 0]) == 1.0  # epoch 1's weights restored
    history = {"loss": [1.0] * 4, monitor: [watched for watched, _ in values], other: [o for _, o in values]}
    assert kept_epoch(history, cfg.trainer) == 1  # the step the test metrics and the logged model are put at


@pytest.mark.unit
def test_unknown_key_and_wrong_type_fail_at_composition():
    from hydra.errors import ConfigCompositionException

    with pytest.raises(ConfigCompositionException, match="dropuot"):
        compose_config(["model.dropuot=0.2"])
    with pytest.raises(ConfigError, match=r"model\.dropuot"):  # '+' appends past the schema: still refused
        validate(compose_config(["+model.dropuot=0.2"]))
    with pytest.raises(ConfigCompositionException, match="trainer.epochs=three") as caught:
        compose_config(["trainer.epochs=three"])
    assert isinstance(caught.value.__cause__, ValidationError)


@pytest.mark.unit
def test_flat_params_use_dotted_keys():
    flat = to_flat_dict(compose_config(["model.units=7"]))
    assert flat["model.units"] == 7 and flat["model.name"] == "lstm" and flat["preprocess.vocab_size"] == 5000
    assert not any(key.startswith("hydra") for key in flat)


@pytest.mark.slow
def test_cli_help_lists_groups_and_cfg_prints_the_config():
    result = run_seqlab("train", "--help")
    assert result.returncode == 0
    for group in ("dataset", "preprocess", "model", "trainer", "tracking"):
        assert group in result.stdout
    assert "lstm" in result.stdout
    job = run_seqlab("train", "--cfg", "job", "model.units=17")
    assert job.returncode == 0 and "units: 17" in job.stdout


@pytest.mark.slow
def test_cli_bad_values_exit_2_without_traceback(tmp_path):
    result = run_seqlab("train", "trainer.epochs=-1", f"tracking.uri=sqlite:///{tmp_path / 'm.db'}", cwd=tmp_path)
    assert result.returncode == 2
    assert "trainer.epochs" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "m.db").exists()  # nothing started in MLflow


# Values that pass the schema's types but no run could use: each stops at validation with one line naming the key,
# the value and what is allowed (exit 2), never later as an "unexpected" crash.
@pytest.mark.unit
@pytest.mark.parametrize("overrides, key, value", [
    (["preprocess.vocab_size=2"], "preprocess.vocab_size", "2"),  # padding and [UNK] leave no word
    (["preprocess.tokenizer=wordpiece", "preprocess.vocab_size=3"], "preprocess.vocab_size", "3"),  # + separator
    (["trainer.seed=-1"], "trainer.seed", "-1"),
    (["trainer.seed=4294967296"], "trainer.seed", "4294967296"),  # numpy seeds are 0..2**32-1
    (["trainer.intra_op_threads=100000"], "trainer.intra_op_threads", "100000"),
    (["trainer.intra_op_threads=-1"], "trainer.intra_op_threads", "-1"),
    (["trainer.clipnorm=nan"], "trainer.clipnorm", "nan"),
    (["trainer.learning_rate=nan"], "trainer.learning_rate", "nan"),
    (["trainer.learning_rate=inf"], "trainer.learning_rate", "inf"),
    (["trainer.warmup=nan"], "trainer.warmup", "nan"),
    (["trainer.weight_decay=inf"], "trainer.weight_decay", "inf"),
    (["trainer.label_smoothing=nan"], "trainer.label_smoothing", "nan"),
    (["model.dropout=nan"], "model.dropout", "nan"),
    (["model.pretrained_lr_multiplier=-inf"], "model.pretrained_lr_multiplier", "-inf"),
    (["dataset.validation_split=nan"], "dataset.validation_split", "nan"),
    (["dataset=custom", "dataset.test_split=inf"], "dataset.test_split", "inf"),
    (["dataset.split_seed=-1"], "dataset.split_seed", "-1"),
    (["pretrain=lm", "pretrain.learning_rate=nan"], "pretrain.learning_rate", "nan"),
    (["pretrain=word2vec", "pretrain.seed=4294967296"], "pretrain.seed", "4294967296"),
    (["preprocess.max_length=2147483648"], "preprocess.max_length", "2147483648"),  # beyond TensorFlow's int32
    (["trainer.bucket_boundaries=[64,32]"], "trainer.bucket_boundaries", "[64, 32]"),
    (["+foo=1"], "foo", ""),  # an unknown root key, as unknown group keys are (no value: it may be a secret)
    (["hparams_search=optuna", "+hparams_search.stoarge=x"], "hparams_search.stoarge", ""),
])
def test_values_no_run_could_use_are_refused_naming_key_and_value(overrides, key, value):
    with pytest.raises(ConfigError) as caught:
        validate(compose_config(overrides))
    message = str(caught.value)
    assert f"'{key}'" in message and value in message and "\n" not in message, message
    assert caught.value.exit_code == 2


@pytest.mark.unit
@pytest.mark.parametrize("override", ["trainer.seed=0", "trainer.seed=4294967295", "preprocess.vocab_size=3",
                                      "preprocess=subword preprocess.vocab_size=4",
                                      "trainer.intra_op_threads=0", "trainer.intra_op_threads=1024",
                                      "dataset.split_seed=4294967295", "trainer.clipnorm=1.0"])
def test_the_edges_of_the_allowed_ranges_pass(override):
    validate(compose_config(override.split()))


@pytest.mark.slow
def test_cli_refuses_a_bad_seed_and_an_unknown_root_key_before_anything_starts(tmp_path):
    for override, key in (("trainer.seed=-1", "trainer.seed"), ("+foo=1", "foo")):
        result = run_seqlab("train", override, f"tracking.uri=sqlite:///{tmp_path / 'm.db'}", cwd=tmp_path)
        assert result.returncode == 2, result.stderr
        assert f"'{key}'" in result.stderr and "unexpected" not in result.stderr and "Traceback" not in result.stderr
        assert not (tmp_path / "m.db").exists() and not (tmp_path / "outputs").exists()
