"""What MLflow, logs and messages may show: secret-looking config values and URI credentials replaced."""

from __future__ import annotations

import logging
import re

REDACTED = "<redacted>"
# The user:password@ of scheme://user:password@host, up to the URI's LAST "@" (a password may hold "@" and "/"; a
# URI ends at whitespace). An "@" in a path hides the host too, never shows a password. file:///a@b has no user.
URI_CREDENTIALS = re.compile(r"(?<=://)(?!/)\S*@")
# Config keys whose values are never written to MLflow (matched on the last part of the dotted key).
SECRET_KEY = re.compile(r"(^|_)(passw(or)?d|secret|secret_key|token|api_?key|access_key|credentials?|private_key)$",
                        re.IGNORECASE)  # password, db_passwd, client_secret, hf_token, api_key; not max_tokens


def redact_uri(text: str) -> str:
    """scheme://user:password@host -> scheme://<redacted>@host, anywhere in `text`."""
    return URI_CREDENTIALS.sub(f"{REDACTED}@", text)


def safe_overrides(overrides) -> list[str]:
    """Command-line overrides with secret-looking keys' values and URI credentials replaced."""
    safe = []
    for override in overrides:
        key, equals, value = str(override).partition("=")
        secret = equals and SECRET_KEY.search(key.lstrip("+~").rsplit(".", 1)[-1])
        safe.append(f"{key}={REDACTED}" if secret else redact_uri(str(override)))
    return safe


def redacted(cfg):
    """The resolved config (a new DictConfig) with secret-looking keys and URI credentials replaced."""
    from omegaconf import OmegaConf

    def clean(key, value):
        if isinstance(value, dict):
            return {k: clean(k, v) for k, v in value.items()}
        if isinstance(value, list):
            return [clean(key, v) for v in value]
        if value is not None and not isinstance(value, bool) and SECRET_KEY.search(str(key)):
            return REDACTED
        return redact_uri(value) if isinstance(value, str) else value

    return OmegaConf.create(clean("", OmegaConf.to_container(cfg, resolve=True)))


def redact_text(text: str) -> str:
    """URI credentials, and the value of each `key=value` word whose key looks secret (a sweep's job overrides)."""
    text = redact_uri(text)
    return re.sub(r"\S+=\S*", lambda word: safe_overrides([word.group()])[0], text) if "=" in text else text


def redact_credentials(record: logging.LogRecord) -> bool:
    """A logging filter: the user:password@ of any URI in a log line becomes <redacted>@, a secret-looking key's
    `key=value` becomes key=<redacted>."""
    message = record.getMessage()
    if "@" in message or "=" in message:
        cleaned = redact_text(message)
        if cleaned != message:
            record.msg, record.args = cleaned, None
    return True
