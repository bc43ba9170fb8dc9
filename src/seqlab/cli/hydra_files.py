"""Hydra's record of a run (`<run dir>/.hydra/config.yaml`, `hydra.yaml`, `overrides.yaml`, a sweep's
`multirun.yaml`) rewritten with secret-looking keys' values and URI credentials replaced, as MLflow gets them.

Hydra writes these files before the job starts (hydra.core.utils.run_job, then Callback.on_job_start): the job's
callback rewrites them before seqlab reads any data or opens the store. The rest of each file stays as Hydra wrote
it (interpolations unresolved).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from seqlab.redaction import SECRET_KEY, redact_uri, safe_overrides

JOB_FILES = ("config.yaml", "hydra.yaml", "overrides.yaml")


def redact_job_files(config: DictConfig) -> None:
    """The files Hydra wrote for this job, and its sweep's multirun.yaml where it is one."""
    hydra = config.hydra
    if hydra.output_subdir is not None:
        folder = Path(str(hydra.runtime.output_dir)) / str(hydra.output_subdir)
        for name in JOB_FILES:
            redact_file(folder / name)
    if hydra.mode == RunMode.MULTIRUN:  # written before the first job starts, rewritten with it
        redact_sweep_file(config)


def redact_sweep_file(config: DictConfig) -> None:
    redact_file(Path(str(config.hydra.sweep.dir)) / "multirun.yaml")


def redact_file(path: Path) -> None:
    """Rewrite `path` redacted, in one step (a reader never sees half a file); untouched when nothing changes."""
    if not path.is_file():
        return
    original = OmegaConf.to_container(OmegaConf.load(path), resolve=False)
    cleaned = redact_tree(original)
    if cleaned == original:
        return
    partial = path.with_name(f".{path.name}.redacting")
    OmegaConf.save(OmegaConf.create(cleaned), partial)
    os.replace(partial, path)


def redact_tree(value, key: str = ""):
    """A YAML tree with secret-looking keys' values, `key=value` overrides of such keys and URI credentials
    replaced; Hydra's override_dirname is rebuilt from the redacted overrides (a joined string: no key to find)."""
    if isinstance(value, dict):
        cleaned = {k: redact_tree(v, str(k)) for k, v in value.items()}
        hydra = cleaned.get("hydra") if isinstance(cleaned.get("hydra"), dict) else None
        if hydra is not None:
            _rebuild_override_dirname(hydra)
        return cleaned
    if isinstance(value, list):
        return [redact_tree(v, key) for v in value]
    if value is not None and not isinstance(value, bool) and SECRET_KEY.search(key):
        return "<redacted>"
    if isinstance(value, str):
        return safe_overrides([value])[0] if "=" in value else redact_uri(value)
    return value


def _rebuild_override_dirname(hydra: dict) -> None:
    """As Hydra builds it (config_loader_impl.get_overrides_dirname): the task's overrides but excluded keys,
    sorted, joined by item_sep, each "=" replaced by kv_sep."""
    job, overrides = hydra.get("job"), (hydra.get("overrides") or {}).get("task")
    if not isinstance(job, dict) or not isinstance(job.get("override_dirname"), str) or overrides is None:
        return
    settings = ((job.get("config") or {}).get("override_dirname") or {})
    exclude = set(settings.get("exclude_keys") or [])
    lines = sorted(line for line in overrides if line.partition("=")[0].lstrip("+~") not in exclude)
    joined = str(settings.get("item_sep", ",")).join(lines)
    job["override_dirname"] = re.sub("=", str(settings.get("kv_sep", "=")).replace("\\", r"\\"), joined)
