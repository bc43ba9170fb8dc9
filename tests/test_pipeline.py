"""Input pipelines: length buckets (same examples, homogeneous batches, seeded order, masking), the
tokenized-data cache, and the GPU-ready settings (mixed precision, XLA, kernel tag) on CPU."""

import keras
import numpy as np
import pytest
from mlflow.tracking import MlflowClient

import dataclasses
import json

from seqlab.config.plan import resolve
from seqlab.features import pipeline
from seqlab.features.cache import encode_splits
from seqlab.features.kernels import recurrent_kernels
from seqlab.jobs import SWEEP_ENV, SweepJob
from seqlab.config.validate import validate
from seqlab.data.common import DatasetSplits, Examples
from seqlab.errors import ConfigError
from seqlab.models.catalog import MODELS, build_model
from seqlab.models.layers import loss_for
from seqlab.features.preprocess import InputSpec, WordPreprocessor
from tests.conftest import FLAT_MODELS, HIERARCHICAL_MODELS, NEGATIVE, POSITIVE, compose_config, tiny_model


def post_padded(lengths, width, seed=0):
    """Word ids with the given lengths, post-padded to `width` (ids 2..99, as after TextVectorization)."""
    rng = np.random.default_rng(seed)
    ids = rng.integers(2, 100, size=(len(lengths), width))
    return np.where(np.arange(width) < np.asarray(lengths)[:, None], ids, 0).astype(np.int32)


def batches(dataset):
    return [(np.asarray(x["tokens"] if isinstance(x, dict) else x), np.asarray(y)) for x, y in dataset]


@pytest.fixture(scope="module")
def skewed():
    """1,000 examples with IMDB-like skewed lengths (many short, a few at max_length 60)."""
    lengths = np.minimum(np.random.default_rng(1).gamma(2.0, 12.0, size=1000).astype(int) + 1, 60)
    return post_padded(lengths, 60), lengths, np.arange(1000)  # label = index, to identify examples


# --- length buckets -------------------------------------------------------------------------------

@pytest.mark.unit
def test_bucketed_epoch_holds_every_example_once_in_full_batches(skewed):
    tokens, lengths, labels = skewed
    boundaries = pipeline.derive_boundaries(lengths, 60)
    dataset = pipeline.make_dataset(tokens, labels, 64, seed=7, boundaries=boundaries)
    orders = []
    for _ in range(2):  # two epochs
        epoch = batches(dataset)
        seen = np.concatenate([y for _, y in epoch])
        assert sorted(seen) == list(range(1000))  # the padded run's examples, each once
        assert sorted(len(y) for _, y in epoch)[1:] == [64] * 15  # 16 batches: as many as padded, one partial
        for x, y in epoch:  # each row is its example, cut to the batch's longest, post-padded
            assert x.shape[1] == lengths[y].max()
            assert (x == tokens[y, : x.shape[1]]).all()
        orders.append(seen)
    assert not np.array_equal(*orders)  # reshuffled every epoch
    assert dataset.cardinality().numpy() == 16


@pytest.mark.unit
def test_bucketed_batches_are_length_homogeneous(skewed):
    tokens, lengths, labels = skewed
    boundaries = pipeline.derive_boundaries(lengths, 60)
    epoch = batches(pipeline.make_dataset(tokens, labels, 64, seed=7, boundaries=boundaries))
    buckets = [set(np.searchsorted(boundaries, lengths[y], side="right")) for _, y in epoch]
    # full batches of one bucket each; only the buckets' remainders share batches, with neighbouring buckets
    assert sum(len(b) == 1 for b in buckets) >= len(epoch) - len(boundaries)
    assert all(max(b) - min(b) <= len(boundaries) for b in buckets)
    steps = sum(x.size for x, _ in epoch)
    assert steps < 0.7 * tokens.size  # padded to 60, over twice the recurrent steps
    assert lengths.sum() / steps > 0.8  # what is left is mostly words


@pytest.mark.unit
def test_bucketed_order_is_reproducible_from_the_seed(skewed):
    tokens, lengths, labels = skewed
    boundaries = [16, 32, 48, 60]

    def two_epochs(seed):
        dataset = pipeline.make_dataset(tokens, labels, 64, seed=seed, boundaries=boundaries)
        return np.concatenate([y for _ in range(2) for _, y in batches(dataset)])

    assert np.array_equal(two_epochs(3), two_epochs(3))
    assert not np.array_equal(two_epochs(3), two_epochs(4))


@pytest.mark.unit
def test_dict_inputs_bucket_the_tokens_only(skewed):
    tokens, lengths, labels = skewed
    metadata = np.random.default_rng(0).normal(size=(1000, 3)).astype("float32")
    dataset = pipeline.make_dataset({"tokens": tokens, "metadata": metadata}, labels, 64, seed=1,
                                    boundaries=[16, 32, 60], pad_to_boundaries=True)
    widths = set()
    for x, y in dataset:
        assert np.allclose(x["metadata"], metadata[y.numpy()])
        widths.add(x["tokens"].shape[1])
    assert widths <= {15, 31, 59, 60}  # XLA sees one shape per bucket


@pytest.mark.unit
def test_pre_padded_ids_are_refused():
    pre_padded = post_padded([3, 5], 8)[:, ::-1]
    with pytest.raises(ValueError, match="post-padded"):
        pipeline.make_dataset(pre_padded, np.array([0, 1]), 2, seed=0, boundaries=[4])


@pytest.mark.unit
def test_predict_keeps_the_input_order(skewed):
    tokens, lengths, labels = skewed
    cfg = compose_config(tiny_model("lstm")).model
    model = build_model(cfg, InputSpec(vocab_size=100, sequence_shape=(None,), num_classes=2, mask_zero=True))
    bucketed = pipeline.predict(model, tokens[:300], 32, boundaries=[16, 32, 60])
    padded = model.predict(tokens[:300], batch_size=32, verbose=0)
    assert np.allclose(bucketed, padded, atol=1e-5)


@pytest.mark.integration
@pytest.mark.parametrize("name", FLAT_MODELS)
def test_every_flat_model_trains_on_buckets_and_ignores_their_padding(name, skewed):
    """Masked: the output for a review does not depend on how far its batch pads it."""
    tokens, lengths, labels = skewed
    spec = InputSpec(vocab_size=100, sequence_shape=(None,), num_classes=2, mask_zero=True, max_length=60)
    model = build_model(compose_config(tiny_model(name)).model, spec)
    model.compile(optimizer="adam", loss=loss_for(2))
    dataset = pipeline.make_dataset(tokens[:96], labels[:96] % 2, 32, seed=0, boundaries=[16, 32, 60])
    history = model.fit(dataset, epochs=1, shuffle=False, verbose=0)
    assert np.isfinite(history.history["loss"][0])
    short = post_padded([5, 9], 9, seed=3)
    alone = np.asarray(model(short))
    padded = np.asarray(model(np.pad(short, [(0, 0), (0, 40)])))
    assert np.allclose(alone, padded, atol=1e-5)


# --- configuration ----------------------------------------------------------------------------------

@pytest.mark.unit
def test_bucketing_null_resolves_per_model_and_switches_to_post_padding(monkeypatch):
    on = resolve(compose_config(["model=lstm"])).config
    assert on.trainer.bucketing is True and on.preprocess.padding == "post"
    off = resolve(compose_config(["model=lstm", "trainer.bucketing=false"])).config
    assert off.trainer.bucketing is False and off.preprocess.padding == "pre"
    for name in FLAT_MODELS:  # null follows each model's registered trait
        resolved = resolve(compose_config([f"model={name}"])).features.bucketing
        assert resolved is MODELS[name].bucketed
    # a sweep across models passes one default for all (seqlab.search.sweep.like_for_like)
    job = SweepJob(name="s", parent_run_id="p", experiment_id="1", job=0, bucketing=False)
    monkeypatch.setenv(SWEEP_ENV, json.dumps(dataclasses.asdict(job)))
    assert resolve(compose_config(["model=lstm"])).features.bucketing is False


@pytest.mark.unit
def test_bucketing_config_errors_name_the_key():
    with pytest.raises(ConfigError, match="trainer.bucket_boundaries"):  # validation, before any run starts
        validate(compose_config(["trainer.bucket_boundaries=[64,32]"]))
    if HIERARCHICAL_MODELS:
        name = sorted(HIERARCHICAL_MODELS)[0]
        with pytest.raises(ConfigError, match="trainer.bucketing=true"):  # validation too
            validate(compose_config([f"model={name}", "trainer.bucketing=true"]))
        assert resolve(compose_config([f"model={name}"])).features.bucketing is False


@pytest.mark.unit
def test_derived_boundaries_are_quantiles_capped_by_max_length():
    lengths = np.arange(1, 1001)
    boundaries = pipeline.derive_boundaries(lengths, 500)
    assert boundaries[-1] == 500 and boundaries == sorted(set(boundaries))
    assert all(b % 8 == 0 for b in boundaries[:-1]) and boundaries[0] == 64  # 1/16 of 1..1000, rounded up


# --- tokenized-data cache ---------------------------------------------------------------------------

def splits(train_texts):
    def examples(texts):
        return Examples(texts=list(texts), labels=np.arange(len(texts)) % 2)

    return DatasetSplits(name="tiny", train=examples(train_texts), validation=examples(POSITIVE[:2]),
                         test=examples(NEGATIVE[:3] + ["an unseen word here"]), class_names=["neg", "pos"])


@pytest.mark.unit
def test_cache_hit_skips_tokenization_and_gives_identical_arrays(tmp_path, monkeypatch):
    cfg = compose_config([f"cache_dir={tmp_path}", "preprocess.max_length=6"])
    data = splits(POSITIVE + NEGATIVE)
    fitted, arrays, cached = encode_splits(resolve(cfg).features, data)
    assert not cached and len(list((tmp_path / "tokens").glob("*.npz"))) == 1

    def not_again(*args, **kwargs):
        raise AssertionError("tokenized again despite the cache")

    monkeypatch.setattr(WordPreprocessor, "fit", not_again)
    monkeypatch.setattr(WordPreprocessor, "encode", not_again)
    loaded, again, cached = encode_splits(resolve(cfg).features, data)
    assert cached
    for first, second in zip(arrays, again):
        assert first.dtype == second.dtype == np.int32 and np.array_equal(first, second)
    # the vocabulary comes back too: the logged model (preprocessing inside) is the same
    assert loaded.vectorizer.get_vocabulary() == fitted.vectorizer.get_vocabulary()
    texts = np.asarray(["a wonderful unseen film", "awful"], dtype=object)
    assert np.array_equal(loaded.apply(texts), fitted.apply(texts))


@pytest.mark.unit
def test_cache_key_changes_with_the_preprocessing_and_the_data(tmp_path):
    cfg = compose_config([f"cache_dir={tmp_path}", "preprocess.max_length=6"])
    encode_splits(resolve(cfg).features, splits(POSITIVE + NEGATIVE))
    assert encode_splits(resolve(cfg).features, splits(POSITIVE + NEGATIVE))[2]
    longer = compose_config([f"cache_dir={tmp_path}", "preprocess.max_length=7"])
    _, arrays, cached = encode_splits(resolve(longer).features, splits(POSITIVE + NEGATIVE))
    assert not cached and arrays[0].shape[1] == 7
    _, _, cached = encode_splits(resolve(cfg).features, splits(POSITIVE + NEGATIVE[:-1]))  # another sample of the data
    assert not cached
    assert len(list((tmp_path / "tokens").glob("*.npz"))) == 3


@pytest.mark.unit
def test_unreadable_cache_file_is_rebuilt(tmp_path):
    cfg = compose_config([f"cache_dir={tmp_path}", "preprocess.max_length=6"])
    _, arrays, _ = encode_splits(resolve(cfg).features, splits(POSITIVE + NEGATIVE))
    [file] = (tmp_path / "tokens").glob("*.npz")
    file.write_bytes(b"half a file")
    _, again, cached = encode_splits(resolve(cfg).features, splits(POSITIVE + NEGATIVE))
    assert not cached and np.array_equal(arrays[0], again[0])
    assert encode_splits(resolve(cfg).features, splits(POSITIVE + NEGATIVE))[2]


# --- GPU-ready settings, checked on CPU ------------------------------------------------------------

@pytest.mark.unit
def test_kernel_tag_follows_kerass_cudnn_conditions():
    spec = InputSpec(vocab_size=100, sequence_shape=(None,), num_classes=2, mask_zero=True)

    def kernel(name, device="gpu"):
        return recurrent_kernels(build_model(compose_config(tiny_model(name)).model, spec), device)

    assert kernel("lstm") == "cudnn" and kernel("bilstm") == "cudnn" and kernel("gru") == "cudnn"
    assert kernel("lstm_recurrent_dropout") == "generic"  # recurrent dropout rules cuDNN out
    assert kernel("lstm", device="cpu") == "cpu" and kernel("fasttext_bigram") == "none"


@pytest.mark.integration
@pytest.mark.parametrize("jit_compile", [False, True])
def test_mixed_bfloat16_and_xla_train_on_cpu_with_a_float32_output(skewed, jit_compile):
    tokens, lengths, labels = skewed
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        spec = InputSpec(vocab_size=100, sequence_shape=(None,), num_classes=2, mask_zero=True)
        model = build_model(compose_config(tiny_model("lstm")).model, spec)
        model.compile(optimizer="adam", loss=loss_for(2), jit_compile=jit_compile)
        dataset = pipeline.make_dataset(tokens[:128], labels[:128] % 2, 32, seed=0, boundaries=[32],
                                        pad_to_boundaries=jit_compile)
        history = model.fit(dataset, epochs=1, shuffle=False, verbose=0)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    assert np.isfinite(history.history["loss"][0])
    assert model.get_layer("lstm").compute_dtype == "bfloat16"
    assert model.output.dtype == "float32"  # the loss is computed in float32


# --- one run, end to end --------------------------------------------------------------------------

@pytest.mark.slow
def test_bucketed_run_records_its_settings_and_reuses_the_tokens(real_data_dir, tmp_path, caplog):
    import logging

    from seqlab.workflow.train import train

    caplog.set_level(logging.INFO, logger="seqlab")

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    overrides = [f"data_dir={real_data_dir}", "debug=tiny", "preprocess.max_length=80", f"tracking.uri={uri}",
                 f"cache_dir={tmp_path / 'cache'}", "tracking.log_model=false", "trainer.checkpoint=false"]
    train(compose_config(overrides))
    assert "tokenized data from the cache" not in caplog.text
    caplog.clear()
    train(compose_config(overrides))
    assert "tokenized data from the cache" in caplog.text
    client = MlflowClient(uri)
    first, second = client.search_runs([client.get_experiment_by_name("imdb").experiment_id],
                                       order_by=["attributes.start_time ASC"])
    for run in (first, second):
        assert run.info.status == "FINISHED"
        assert run.data.params["trainer.bucketing"] == "True" and run.data.params["preprocess.padding"] == "post"
        assert run.data.tags["lstm_kernel"] == "cpu"
    assert first.data.tags["data_fingerprint"] == second.data.tags["data_fingerprint"]
    assert first.data.metrics["accuracy/test"] == second.data.metrics["accuracy/test"]  # same seed, same data
