"""`seqlab ensemble RUN_OR_MODEL...`: average logged models' class probabilities, evaluate and record it as a run.

The ensemble itself: seqlab.workflow.ensemble. Prints the ensemble's model URI on stdout.
"""

from __future__ import annotations

import argparse
import os

from seqlab.workflow.ensemble import ensemble


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="seqlab ensemble", description=__doc__.splitlines()[0].split(": ", 1)[1])
    p.add_argument("members", nargs="+", metavar="RUN_OR_MODEL",
                   help="two or more: a run id (its logged model), runs:/<id>/model, models:/<name>/<version> or "
                        "models:/<name>@<alias>")
    p.add_argument("--tracking-uri", default=os.environ.get("MLFLOW_TRACKING_URI", "sqlite:///mlflow.db"),
                   help="MLflow store of the members, where the ensemble's run goes too (default: "
                        "$MLFLOW_TRACKING_URI, else sqlite:///mlflow.db)")
    p.add_argument("--experiment", help="MLflow experiment of the ensemble's run (default: the first member's)")
    p.add_argument("--run-name", help="default: 'ensemble of N: <member run names>'")
    p.add_argument("--data-dir", default=os.environ.get("SEQLAB_DATA_DIR", "data"),
                   help="where the members' dataset is (default: $SEQLAB_DATA_DIR, else ./data)")
    p.add_argument("--batch-size", type=int, default=256)
    return p


def main(argv: list[str]) -> int:
    args = parser().parse_args(argv)
    run_id = ensemble(args.members, args.tracking_uri, args.data_dir, args.experiment, args.run_name, args.batch_size)
    print(f"runs:/{run_id}/model")
    return 0
