"""The `seqlab` command: `train` (Hydra), `predict` and `compare`.

User errors (bad config, bad data) end with one paragraph on stderr and a non-zero exit code, never a
traceback; set SEQLAB_DEBUG=1 to see the traceback anyway.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # before TensorFlow is imported anywhere

USAGE = """usage: seqlab COMMAND [ARGS]

commands:
  train [OVERRIDES]         train and evaluate one model (Hydra overrides; --help lists config groups)
  predict MODEL_URI ...     predict labels for raw text with a logged model (seqlab predict --help)
  compare [OPTIONS]         table of runs read back from MLflow (seqlab compare --help)
"""


def config_dir() -> Path:
    """`conf/` of the source checkout (editable install) or the copy shipped inside the package."""
    here = Path(__file__).resolve().parent
    for candidate in (here.parents[1] / "conf", here / "conf"):
        if (candidate / "config.yaml").exists():
            return candidate
    raise SystemExit("seqlab: cannot find its conf/ folder (config.yaml); reinstall with 'make install'.")


def report_error(error: BaseException) -> int:
    from seqlab.errors import SeqlabError

    if os.environ.get("SEQLAB_DEBUG"):
        import traceback

        traceback.print_exception(error)
    code = error.exit_code if isinstance(error, SeqlabError) else 1
    print(f"seqlab: error: {error}", file=sys.stderr, flush=True)
    return code


def train_command(argv: list[str]) -> int:
    import hydra
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    from seqlab.config import register_configs
    from seqlab.errors import SeqlabError

    register_configs()

    @hydra.main(version_base="1.3", config_path=str(config_dir()), config_name="config")
    def hydra_train(cfg):
        from seqlab.train import train

        try:
            return train(cfg)
        except SeqlabError as error:
            code = report_error(error)
            if HydraConfig.get().mode == RunMode.MULTIRUN:
                raise  # Hydra records the failed job and the sweep goes on or stops as the launcher decides
            sys.exit(code)

    sys.argv = ["seqlab train", *argv]
    hydra_train()
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(USAGE)
        return 0 if argv else 2
    command, rest = argv[0], argv[1:]
    if command == "train":
        return train_command(rest)
    if command == "predict":
        from seqlab.predict import main as predict_main

        return predict_main(rest)
    if command == "compare":
        from seqlab.compare import main as compare_main

        return compare_main(rest)
    print(f"seqlab: unknown command {command!r}\n\n{USAGE}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
