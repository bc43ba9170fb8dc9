"""`seqlab ensemble MEMBER...`: one model averaging the class probabilities of logged models, recorded as a run.

Each member is a model `seqlab train` logged (raw strings in, so each keeps its own preprocessing: words,
hierarchical, another vocabulary). The ensemble is a Keras model calling the members on the same input and
averaging their outputs; it is evaluated once on the members' test split (they must share one dataset config)
and logged like any run's model, so `seqlab predict`, `seqlab compare` and MLflow serving take it unchanged.
The run lists its members as params and tags and, in MLflow, as its input models (lineage).
"""

from __future__ import annotations

import dataclasses
import logging
import re
from pathlib import Path

from seqlab.errors import ConfigError, SeqlabError
from seqlab.record.lifecycle import run_lifecycle

log = logging.getLogger(__name__)

MODEL_NAME = "ensemble"


class Member:
    """A logged model of a seqlab run: its URI, run, config and loaded classifier."""

    def __init__(self, reference: str, client):
        import mlflow
        from omegaconf import OmegaConf

        from seqlab.config.compose import structured

        self.uri = reference if ":/" in reference or reference.startswith("models:") else f"runs:/{reference}/model"
        try:
            info = mlflow.models.get_model_info(self.uri)
            self.run = client.get_run(info.run_id)
            config = mlflow.artifacts.load_text(f"{self.run.info.artifact_uri}/config.yaml")
        except Exception as error:  # MLflow raises several types for a bad URI, a missing run or artifact
            raise SeqlabError(f"Cannot use ensemble member {reference!r}: {str(error).splitlines()[0]}. Give a run "
                              "id of 'seqlab train', runs:/<id>/model or models:/<name>/<version>, in the store "
                              "--tracking-uri names.") from None
        self.model_id = info.model_id
        try:  # the schema's defaults fill keys an earlier seqlab did not write, so dataset configs compare
            self.config = structured(OmegaConf.to_container(OmegaConf.create(config)))
        except Exception as error:  # OmegaConf's errors for keys or types this version does not know
            raise SeqlabError(f"Ensemble member {reference!r}: its run's config.yaml does not fit this seqlab "
                              f"version ({str(error).splitlines()[0]}).") from None
        self.classifier = _classifier(self.uri)
        self.name = self.run.info.run_name

    @property
    def dataset(self) -> dict:
        from omegaconf import OmegaConf

        return OmegaConf.to_container(self.config.dataset)


def _classifier(uri: str):
    """The member's seqlab.serving.pyfunc.TextClassifier (its end-to-end Keras model in `.model`): read by seqlab's own pyfunc
    loader from the logged model's files, or, for a model an earlier seqlab logged with the Keras flavor, as
    `seqlab predict` reads it."""
    import mlflow

    from seqlab.serving import predict
    from seqlab.serving import pyfunc as serving

    info = mlflow.models.get_model_info(uri)
    if "keras" in info.flavors:
        return predict.KerasFlavorModel(uri, info.metadata or {}).classifier
    folder = Path(mlflow.artifacts.download_artifacts(uri)) / "data" / serving.DATA_FOLDER
    if not (folder / serving.ATTRIBUTES_FILE).exists():
        raise SeqlabError(f"Ensemble member {uri!r} is not a model logged by seqlab (no {serving.ATTRIBUTES_FILE}).")
    return serving._load_pyfunc(str(folder))


def check_members(members: list[Member]) -> None:
    """Same dataset config (so the same test split), same classes, thread input read alike. Raises ConfigError."""
    if len(members) < 2:
        raise ConfigError("seqlab ensemble needs at least two members (runs or models).")
    first = members[0]
    for member in members[1:]:
        if member.dataset != first.dataset:
            keys = sorted(k for k in {*member.dataset, *first.dataset} if member.dataset.get(k) != first.dataset.get(k))
            raise ConfigError(f"Ensemble members {first.uri} and {member.uri} were trained on different datasets or "
                              f"splits (dataset.{', dataset.'.join(keys)} differ); an ensemble is evaluated on one "
                              "test split, so its members must share the dataset config.")
        if member.classifier.class_names != first.classifier.class_names:
            raise ConfigError(f"Ensemble members {first.uri} and {member.uri} have different classes "
                              f"({first.classifier.class_names} and {member.classifier.class_names}).")
        if member.classifier.speaker_tokens != first.classifier.speaker_tokens:
            raise ConfigError(f"Ensemble members {first.uri} and {member.uri} read threads differently "
                              "(preprocess.speaker_tokens); one input cannot serve both.")
    columns = {tuple(m.classifier.metadata_columns) for m in members if m.classifier.metadata_columns}
    if len(columns) > 1:
        raise ConfigError("Ensemble members take different metadata columns; they must take the same ones (or none).")


def build_ensemble(members: list[Member]):
    """A Keras model: raw text (and metadata numbers, where a member takes them) -> the mean of the members'
    probabilities. The members' models are nested unchanged (their own preprocessing inside)."""
    import keras

    columns = next((m.classifier.metadata_columns for m in members if m.classifier.metadata_columns), [])
    text = keras.Input(shape=(), dtype="string", name="text")
    inputs = text
    if columns:
        numbers = keras.Input(shape=(len(columns),), dtype="float32", name="metadata")
        inputs = {"text": text, "metadata": numbers}
    outputs = []
    for index, member in enumerate(members):
        network = member.classifier.model
        network.name = f"member_{index + 1}"  # nested models need unique names (two LSTM runs: lstm_on_text twice)
        uses_metadata = bool(member.classifier.metadata_columns)
        outputs.append(network({"text": text, "metadata": numbers} if uses_metadata else text))
    mean = keras.layers.Average(name="mean_probability", dtype="float32")(outputs)
    return keras.Model(inputs, mean, name=MODEL_NAME), columns


def ensemble(members: list[str], tracking_uri: str, data_dir: str, experiment: str | None = None,
             run_name: str | None = None, batch_size: int = 256) -> str:
    """Build, evaluate and record the ensemble of `members` (run ids or model URIs); returns its run id."""
    import mlflow
    from mlflow.tracking import MlflowClient

    from seqlab.record.store import check_reachable

    check_reachable(tracking_uri)
    mlflow.set_tracking_uri(tracking_uri)
    client = MlflowClient()
    loaded = []
    for reference in members:
        loaded.append(Member(reference, client))
        log.info(f"member {len(loaded)}: {loaded[-1].uri} ({loaded[-1].name})")
    check_members(loaded)
    network, columns = build_ensemble(loaded)
    first = loaded[0]
    experiment_id = first.run.info.experiment_id
    if experiment:
        found = client.get_experiment_by_name(experiment)
        experiment_id = found.experiment_id if found else client.create_experiment(experiment)
    names = ", ".join(m.name for m in loaded)
    run_name = run_name or re.sub(r"['\"\\]", "", f"ensemble of {len(loaded)}: {names}")[:250]
    tags = {"ensemble.member_runs": ",".join(m.run.info.run_id for m in loaded),
            "mlflow.note.content": description(loaded, member_scores(loaded))}
    with run_lifecycle(experiment_id, run_name=run_name, tags=tags, command="seqlab ensemble",
                       resumable=False) as run:
        record_ensemble(loaded, network, columns, data_dir, batch_size, run)
    return run.info.run_id


def member_scores(members: list[Member]) -> dict:
    """Each member's accuracy/test (the name of seqlab 0.1's runs too), or None."""
    return {m.uri: m.run.data.metrics.get("accuracy/test", m.run.data.metrics.get("test_accuracy")) for m in members}


def record_ensemble(members: list[Member], network, columns: list[str], data_dir: str, batch_size: int, run) -> None:
    """Inside the ensemble's run: its params and inputs, the members' test split evaluated once, the model."""
    import mlflow
    from mlflow.entities import LoggedModelInput

    from seqlab.analysis.evaluate import close_figures, test_metrics
    from seqlab.analysis.significance import log_predictions
    from seqlab.config.compose import to_flat_dict
    from seqlab.config.plan import data_part
    from seqlab.data import load_dataset
    from seqlab.record.datasets import log_dataset
    from seqlab.serving.export import log_end_to_end
    from seqlab.serving.pyfunc import TextClassifier

    first = members[0]
    data = load_dataset(dataclasses.replace(data_part(first.config), data_dir=data_dir, cache_dir=None))
    classifier = TextClassifier(first.classifier.class_names, columns, first.classifier.speaker_tokens, model=network)
    log.info(f"evaluating the mean of {len(members)} models on the {len(data.test)} test examples of {data.name}")
    probabilities = classifier.probabilities(list(data.test.texts), data.test.metadata if columns else None,
                                             batch_size)
    outputs = probabilities[:, 1:] if probabilities.shape[1] == 2 else probabilities  # as the network outputs
    mlflow.log_params({"model.name": MODEL_NAME, "ensemble.members": ",".join(m.uri for m in members)[:6000],
                       "ensemble.size": len(members),
                       **{f"dataset.{k}": v for k, v in to_flat_dict(first.config.dataset).items() if v is not None}})
    log_dataset(data)  # the UI's Dataset column, as the members' runs show it
    # the client's call: MLflow's fluent log_inputs refuses models outside Databricks, its stores take them
    mlflow.MlflowClient().log_inputs(run.info.run_id, models=[LoggedModelInput(m.model_id) for m in members
                                                               if m.model_id])
    metrics, report, confusion = test_metrics(data.test.labels, outputs, data.class_names,
                                              title=f"{run.info.run_name} on {data.name}")
    scores = [score for score in member_scores(members).values() if score is not None]
    try:
        mlflow.log_metrics({**metrics, **({"accuracy/test_best_member": max(scores)} if scores else {})})
        log_predictions(data.test.labels, outputs, data.class_names, data.test.ids)
        mlflow.log_text(report, "classification_report.txt")
        mlflow.log_figure(confusion, "confusion_matrix.png")
    finally:
        close_figures(confusion)
    log_end_to_end(network, classifier, data, step=0, model_name=f"ensemble of {len(members)}")
    log.info("test " + ", ".join(f"{k.split('/')[0]} {v:.4f}" for k, v in metrics.items())
             + (f" (best member: accuracy {max(scores):.4f})" if scores else ""))


def description(members: list[Member], scores: dict) -> str:
    """The run's Description in the MLflow UI: its members, linked, with their test accuracy."""
    lines = ["Ensemble: the mean of these models' class probabilities.", ""]
    for member in members:
        score = scores.get(member.uri)
        lines.append(f"- `{member.uri}` ({member.name}, {member.config.model.name}"
                     f"{f', accuracy/test {score:.4f}' if score is not None else ''})")
    return "\n".join(lines)
