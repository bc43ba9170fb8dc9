"""The presets in conf/experiment: each composes to a valid config, a `<dataset>_<model>` preset selects that
dataset and model, and every benchmark row (every flat model on IMDB) has its preset. And conf/debug's debug=tiny:
a short run with small layers for any model, after every other group."""

import pytest

from seqlab.config.validate import validate
from tests.conftest import REPO, compose_config

pytestmark = pytest.mark.unit

PRESETS = sorted(path.stem for path in (REPO / "conf" / "experiment").glob("*.yaml"))
DATASETS = {path.stem for path in (REPO / "conf" / "dataset").glob("*.yaml")}
MODELS = sorted(path.stem for path in (REPO / "conf" / "model").glob("*.yaml"))


def dataset_and_model(preset: str) -> tuple[str, str] | None:
    """('imdb', 'cnn_lstm') for 'imdb_cnn_lstm'; None for a preset not named after a dataset and a model."""
    for dataset in DATASETS:
        model = preset.removeprefix(f"{dataset}_")
        if model != preset and model in MODELS:
            return dataset, model
    return None


@pytest.mark.parametrize("preset", PRESETS)
def test_every_preset_composes_to_a_valid_config(preset):
    cfg = compose_config([f"experiment={preset}"])
    validate(cfg)
    assert cfg.trainer.seed == 42, "the benchmarks' figures are for seed 42"
    named = dataset_and_model(preset)
    if named:
        assert (cfg.dataset.name, cfg.model.name) == named
        assert cfg.tracking.experiment, "a benchmark preset names its MLflow experiment"


def test_every_benchmarked_model_has_an_imdb_preset():
    """The README's IMDB benchmark has one row per flat model, each the command `experiment=imdb_<model>`."""
    benchmarked = ["lstm", "lstm_dropout", "lstm_recurrent_dropout", "cnn_lstm", "gru", "stacked_lstm",
                   "lstm_no_embedding", "bilstm", "attention_bilstm", "fasttext_bigram", "transformer"]
    missing = [model for model in benchmarked if f"imdb_{model}" not in PRESETS]
    assert not missing, f"no conf/experiment/imdb_<model>.yaml for {missing}"


def test_imdb_fasttext_bigram_preset_is_the_benchmark_recipe():
    """The README's 0.9052 came from these overrides; the preset must compose to exactly that config."""
    preset = compose_config(["experiment=imdb_fasttext_bigram"])
    recipe = compose_config(["model=fasttext_bigram", "preprocess.vocab_size=20000", "model.embedding_dropout=0.3",
                             "trainer.optimizer=lazy_adam", "trainer.epochs=15", "trainer.early_stopping=1",
                             "tracking.experiment=benchmark_models"])
    assert preset == recipe
    assert compose_config(["model=fasttext_bigram"]) != recipe, "the model's own config is not the recipe"


@pytest.mark.parametrize("dataset", ["dailydialog", "persuasion", "chitchat"])
def test_thread_presets_train_like_threads_compare(dataset):
    """A thread row's preset is threads_compare's job for that dataset and model, without the sweep."""
    for model in ("bilstm", "hier_lstm", "hier_conv"):
        assert (compose_config([f"experiment={dataset}_{model}"])
                == compose_config(["experiment=threads_compare", f"dataset={dataset}", f"threads_model={model}"]))


@pytest.mark.parametrize("dataset", ["dailydialog", "persuasion", "chitchat"])
def test_pretrained_thread_presets_are_their_model_row_fine_tuned_from_the_pretraining(dataset):
    """`<dataset>_pretrained` is a `<dataset>_<model>` row plus word vectors from unlabeled reviews and the training
    split (never a test split), which `model.pretrained=pretrain` chains."""
    preset = compose_config([f"experiment={dataset}_pretrained"])
    row = compose_config([f"experiment={dataset}_{preset.model.name}", "pretrain=word2vec",
                          "model.pretrained=pretrain", "pretrain.corpus=[imdb_unsup,train]"])
    assert preset == row
    assert preset.pretrain.embedding_dim == preset.model.embedding_dim


def test_imdb_pretrained_preset_chains_a_pretraining_on_the_training_side_reviews():
    """The README's figure came from the fastText row plus these overrides."""
    preset = compose_config(["experiment=imdb_pretrained"])
    assert preset == compose_config(["experiment=imdb_fasttext_bigram", "pretrain=word2vec", "model.pretrained=pretrain",
                                     "pretrain.corpus=[imdb_unsup,train]"])
    assert preset.pretrain.embedding_dim == preset.model.embedding_dim


# --- debug=tiny (conf/debug/): a seconds-long run of any config -------------------------------------------

@pytest.mark.parametrize("model", MODELS)
def test_debug_tiny_gives_every_model_small_layers_and_a_short_run(model):
    """For every run a few hundred examples and one epoch; and a model's own small sizes where it has them
    (conf/debug/model/tiny_<model>.yaml, optional: the keys differ per model): then no layer of it stays wide (every
    size at most 64, fastText's 2^20 n-gram rows too)."""
    from dataclasses import fields

    from seqlab.models.catalog import MODELS as REGISTERED

    cfg = compose_config(["debug=tiny", f"model={model}"])
    validate(cfg)
    assert (cfg.dataset.max_train, cfg.dataset.max_test, cfg.trainer.epochs) == (200, 100, 1)
    assert cfg.preprocess.vocab_size == 500 and not cfg.tracking.system_metrics
    if not (REPO / "conf" / "debug" / "model" / f"tiny_{model}.yaml").is_file():
        return  # a model added without tiny sizes runs debug=tiny at its own
    sizes = {field.name: field.default for field in fields(REGISTERED[model].config)
             if field.type in ("int", int) and field.name != "max_positions"}  # a bound on the input, not a layer
    assert {key: cfg.model[key] for key in sizes if cfg.model[key] > 64} == {}
    assert any(cfg.model[key] < default for key, default in sizes.items())  # it shrank
    inputs = cfg.preprocess.get("max_length") or cfg.preprocess.max_units * cfg.preprocess.max_unit_length
    assert inputs <= 32


@pytest.mark.parametrize("overrides", [["experiment=seed_tutorial"], ["experiment=dailydialog_hier_conv"],
                                       ["experiment=imdb_pretrained"], ["preprocess=subword", "pretrain=lm"],
                                       ["dataset=custom", "model=hier_transformer"]])
def test_debug_tiny_comes_after_presets_and_other_groups(overrides):
    cfg = compose_config([*overrides, "debug=tiny"])
    validate(cfg)
    assert (cfg.trainer.epochs, cfg.dataset.max_train, cfg.preprocess.vocab_size) == (1, 200, 500)  # over the preset
    if cfg.pretrain:  # the pretraining shrinks too (pretrain=lm: its LSTM as wide as the model's, to initialise it)
        assert (cfg.pretrain.max_texts, cfg.pretrain.epochs, cfg.pretrain.vocab_size) == (1000, 1, 500)
        if cfg.pretrain.name == "lm":
            assert cfg.pretrain.units == cfg.model.units


def test_debug_is_off_by_default_and_the_command_line_overrides_it():
    default = compose_config([])
    assert (default.dataset.max_train, default.trainer.epochs, default.model.units) == (None, 3, 100)
    given = compose_config(["debug=tiny", "trainer.epochs=2", "model.units=8"])
    assert (given.trainer.epochs, given.model.units, given.model.embedding_dim) == (2, 8, 4)
