"""The `seqlab` command: `train` (Hydra), `predict` and `compare`.

User errors (bad config, bad data) end with one paragraph on stderr and a non-zero exit code, never a
traceback; set SEQLAB_DEBUG=1 to see the traceback anyway.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # before TensorFlow is imported anywhere
# MLflow draws a progress bar per artifact download, six for one `predict` from a local store: noise here.
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")

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


def report_error(error: BaseException, where: str = "") -> int:
    """One paragraph on stderr (the traceback too with SEQLAB_DEBUG=1); returns the exit code."""
    from seqlab.errors import SeqlabError

    if os.environ.get("SEQLAB_DEBUG"):
        import traceback

        traceback.print_exception(error)
    if isinstance(error, SeqlabError):
        code, message = error.exit_code, str(error)
    else:  # a bug rather than bad input: still no traceback unless asked for
        code, message = 1, (f"unexpected {type(error).__name__}: {error}. Set SEQLAB_DEBUG=1 to see the traceback "
                            "(and please report it).")
    from seqlab.errors import redact_uri

    print(f"seqlab: {where}error: {redact_uri(message)}", file=sys.stderr, flush=True)
    return code


def report_interrupt(error: KeyboardInterrupt) -> int:
    from seqlab.errors import Terminated

    terminated = isinstance(error, Terminated)
    print(f"seqlab: {'terminated (SIGTERM)' if terminated else 'interrupted (Ctrl-C)'}; a started run is marked "
          "KILLED and continues with trainer.resume=<run_id>.", file=sys.stderr, flush=True)
    return 143 if terminated else 130  # 128 + the signal's number, as shells report it


def train_command(argv: list[str]) -> int:
    import hydra
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    from seqlab.config import register_configs, validate
    from seqlab.errors import SeqlabError

    register_configs()

    @hydra.main(version_base="1.3", config_path=str(config_dir()), config_name="config")
    def hydra_train(cfg):
        try:
            validate(cfg)  # before importing TensorFlow: bad values stop the run in a second
            from seqlab.train import train

            return train(cfg)
        except SeqlabError as error:
            if HydraConfig.get().mode != RunMode.MULTIRUN:
                sys.exit(report_error(error))
            error.reported = True
            report_error(error, where=f"job {HydraConfig.get().job.num}: ")
            raise  # Hydra records the failed job; the sweeper decides whether the sweep goes on
        except Exception as error:
            if HydraConfig.get().mode != RunMode.MULTIRUN:  # Hydra would log the overrides, credentials and all
                sys.exit(report_error(error))
            error.raised_by_job = True  # not one of Hydra's own errors (bad overrides), see below
            raise

    sys.argv = ["seqlab train", *argv]
    hydra_errors = os.environ.get("HYDRA_FULL_ERROR")
    os.environ["HYDRA_FULL_ERROR"] = "1"  # Hydra raises its errors to us instead of printing them
    try:
        hydra_train()
    except SeqlabError as error:
        return error.exit_code if getattr(error, "reported", False) else report_error(error)
    except Exception as error:
        from hydra.errors import HydraException
        from omegaconf.errors import OmegaConfBaseException

        if getattr(error, "raised_by_job", False) or not isinstance(
                error, (HydraException, OmegaConfBaseException, ValueError)):
            return report_error(error)  # a bug or a plugin's failure, not a bad override
        return report_error(hydra_config_error(error, argv))
    finally:
        if hydra_errors is None:
            os.environ.pop("HYDRA_FULL_ERROR", None)
        else:
            os.environ["HYDRA_FULL_ERROR"] = hydra_errors
    return 0


def hydra_config_error(error: Exception, argv: list[str]):
    """Hydra's composition errors (unknown group option or key, wrong type, bad override syntax) as one
    ConfigError naming the key, the value and what is allowed."""
    from dataclasses import fields, is_dataclass

    from hydra.errors import MissingConfigException, OverrideParseException
    from omegaconf.errors import ConfigAttributeError, ConfigKeyError, OmegaConfBaseException, ValidationError

    from seqlab.errors import ConfigError

    cause = error.__cause__
    if isinstance(error, MissingConfigException) and error.options and error.missing_cfg_file:
        group, _, option = error.missing_cfg_file.rpartition("/")
        return ConfigError(f"Config group '{group}' has no option '{option}'; its options are "
                           f"{', '.join(error.options)}.")
    if isinstance(cause, (ConfigKeyError, ConfigAttributeError)) and cause.full_key:
        parent = cause.full_key.rpartition(".")[0]
        schema = cause.object_type
        keys = ", ".join(field.name for field in fields(schema)) if is_dataclass(schema) else "in conf/"
        return ConfigError(f"Unknown config key '{cause.full_key}'; the keys of "
                           f"{repr(parent) if parent else 'the root config'} are {keys}.")
    if isinstance(cause, ValidationError) and cause.full_key:
        return ConfigError(f"Config key '{cause.full_key}' is {cause.value!r}: {cause.msg.splitlines()[0]}.")
    if isinstance(error, OverrideParseException):
        return ConfigError(f"Cannot parse the override {_unparsable_override(argv)!r}: {str(error).splitlines()[0]}. "
                           "Overrides look like key=value, group=option or -m key=a,b (Hydra's override grammar).")
    if isinstance(cause, OmegaConfBaseException):
        return ConfigError(f"{str(error).splitlines()[0]} ({cause.msg.splitlines()[0]}).")
    return ConfigError(" ".join(str(error).split()) or type(error).__name__)


def _unparsable_override(argv: list[str]) -> str:
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parser = OverridesParser.create()
    for argument in argv:
        if not argument.startswith("-"):
            try:
                parser.parse_override(argument)
            except Exception:  # Hydra's OverrideParseException and ANTLR's errors
                return argument
    return " ".join(argv)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(USAGE)
        return 0 if argv else 2
    command, rest = argv[0], argv[1:]
    try:
        if command == "train":
            return train_command(rest)
        if command == "predict":
            from seqlab.predict import main as predict_main

            return predict_main(rest)
        if command == "compare":
            from seqlab.compare import main as compare_main

            return compare_main(rest)
    except KeyboardInterrupt as error:  # also SIGTERM during a run (seqlab.errors.Terminated)
        return report_interrupt(error)
    except SystemExit:
        raise
    except Exception as error:  # predict and compare: one paragraph, never a traceback
        return report_error(error)
    print(f"seqlab: unknown command {command!r}\n\n{USAGE}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
