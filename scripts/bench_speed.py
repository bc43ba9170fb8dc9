"""Speed benchmark: a plain Keras script of the tutorial LSTM against seqlab's padded and bucketed runs.

Every run is a fresh child process of this one, on the same data (the same seeded IMDB sample and word
ids), one after the other; `--rounds 2` alternates them twice, so a change in the machine's speed shows.
Prints, as a Markdown block for docs/speed.md: seconds per epoch, test accuracy after the last epoch, peak
memory, start-up time before the first step, tokenizing time (first time and from the cache), and the
ratios seqlab padded / plain Keras and padded / bucketed; then an interleaved check: seqlab's padded and bucketed
LSTM training one epoch's batches in turn in one process, so that their ratio is free of the machine's drift.

    .venv/bin/python scripts/bench_speed.py --rounds 1     # full data, 3 epochs: 15-25 min on 2 CPU cores
    .venv/bin/python scripts/bench_speed.py --max-train 600 --max-test 300 --max-length 100 --epochs 1  # smoke
    .venv/bin/python scripts/bench_speed.py --startup-only --startup-runs 5   # tokenizing and start-up: minutes

Start-up is timed in every run (process start to the first training step) and, alone, in `--startup-runs`
more runs of the default `seqlab train` that stop at their first step.
"""

from __future__ import annotations

import time

STARTED = time.perf_counter()  # before the heavy imports: start-up includes them

import argparse  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import platform  # noqa: E402
import resource  # noqa: E402
import shutil  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
from pathlib import Path  # noqa: E402

VARIANTS = ("plain_keras", "seqlab_padded", "seqlab_bucketed")
STEP_BATCHES = 0  # training steps per model in the interleaved step check; 0: one epoch's worth


def overrides(args, cache_dir: str) -> list[str]:
    """The seqlab config every run shares (the plain script reads its data through the same config)."""
    items = [f"preprocess.max_length={args.max_length}", f"trainer.epochs={args.epochs}",
             f"trainer.batch_size={args.batch_size}", f"trainer.seed={args.seed}", f"cache_dir={cache_dir}",
             "trainer.progress=false"]
    for key, value in (("dataset.max_train", args.max_train), ("dataset.max_test", args.max_test),
                       ("data_dir", args.data_dir)):
        if value is not None:
            items.append(f"{key}={value}")
    return items


def peak_memory_mb() -> float:
    scale = 1 if platform.system() == "Darwin" else 1024  # ru_maxrss: bytes on macOS, KiB on Linux
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale / 2**20


# --- children: one run each, one JSON line on stdout ------------------------------------------------

def compose(items: list[str]):
    from hydra import compose as hydra_compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from seqlab.config.compose import config_dir, register_configs

    register_configs()
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        return hydra_compose(config_name="config", overrides=items)


def plan_of(items: list[str], gpus: int = 0):
    """The run plan (seqlab.config.plan.RunPlan) of the composed config: bucketing, padding and threads decided."""
    from seqlab.config.plan import resolve

    return resolve(compose(items), gpus=gpus)


def plan_with_threads(items: list[str], gpus: int = 0):
    """(plan, threads): the run plan, its CPU threads per op set as `seqlab train` sets them (one per op for the LSTM
    on CPU), before TensorFlow starts. Fails rather than measure with other threads than the plan's."""
    from seqlab.training.runtime import set_intra_op_threads

    # With trainer.weight_decay null, resolve() asks Keras for the optimizer's default, and that starts TensorFlow,
    # after which the threads cannot be set any more: Adam's default (0; the models here compile with "adam") given.
    plan = plan_of([*items, "trainer.weight_decay=0"], gpus=gpus)
    threads = set_intra_op_threads(plan.runtime.intra_op_threads, plan.runtime.threads_asked)
    if threads != plan.runtime.intra_op_threads:
        raise SystemExit(f"bench_speed: TensorFlow started before its CPU threads were set: {threads} per op, not "
                         f"the plan's {plan.runtime.intra_op_threads}")
    return plan, threads


def run_tokenize(items: list[str]) -> dict:
    """Tokenizing every split: once into an empty cache, then from it."""
    from seqlab.data import load_dataset
    from seqlab.features.cache import encode_splits

    plan = plan_of([*items, "trainer.bucketing=false"])  # the padded runs' encoding: padding as configured
    data = load_dataset(plan.data)
    timings = []
    for _ in range(2):
        started = time.perf_counter()
        _, arrays, cached = encode_splits(plan.features, data)
        timings.append((time.perf_counter() - started, cached))
    (first, first_cached), (again, again_cached) = timings
    if first_cached or not again_cached:
        raise SystemExit("bench_speed: the tokenizing benchmark needs an empty cache_dir")
    encode_splits(plan_of([*items, "preprocess.padding=post"]).features, data)  # the bucketed run's, for its start-up
    return {"examples": sum(len(a) for a in arrays), "first_seconds": first, "cached_seconds": again}


def create_store(store: Path) -> None:
    """The MLflow store every run then finds in place: creating its tables (seconds) is not start-up."""
    from mlflow.tracking import MlflowClient

    MlflowClient(f"sqlite:///{store}").search_experiments()


def run_plain_keras(items: list[str]) -> dict:
    """The tutorial's script, in plain Keras, on seqlab's word ids (pre-padded to max_length, as the tutorial)."""
    import keras

    from seqlab.data import load_dataset
    from seqlab.features.cache import encode_splits

    plan = plan_of([*items, "trainer.bucketing=false"])
    trainer, preprocess = plan.trainer, plan.features.preprocess
    data = load_dataset(plan.data)
    _, (x_train, x_val, x_test), _ = encode_splits(plan.features, data)  # from the cache the tokenizing run filled
    keras.utils.set_random_seed(trainer.seed)
    model = keras.Sequential([
        keras.Input(shape=(preprocess.max_length,), dtype="int32"),
        keras.layers.Embedding(preprocess.vocab_size, 32),
        keras.layers.LSTM(100),
        keras.layers.Dense(1, activation="sigmoid"),
    ])
    model.compile(loss="binary_crossentropy", optimizer="adam", metrics=["accuracy"])
    epoch_seconds, first_step = [], []

    class Timer(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            first_step.append(time.perf_counter() - STARTED)

        def on_epoch_begin(self, epoch, logs=None):
            self.started = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            epoch_seconds.append(time.perf_counter() - self.started)

    started = time.perf_counter()
    model.fit(x_train, data.train.labels, validation_data=(x_val, data.validation.labels), epochs=trainer.epochs,
              batch_size=trainer.batch_size, callbacks=[Timer()], verbose=2)
    fit_seconds = time.perf_counter() - started
    _, accuracy = model.evaluate(x_test, data.test.labels, batch_size=trainer.batch_size, verbose=0)
    return {"epoch_seconds": epoch_seconds, "fit_seconds": fit_seconds, "test_accuracy": accuracy,
            "startup_seconds": first_step[0]}


def run_seqlab(items: list[str], bucketing: bool, store: Path) -> dict:
    """`seqlab train` as a user runs it (Hydra, MLflow, checkpoints, logged model), its figures read from MLflow."""
    from mlflow.tracking import MlflowClient

    from seqlab.cli import entry as cli
    from seqlab.training.callbacks import EpochLogger

    first_step = []
    original = EpochLogger.on_train_begin

    def on_train_begin(self, logs=None):  # the last thing before the first step
        first_step.append(time.perf_counter() - STARTED)
        original(self, logs)

    EpochLogger.on_train_begin = on_train_begin
    name = f"bench_{'bucketed' if bucketing else 'padded'}"
    uri = f"sqlite:///{store}"
    code = cli.main(["train", *items, "model=lstm", f"trainer.bucketing={str(bucketing).lower()}",
                     f"tracking.uri={uri}", "tracking.experiment=bench_speed", f"tracking.run_name={name}",
                     f"hydra.run.dir={store.parent / 'outputs'}"])
    if code != 0:
        raise SystemExit(f"bench_speed: seqlab train failed with exit code {code}")
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("bench_speed")
    [run] = client.search_runs([experiment.experiment_id], f"attributes.run_name = '{name}'",
                               order_by=["attributes.start_time DESC"], max_results=1)
    history = sorted(client.get_metric_history(run.info.run_id, "time/epoch_seconds"), key=lambda m: m.step)
    return {"epoch_seconds": [m.value for m in history], "fit_seconds": run.data.metrics["time/train_seconds"],
            "test_accuracy": run.data.metrics["accuracy/test"], "startup_seconds": first_step[0]}


def run_steps(items: list[str], batches: int) -> dict:
    """seqlab's padded and bucketed LSTM (its model builder, its pipelines, its CPU threads) training side by side
    in one process, a batch of one then a batch of the other: whatever the machine's speed does, both see it,
    so the ratio of their step times is free of the drift that separate runs minutes apart pick up."""
    import keras
    import numpy as np

    from seqlab.data import load_dataset
    from seqlab.features import pipeline
    from seqlab.features.cache import encode_splits
    from seqlab.features.preprocess import InputSpec
    from seqlab.models.catalog import build_model
    from seqlab.models.layers import loss_for
    from seqlab.training.runtime import gpu_count

    runs = {}
    for name, bucketing in (("padded", False), ("bucketed", True)):
        plan, threads = plan_with_threads([*items, "model=lstm", f"trainer.bucketing={str(bucketing).lower()}"],
                                          gpus=gpu_count())
        trainer = plan.trainer
        data = load_dataset(plan.data)
        preprocessor, (x_train, _, _), _ = encode_splits(plan.features, data)  # from the cache
        boundaries = pipeline.bucket_boundaries(plan.features, x_train)
        spec = InputSpec(plan.features.preprocess.vocab_size, (None,) if boundaries else preprocessor.sequence_shape,
                         data.num_classes, preprocessor.mask_zero)
        keras.utils.set_random_seed(trainer.seed)
        model = build_model(plan.model, spec)
        model.compile(optimizer="adam", loss=loss_for(data.num_classes))
        dataset = pipeline.make_dataset(x_train, data.train.labels, trainer.batch_size, trainer.seed, boundaries)
        epoch = list(dataset)  # one epoch's batches (seconds to gather): the same make-up of widths as a run's
        batches = batches or len(epoch)
        for x, y in (epoch[0], epoch[1], epoch[-1]):  # untimed: tracing the step, for the partial batch too
            model.train_on_batch(x, y)
        runs[name] = (model, (epoch * 2)[:batches], [])
    for index in range(batches):
        for name in (runs if index % 2 else reversed(runs)):  # alternate which goes first
            model, data_batches, seconds = runs[name]
            started = time.perf_counter()
            model.train_on_batch(*data_batches[index])
            seconds.append(time.perf_counter() - started)
    widths = {name: float(np.mean([x.shape[1] for x, _ in runs[name][1]])) for name in runs}
    milliseconds = {name: 1000 * sum(runs[name][2]) / batches for name in runs}
    per_step = {name: milliseconds[name] / widths[name] for name in runs}
    return {"batches": batches, "ms_per_batch": milliseconds, "mean_width": widths, "ms_per_time_step": per_step,
            "intra_op_threads": int(threads)}


def run_startup(items: list[str], store: Path) -> dict:
    """`seqlab train` (the default: bucketed LSTM) up to its first training step, then exit: start-up alone."""
    from seqlab.cli import entry as cli
    from seqlab.training.callbacks import EpochLogger

    def on_train_begin(self, logs=None):
        print("BENCH_RESULT " + json.dumps({"startup_seconds": time.perf_counter() - STARTED,
                                            "peak_memory_mb": peak_memory_mb()}), flush=True)
        os._exit(0)  # the scratch store holds this unfinished run; it is deleted with the store

    EpochLogger.on_train_begin = on_train_begin
    cli.main(["train", *items, f"tracking.uri=sqlite:///{store}", "tracking.experiment=bench_startup",
              f"hydra.run.dir={store.parent / 'outputs'}"])
    raise SystemExit("bench_speed: seqlab train ended before its first training step")


def child(args) -> None:
    items = json.loads(args.items)
    if args.child == "startup":
        return run_startup(items, Path(args.store))
    if args.child == "tokenize":
        result = run_tokenize(items)
        create_store(Path(args.store))
    elif args.child == "steps":
        result = run_steps(items, args.step_batches)
    elif args.child == "plain_keras":
        result = run_plain_keras(items)
    else:
        result = run_seqlab(items, bucketing=args.child == "seqlab_bucketed", store=Path(args.store))
    result["peak_memory_mb"] = peak_memory_mb()
    print("BENCH_RESULT " + json.dumps(result), flush=True)


# --- parent: runs the children, prints the table ----------------------------------------------------

def spawn(kind: str, items: list[str], store: Path, log, extra: tuple[str, ...] = ()) -> dict:
    command = [sys.executable, str(Path(__file__).resolve()), "--child", kind, "--items", json.dumps(items),
               "--store", str(store), *extra]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false"}
    print(f"bench_speed: running {kind} ...", file=sys.stderr, flush=True)
    process = subprocess.run(command, capture_output=True, text=True, env=env)
    log.write(f"===== {kind}\n{process.stdout}\n{process.stderr}\n")
    lines = [line for line in process.stdout.splitlines() if line.startswith("BENCH_RESULT ")]
    if process.returncode != 0 or not lines:
        raise SystemExit(f"bench_speed: {kind} failed (exit code {process.returncode}); see {log.name}:\n"
                         f"{process.stderr[-2000:]}")
    return json.loads(lines[-1][len("BENCH_RESULT "):])


def markdown(args, tokenize: dict, runs: dict[str, list[dict]], startups: list[float], seconds: float,
             steps: dict | None = None) -> str:
    def median(kind, pick):
        return statistics.median(pick(result) for result in runs[kind])

    sample = f"{args.max_train or 'all'} train (10% held out for validation) / {args.max_test or 'all'} test reviews"
    command = " ".join(["scripts/bench_speed.py", *sys.argv[1:]])
    tokenizing = (f"- tokenizing {tokenize['examples']:,} reviews: {tokenize['first_seconds']:.1f} s the first time, "
                  f"{tokenize['cached_seconds']:.2f} s from the cache (targets 30 s and 3 s)")
    startup = (f"- start-up of `seqlab train` (the default bucketed LSTM; data from the cache, MLflow store in place), "
               f"process start to the first training step, {len(startups)} runs: median "
               f"**{statistics.median(startups):.1f} s** ({', '.join(f'{s:.1f}' for s in startups)}; target under 15 s)"
               if startups else "")
    if args.startup_only:
        return "\n".join([f"Start-up and tokenizing only, {sample}; `{command}` on {platform.node() or 'this machine'} "
                          f"({os.cpu_count()} CPUs), {seconds / 60:.0f} min in all.", "", tokenizing, startup])

    # model.fit's wall time / epochs: with validation, graph tracing, and seqlab's checkpoints and MLflow logging
    epoch = {kind: median(kind, lambda r: r["fit_seconds"] / args.epochs) for kind in VARIANTS}
    labels = {"plain_keras": "plain Keras script (tutorial LSTM, pre padding)",
              "seqlab_padded": "`seqlab train trainer.bucketing=false` (pre padding)",
              "seqlab_bucketed": "`seqlab train trainer.bucketing=true` (buckets, masks)"}
    lines = [
        f"Tutorial LSTM, batch {args.batch_size}, max length {args.max_length}, {sample}, {args.epochs} epoch(s), "
        f"seed {args.seed}; {args.rounds} round(s), medians; `{command}` "
        f"on {platform.node() or 'this machine'} ({os.cpu_count()} CPUs), {seconds / 60:.0f} min in all.",
        "",
        "| run | seconds / epoch | each epoch (s) | test accuracy | peak memory (MB) | start-up (s) |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for kind in VARIANTS:
        accuracy = ", ".join(f"{r['test_accuracy']:.4f}" for r in runs[kind])
        epochs = "; ".join(" / ".join(f"{s:.0f}" for s in r["epoch_seconds"]) for r in runs[kind])
        lines.append(f"| {labels[kind]} | {epoch[kind]:.1f} | {epochs} | {accuracy} | "
                     f"{median(kind, lambda r: r['peak_memory_mb']):.0f} | "
                     f"{median(kind, lambda r: r['startup_seconds']):.1f} |")
    lines += [
        "",
        "Seconds / epoch: `model.fit`'s wall time over the epochs (validation, tracing, and seqlab's checkpoints "
        "and MLflow logging included); each epoch: Keras' epoch span. Medians over rounds; accuracies of every round.",
        "",
        f"- seqlab padded / plain Keras, per epoch: **{epoch['seqlab_padded'] / epoch['plain_keras']:.2f}x** "
        "(target at most 1.05x)",
        f"- padded / bucketed, per epoch: **{epoch['seqlab_padded'] / epoch['seqlab_bucketed']:.2f}x** "
        "(target at least 2x, with test accuracy at least as high)",
        *([step_line(steps)] if steps else []),
        tokenizing,
        "- start-up column: process start to the first training step (imports, config, data from the cache)",
        *([startup] if startup else []),
    ]
    return "\n".join(lines)


def step_line(steps: dict) -> str:
    padded, bucketed = steps["ms_per_batch"]["padded"], steps["ms_per_batch"]["bucketed"]
    widths, per_step = steps["mean_width"], steps["ms_per_time_step"]
    return (f"- interleaved training steps (`train_on_batch`, one process, {steps['batches']} batches each, the two "
            f"models in turn, so both see the same machine speed; `intra_op_threads={steps['intra_op_threads']}`): "
            f"padded {padded:.0f} ms per batch (width {widths['padded']:.0f}), bucketed {bucketed:.0f} ms (mean width "
            f"{widths['bucketed']:.0f}): padded / bucketed **{padded / bucketed:.2f}x**, with {widths['padded'] / widths['bucketed']:.2f}x "
            f"fewer time steps; one time step costs {per_step['padded']:.3f} ms padded and {per_step['bucketed']:.3f} "
            f"ms with masks ({per_step['bucketed'] / per_step['padded'] - 1:+.0%})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--max-train", type=int, default=None, help="training reviews (default: all 25,000)")
    parser.add_argument("--max-test", type=int, default=None, help="test reviews (default: all 25,000)")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--max-length", type=int, default=500)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--rounds", type=int, default=1, help="times to run the three, alternating")
    parser.add_argument("--data-dir", default=None, help="default: $SEQLAB_DATA_DIR")
    parser.add_argument("--output", type=Path, default=None, help="also write the Markdown block here")
    parser.add_argument("--startup-runs", type=int, default=3,
                        help="extra runs of `seqlab train` timed to their first step only (median reported)")
    parser.add_argument("--startup-only", action="store_true",
                        help="only tokenizing and start-up: no training runs (minutes, not hours)")
    parser.add_argument("--step-batches", type=int, default=STEP_BATCHES,
                        help="training steps per model in the interleaved padded/bucketed step check (default: one epoch's)")
    parser.add_argument("--no-step-check", action="store_true", help="skip the interleaved step check")
    parser.add_argument("--child", choices=["tokenize", "startup", "steps", *VARIANTS], help=argparse.SUPPRESS)
    parser.add_argument("--items", help=argparse.SUPPRESS)
    parser.add_argument("--store", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(args)

    started = time.perf_counter()
    scratch = Path(tempfile.mkdtemp(prefix="seqlab-bench-"))  # its own cache and MLflow store, removed at the end
    try:
        items = overrides(args, str(scratch / "cache"))
        store = scratch / "mlflow.db"
        with open(scratch / "bench.log", "w") as log:
            tokenize = spawn("tokenize", items, store, log)  # also fills the cache the runs read
            runs = {kind: [] for kind in VARIANTS}
            for _ in range(0 if args.startup_only else args.rounds):
                for kind in VARIANTS:
                    runs[kind].append(spawn(kind, items, store, log))
            steps = (spawn("steps", items, store, log, ("--step-batches", str(args.step_batches)))
                     if not (args.no_step_check or args.startup_only) else None)
            startups = [spawn("startup", items, store, log)["startup_seconds"] for _ in range(args.startup_runs)]
        block = markdown(args, tokenize, runs, startups, time.perf_counter() - started, steps)
        print(block)
        if args.output:
            args.output.write_text(block + "\n")
    except SystemExit:
        kept = Path(tempfile.gettempdir()) / "seqlab-bench.log"
        if (scratch / "bench.log").exists():
            shutil.copy(scratch / "bench.log", kept)
            print(f"bench_speed: the children's output is in {kept}", file=sys.stderr)
        raise
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
