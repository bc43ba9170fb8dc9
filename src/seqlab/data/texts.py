"""Threads as the one string a model reads: each message on one line (a speaker word in front where
`preprocess.speaker_tokens`), messages joined by seqlab.data.common.MESSAGE_SEPARATOR; the same for training, for
`seqlab predict` and for the served model."""

from __future__ import annotations

import json
import re

import numpy as np

from seqlab.data.common import join_messages
from seqlab.data.tables import cell_text

# A speaker becomes one word in front of each message (preprocess.speaker_tokens), e.g. "xxspkpersuader".
SPEAKER_PREFIX = "xxspk"


def speaker_token(speaker) -> str:
    """'Persuader' -> 'xxspkpersuader': one word that survives the text standardization."""
    name = re.sub(r"[\W_]+", "", cell_text(speaker).lower())
    return f"{SPEAKER_PREFIX}{name}" if name else ""


def message_text(message, speaker_tokens: bool = False, speaker=None) -> str:
    """One message (a string or a {text, speaker} record) as one line."""
    if isinstance(message, dict):
        speaker = message.get("speaker", speaker)
        message = message.get("text", "")
    text = " ".join(cell_text(message).split())
    if speaker_tokens and text:
        token = speaker_token(speaker)
        return f"{token} {text}" if token else text
    return text


def thread_text(messages, speaker_tokens: bool = False) -> str:
    """A thread (a list of messages, or a JSON list of them) as one string, messages joined by '\\n'."""
    if isinstance(messages, str):
        stripped = messages.strip()
        if stripped.startswith("["):
            try:
                messages = json.loads(stripped)
            except json.JSONDecodeError:
                pass
        if isinstance(messages, str):
            return join_messages([messages])  # one message
    if isinstance(messages, dict) or not isinstance(messages, (list, tuple, np.ndarray)):
        raise TypeError(f"a thread must be a list of messages, not {type(messages).__name__}")
    lines = [message_text(m, speaker_tokens) for m in messages]
    return join_messages([line for line in lines if line])


def as_text(value, speaker_tokens: bool = False, thread: bool = False) -> str:
    """One example as the string a model reads: a thread (messages as strings or {text, speaker} records, or, where
    `thread`, their JSON list) joined as training joins it; a missing value is an empty text."""
    if isinstance(value, (list, tuple, np.ndarray)) or (thread and isinstance(value, str)):
        return thread_text(value, speaker_tokens)
    return "" if value is None or (isinstance(value, float) and np.isnan(value)) else str(value)
