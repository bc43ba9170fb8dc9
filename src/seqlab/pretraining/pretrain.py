"""`seqlab pretrain`: learn word vectors (`pretrain=word2vec`) or a language-model encoder (`pretrain=lm`) from
unlabeled text, recorded as an MLflow run that `model.pretrained=runs:/<id>` (or `model.pretrained=pretrain`, which
finds or runs it) then fine-tunes from.

A pretraining's content key (the corpus' texts, the settings that change the result, the seqlab version) is its run's
tag `seqlab.pretrain_key`: a second request for the same key reuses the FINISHED run instead of training again.
Texts are tokenized as the models tokenize them (seqlab.features.text.standardize_text, then spaces), so a vector's
word is the model vocabulary's word.
"""

from __future__ import annotations

import hashlib
import json
import logging
import tempfile
import time
from pathlib import Path
from typing import Optional

import numpy as np
from omegaconf import DictConfig, OmegaConf

import seqlab
from seqlab.pretraining.language_model import END_OF_TEXT, train_language_model
from seqlab.pretraining.options import PRETRAIN_EXPERIMENT as EXPERIMENT
from seqlab.pretraining.word2vec import train_word2vec

log = logging.getLogger(__name__)

KEY_TAG = "seqlab.pretrain_key"
# Settings that do not change the vectors: never part of the content key.
NOT_IN_KEY = ("probe_words",)


# --- tokens -------------------------------------------------------------------------------------------------

def tokenize(texts: list[str]) -> list[list[str]]:
    """The models' standardization (lowercase, punctuation out, message boundaries as a word), split on spaces."""
    import tensorflow as tf

    from seqlab.features.text import standardize_text

    tokens = []
    for batch in tf.data.Dataset.from_tensor_slices(texts).batch(4096).map(standardize_text):
        tokens += [text.decode("utf-8", "replace").split() for text in batch.numpy()]
    return tokens


def content_key(p: DictConfig, corpus) -> str:
    """What makes two pretrainings the same: the settings that change the vectors (`p`: the pretrain group), the
    corpus' texts and seqlab's version."""
    settings = {k: v for k, v in OmegaConf.to_container(p, resolve=True).items() if k not in NOT_IN_KEY}
    digest = hashlib.sha256(json.dumps({"seqlab": seqlab.__version__, "settings": settings,
                                        "corpus": corpus.digest()}, sort_keys=True).encode())
    return digest.hexdigest()[:24]


# --- the run ------------------------------------------------------------------------------------------------

def neighbours_table(words: list[str], vectors: np.ndarray, probes: list[str], k: int = 8) -> str:
    """Markdown: each probe word's nearest words by cosine similarity (a sanity check of the vectors)."""
    index = {w: i for i, w in enumerate(words)}
    norms = vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-8)
    rows = ["| word | nearest words (cosine similarity) |", "| --- | --- |"]
    for word in probes:
        if word not in index:
            rows.append(f"| {word} | (not in the vocabulary) |")
            continue
        similarity = norms @ norms[index[word]]
        similarity[index[word]] = -np.inf
        similarity[[i for i, w in enumerate(words[:3]) if w in ("", "[UNK]", END_OF_TEXT)]] = -np.inf
        best = np.argsort(-similarity)[:k]
        rows.append(f"| {word} | {', '.join(f'{words[i]} ({similarity[i]:.2f})' for i in best)} |")
    return "\n".join(rows) + "\n"


def default_probes(words: list[str]) -> list[str]:
    """Frequent words past the function words: ranks 100, 150, ... in the vocabulary."""
    content = [w for w in words if w not in ("", "[UNK]", END_OF_TEXT) and len(w) > 3]
    return content[100:500:50]


def find_finished(key: str) -> Optional[str]:
    import mlflow

    runs = mlflow.search_runs(search_all_experiments=True, output_format="list", max_results=1,
                              filter_string=f"tags.`{KEY_TAG}` = '{key}' and attributes.status = 'FINISHED'",
                              order_by=["attributes.start_time DESC"])
    return runs[0].info.run_id if runs else None


def pretrain(plan, data=None, reuse: bool = True, standalone: bool = False) -> str:
    """Run (or, with `reuse`, find) the pretraining the plan's pretrain group describes; returns its MLflow run id.

    `plan`: a resolved run plan (seqlab.config.plan.RunPlan) with a pretrain group. `data`: the dataset's splits when
    the caller has them (the `train` corpus source, the test-text check). `standalone`: the `seqlab pretrain`
    command, whose tracking.experiment and tracking.registered_model apply (a training run's name its own).
    """
    import mlflow

    from seqlab.data import load_dataset
    from seqlab.data.corpus import load_corpus
    from seqlab.record.lifecycle import run_lifecycle
    from seqlab.record.naming import unique_run_name
    from seqlab.record.store import ensure_experiment, run_link

    p, record = plan.pretrained.pretrain, plan.record
    if data is None:
        data = load_dataset(plan.data)  # the `train` source, and the test texts the corpus must not hold
    corpus = load_corpus(p, plan.data, data)
    key = content_key(p, corpus)
    mlflow.set_tracking_uri(record.uri)
    if reuse:
        found = find_finished(key)
        if found:
            log.info(f"pretraining {p.name} on {', '.join(corpus.parts)}: reusing run {found} (same corpus and "
                     f"settings, key {key})")
            return found
    experiment = record.experiment if standalone else EXPERIMENT  # a training run's is its own
    experiment_id = ensure_experiment(record.uri, experiment, {
        "mlflow.note.content": "seqlab pretrainings (seqlab pretrain, or model.pretrained=pretrain): word vectors and "
                               "language models that training runs fine-tune from.",
        "mlflow.experimentKind": "custom_model_development"})
    sources = "+".join(Path(str(source)).stem for source in corpus.parts)
    name = unique_run_name(experiment_id, f"{p.name} {p.embedding_dim}d {sources} ({data.name})")
    tags = {KEY_TAG: key, "pretrain": p.name, "dataset": data.name,
            "mlflow.note.content": _description(p, corpus, data.name)}
    if corpus.test_texts_removed:
        log.info(f"{corpus.test_texts_removed} corpus texts equal to test texts of {data.name} are left out")
    with run_lifecycle(experiment_id, run_name=name, tags=tags, command="seqlab pretrain", resumable=False) as run:
        log.info(f"pretraining {p.name} on {len(corpus.texts)} texts "
                 f"({', '.join(f'{s}: {n}' for s, n in corpus.parts.items())}) as MLflow run {run.info.run_id} in "
                 f"experiment {experiment!r}; in the UI: {run_link(record.uri, experiment_id, run.info.run_id)}")
        model = train_and_log(p, corpus, key, data.name, run.info.run_id)
        if record.registered_model and standalone:
            mlflow.register_model(model.model_uri, record.registered_model)
    return run.info.run_id


def train_and_log(p, corpus, key: str, dataset: str, run_id: str):
    """Inside the pretraining's run: params, corpus, tokens, the vectors (or language model) trained epoch by epoch,
    nearest neighbours, and the encoder model. Returns the logged model's ModelInfo."""
    import mlflow

    from seqlab.pretraining.vectors import ENCODER_MODEL, FOLDER, LOADER_MODULE, write_folder
    from seqlab.record.naming import param_text
    from seqlab.record.signals import raise_if_interrupted

    params = {f"pretrain.{k}": v for k, v in OmegaConf.to_container(p, resolve=True).items()}
    params |= {f"corpus.{source}": count for source, count in corpus.parts.items()}
    params["corpus.test_texts_removed"] = corpus.test_texts_removed
    mlflow.log_params({k: param_text(v) for k, v in params.items()})
    log_corpus(corpus)
    started = time.perf_counter()
    sentences = tokenize(corpus.texts)
    tokens = sum(map(len, sentences))
    mlflow.log_metrics({"corpus/texts": len(sentences), "corpus/tokens": tokens,
                        "time/tokenize_seconds": time.perf_counter() - started})

    def on_epoch(epoch: int, values: dict) -> None:
        raise_if_interrupted()
        values = {k: float(v) for k, v in values.items() if v is not None}
        mlflow.log_metrics(values, step=epoch)
        log.info(f"pretrain epoch {epoch + 1}/{p.epochs}: " + ", ".join(f"{k} {v:.4f}" for k, v in values.items()))

    started = time.perf_counter()
    lstm = None
    if p.name == "lm":
        words, vectors, lstm = train_language_model(p, sentences, on_epoch)
    else:
        words, vectors = train_word2vec(p, sentences, on_epoch)
    mlflow.log_metrics({"time/train_seconds": time.perf_counter() - started, "vocabulary": len(words)})
    table = neighbours_table(words, vectors, list(p.probe_words) or default_probes(words))
    mlflow.log_text(table, "neighbours.md")
    log.info(f"nearest neighbours (pretrained vectors):\n{table}")
    info = {"kind": p.name, "run_id": run_id, "key": key, "settings": OmegaConf.to_container(p, resolve=True),
            "corpus": corpus.parts, "tokens": tokens, "words": len(words), "dataset": dataset}
    with tempfile.TemporaryDirectory(prefix="seqlab-pretrain-") as scratch:
        folder = write_folder(Path(scratch) / FOLDER, words, vectors, info, lstm)
        mlflow.log_artifacts(str(folder), FOLDER)
        model = mlflow.pyfunc.log_model(name=ENCODER_MODEL, loader_module=LOADER_MODULE, data_path=str(folder),
                                        pip_requirements=["gensim", f"mlflow=={mlflow.__version__}"],
                                        tags={"mlflow.note.content": f"Pretrained {p.name} vectors "
                                              f"({len(words)} words x {vectors.shape[1]}) on "
                                              f"{', '.join(corpus.parts)}."})
        mlflow.set_tag("seqlab.pretrain_model_id", model.model_id)
    return model


def log_corpus(corpus) -> None:
    """The corpus as the run's MLflow dataset input (the UI's Datasets), with its content digest."""
    import warnings

    import mlflow.data
    import pandas as pd

    with warnings.catch_warnings():  # MLflow says it registers two local sources for one path
        warnings.simplefilter("ignore")
        dataset = mlflow.data.from_pandas(pd.DataFrame({"text": corpus.texts}), name="+".join(corpus.parts),
                                          source=", ".join(corpus.parts), digest=corpus.digest()[:16])
    mlflow.log_input(dataset, context="pretraining")


def _description(p, corpus, dataset: str) -> str:
    what = {"word2vec": f"word vectors ({p.get('algorithm')}, gensim)", "lm": "an LSTM language model"}[p.name]
    return (f"Pretraining of {what} on {', '.join(f'{s} ({n} texts)' for s, n in corpus.parts.items())}"
            f" for dataset {dataset}. Fine-tune from it with `model.pretrained=runs:/<this run id>`; "
            "`neighbours.md` lists probe words' nearest neighbours.")
