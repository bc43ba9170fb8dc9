"""The Transformer, subword units, schedules and an ensemble on the full IMDB data: the runs (skipped where a finished
run of the same setting and seed is already in the store), then one table, written, dated, into docs/benchmarks.md
between `<!-- architectures:start -->` and `<!-- architectures:end -->`.

    .venv/bin/python scripts/benchmark_architectures.py --tracking-uri sqlite:///bench.db     # everything (hours)
    .venv/bin/python scripts/benchmark_architectures.py --table-only --tracking-uri ...       # the table only

Each row is `seqlab train experiment=<preset> <overrides> trainer.seed=<seed>`; the ensemble is `seqlab ensemble` of
the seed-1 runs of the three presets in ENSEMBLE (which must be in the store, e.g. from
`seqlab train -m experiment=imdb_fasttext_bigram trainer.seed=1,2,3`).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from datetime import date

import numpy as np
from mlflow.tracking import MlflowClient

from benchmark_models import DOCS, machine, write_between_markers

START, END = "<!-- architectures:start -->", "<!-- architectures:end -->"
EXPERIMENT = "benchmark_models"
# label: (overrides after the preset, seeds); the params that tell the rows apart are in KEYS
ROWS = {
    "`transformer` (the preset: words, warmup + cosine)": (["experiment=imdb_transformer"], [1, 2, 3]),
    "`transformer`, `preprocess=subword` (460 pieces)": (
        ["experiment=imdb_transformer", "preprocess=subword", "preprocess.max_length=460"], [1]),
    "`transformer`, constant learning rate": (["experiment=imdb_transformer", "trainer.schedule=constant"], [1]),
}
KEYS = ("model.name", "preprocess.name", "trainer.schedule", "preprocess.max_length")
ENSEMBLE = ["fasttext_bigram", "cnn_lstm", "transformer"]  # the three best presets; their seed-1 runs


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tracking-uri", default="sqlite:///mlflow.db")
    p.add_argument("--table-only", action="store_true")
    return p


def finished_runs(client: MlflowClient) -> list:
    experiment = client.get_experiment_by_name(EXPERIMENT)
    if experiment is None:
        return []
    return client.search_runs([experiment.experiment_id], "attributes.status = 'FINISHED'", max_results=1000)


def matching(runs: list, overrides: list[str], seed: int) -> object | None:
    """The first finished run of this row's setting and seed (its KEYS params as the overrides leave them)."""
    wanted = {"model.name": overrides[0].split("imdb_", 1)[1], "preprocess.name": "words",
              "trainer.schedule": "warmup_cosine", "preprocess.max_length": "400"}
    for override in overrides[1:]:
        key, value = override.split("=", 1)
        wanted["preprocess.name" if key == "preprocess" else key] = value
    for run in runs:
        params = run.data.params
        if params.get("trainer.seed") == str(seed) and all(params.get(k) == v for k, v in wanted.items()):
            return run
    return None


def ensembles_in(runs: list) -> list:
    return [run for run in runs if run.data.params.get("model.name") == "ensemble"]


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    client = MlflowClient(args.tracking_uri)
    seqlab = [sys.executable, "-m", "seqlab.cli"]
    preset = next(iter(ROWS.values()))[0]
    for index, (overrides, seeds) in enumerate(ROWS.values()):
        for seed in seeds:
            if not args.table_only and matching(finished_runs(client), overrides, seed) is None:
                subprocess.run([*seqlab, "train", *overrides, f"trainer.seed={seed}", "trainer.progress=false",
                                f"tracking.uri={args.tracking_uri}"], check=True)
        if index == 0 and not args.table_only and not ensembles_in(finished_runs(client)):  # before the variants
            runs = finished_runs(client)
            ids = [next(r.info.run_id for r in runs if r.data.params.get("model.name") == name
                        and r.data.params.get("trainer.seed") == "1") for name in ENSEMBLE[:-1]]
            ids.append(matching(runs, preset, 1).info.run_id)  # the preset's own seed-1 run
            subprocess.run([*seqlab, "ensemble", *ids, "--tracking-uri", args.tracking_uri], check=True)
    runs = finished_runs(client)
    ensembles = ensembles_in(runs)

    lines = ["| setting | seeds | test accuracy (mean ± std) | per seed | epochs kept | seconds per epoch |",
             "| --- | ---: | ---: | --- | ---: | ---: |"]
    for label, (overrides, seeds) in ROWS.items():
        found = [run for run in (matching(runs, overrides, seed) for seed in seeds) if run is not None]
        if not found:
            continue
        accuracy = np.array([run.data.metrics["accuracy/test"] for run in found])
        spread = f" ± {accuracy.std(ddof=1):.4f}" if len(found) > 1 else ""
        epochs = np.mean([run.data.metrics.get("time/epochs", np.nan) for run in found])
        seconds = np.mean([run.data.metrics.get("time/epoch_seconds", np.nan) for run in found])
        lines.append(f"| {label} | {len(found)} | **{accuracy.mean():.4f}{spread}** | "
                     f"{', '.join(f'{a:.4f}' for a in accuracy)} | {epochs:.0f} | {seconds:.0f} |")
    for run in sorted(ensembles, key=lambda run: run.info.start_time):
        metrics = run.data.metrics
        lines.append(f"| `seqlab ensemble`, {run.info.run_name.split(': ', 1)[-1]} (best member "
                     f"{metrics.get('accuracy/test_best_member', float('nan')):.4f}) | 1 | "
                     f"**{metrics['accuracy/test']:.4f}** | | | |")
    block = (f"{date.today().isoformat()}, {machine()}, `{args.tracking_uri}` (experiment `{EXPERIMENT}`); written by "
             f"`scripts/benchmark_architectures.py`.\n\n" + "\n".join(lines))
    print(block)
    write_between_markers(DOCS, START, END, block)
    return 0


if __name__ == "__main__":
    sys.exit(main())
