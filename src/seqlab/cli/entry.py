"""The `seqlab` command: `train` and `pretrain` (Hydra), `predict`, `compare` and `ensemble`.

User errors (bad config, bad data) end with one paragraph on stderr and a non-zero exit code, never a
traceback; set SEQLAB_DEBUG=1 to see the traceback anyway.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading

from hydra.experimental.callback import Callback

from seqlab import __version__
from seqlab.errors import StatusFormatter, report_error, report_interrupt

USAGE = """usage: seqlab COMMAND [ARGS]   (seqlab --version: the installed version)

commands:
  train [OVERRIDES]         train and evaluate one model (Hydra overrides; --help lists config groups)
  pretrain [OVERRIDES]      word vectors or a language model from unlabeled text (pretrain=word2vec|lm)
  predict MODEL_URI ...     predict labels for raw text with a logged model (seqlab predict --help)
  compare [OPTIONS]         table of runs read back from MLflow (seqlab compare --help)
  ensemble RUN_OR_MODEL...  average logged models' probabilities, evaluate and record it (seqlab ensemble --help)

Every command reads the MLflow store from MLFLOW_TRACKING_URI (default sqlite:///mlflow.db); name another with
tracking.uri=... (train) or --tracking-uri (predict, compare). Status goes to stderr, results to stdout.
"""


class ValidateBeforeRunFolder(Callback):
    """A single run's config is validated before Hydra creates its outputs/ folder (a sweep's jobs are validated
    one by one, in hydra_train). Hydra turns a callback's exceptions into warnings: a refusal is a SystemExit.

    The one callback of conf/config.yaml that every run has also keeps secrets out of the files Hydra writes in that
    folder (.hydra/*.yaml, a sweep's multirun.yaml): seqlab.cli.hydra_files rewrites them redacted as each job starts."""

    def on_run_start(self, config, **kwargs) -> None:
        from seqlab.config.validate import validate
        from seqlab.errors import SeqlabError

        try:
            validate(config)  # before importing TensorFlow: bad values stop the run in a second
        except SeqlabError as error:
            raise SystemExit(report_error(error)) from None

    def on_job_start(self, config, **kwargs) -> None:
        from seqlab.cli.hydra_files import redact_job_files

        redact_job_files(config)  # Hydra has just written them, before any of the job's work

    def on_multirun_end(self, config, **kwargs) -> None:
        from seqlab.cli.hydra_files import redact_sweep_file

        redact_sweep_file(config)  # a launcher whose jobs run elsewhere (Slurm) may not have rewritten it yet


class StderrHandler(logging.StreamHandler):
    """Writes to sys.stderr as it is when a record comes, not as it was when the handler was made (tests swap it)."""

    stream = property(lambda self: sys.stderr, lambda self, stream: None)


def log_to_stderr() -> None:
    """seqlab.* status lines on stderr as `seqlab: ...`; a training run's Hydra job logging (conf/config.yaml)
    replaces this with the same lines on stderr and in the run's log file."""
    logger = logging.getLogger("seqlab")
    if not any(isinstance(handler, StderrHandler) for handler in logger.handlers):
        handler = StderrHandler()
        handler.setFormatter(StatusFormatter())
        logger.addHandler(handler)
    logger.setLevel(logging.INFO)


def pretrain_command(argv: list[str]) -> int:
    """`seqlab pretrain [OVERRIDES]`: the `train` entry point running `seqlab.pretraining.pretrain.pretrain` (pretrain=word2vec
    unless another option is given); prints the pretraining's `runs:/<id>` on stdout."""
    if not any(arg.split("=")[0].lstrip("+~") == "pretrain" for arg in argv):
        argv = ["pretrain=word2vec", *argv]
    return train_command(argv, command="pretrain")


def run_pretrain(cfg) -> None:
    from seqlab.config.plan import resolve
    from seqlab.errors import ConfigError
    from seqlab.pretraining.pretrain import pretrain
    from seqlab.record.store import check_no_inherited_run, check_reachable

    if cfg.get("pretrain") is None:
        raise ConfigError("seqlab pretrain needs a pretraining: pretrain=word2vec or pretrain=lm.")
    plan = resolve(cfg, pretraining=True)
    check_no_inherited_run()
    check_reachable(plan.record.uri)  # an unusable store in seconds, as for train (pretrain opens it itself)
    run_id = pretrain(plan, standalone=True)
    print(f"runs:/{run_id}")


def train_command(argv: list[str], command: str = "train") -> int:
    import hydra
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    from seqlab.config.compose import config_dir, register_configs
    from seqlab.config.validate import validate
    from seqlab.errors import SeqlabError

    register_configs()

    @hydra.main(version_base="1.3", config_path=str(config_dir()), config_name="config")
    def hydra_train(cfg):
        try:
            validate(cfg)  # each job of a sweep (a single run was validated by ValidateBeforeRunFolder)
            if command == "pretrain":
                return run_pretrain(cfg)
            from seqlab.workflow.train import train

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

    sys.argv = [f"seqlab {command}", *argv]
    hydra_errors = os.environ.get("HYDRA_FULL_ERROR")
    os.environ["HYDRA_FULL_ERROR"] = "1"  # Hydra raises its errors to us instead of printing them
    handlers = {number: signal.getsignal(number) for number in (signal.SIGINT, signal.SIGTERM)}
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
        if threading.current_thread() is threading.main_thread():  # a sweep that failed kept its own (seqlab.search.sweep)
            for number, handler in handlers.items():
                signal.signal(number, handler if handler is not None else signal.SIG_DFL)
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
    try:
        return run_command(list(sys.argv[1:] if argv is None else argv))
    except BrokenPipeError:  # whoever read stdout left (`seqlab compare | head`): stop quietly, as Unix tools do
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # Python's flush at exit would fail again
        return 141  # 128 + SIGPIPE, as shells report it


def run_command(argv: list[str]) -> int:
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(USAGE)
        return 0
    if argv[0] in ("-V", "--version"):
        print(f"seqlab {__version__}")
        return 0
    log_to_stderr()
    # MLflow's "View run <name> at: <url>" lines would join the results on stdout (`runs:/<id>` of pretrain); seqlab
    # logs the run's link on stderr, its credentials redacted. A user's own setting wins (not with credentials:
    # seqlab.record.check_reachable).
    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
    command, rest = argv[0], argv[1:]
    try:
        if command == "train":
            return train_command(rest)
        if command == "pretrain":
            return pretrain_command(rest)
        if command == "predict":
            from seqlab.cli.predict import main as predict_main

            return predict_main(rest)
        if command == "compare":
            from seqlab.cli.compare import main as compare_main

            return compare_main(rest)
        if command == "ensemble":
            from seqlab.cli.ensemble import main as ensemble_main

            return ensemble_main(rest)
    except KeyboardInterrupt as error:  # also SIGTERM during a run (seqlab.errors.Terminated)
        return report_interrupt(error, command)
    except (SystemExit, BrokenPipeError):
        raise
    except Exception as error:  # predict and compare: one paragraph, never a traceback
        return report_error(error)
    print(f"seqlab: unknown command {command!r}\n\n{USAGE}", file=sys.stderr)
    return 2

