"""The text standardization every tokenizer applies first (a registered Keras function: saved models name it)."""

from __future__ import annotations

import keras
import tensorflow as tf

# Messages of a thread arrive joined by "\n" (seqlab.data.common.MESSAGE_SEPARATOR); flat models see
# the boundary as this token.
SEPARATOR_TOKEN = "xxsep"


@keras.saving.register_keras_serializable(package="seqlab")
def standardize_text(text):
    """Lowercase, drop HTML line breaks, mark message boundaries, replace punctuation by spaces.

    Unicode separators and control characters become spaces too: a token holding one (U+0085, U+2028)
    would split into two lines of the saved vocabulary file and the logged model would not load.
    """
    text = tf.strings.lower(text)
    text = tf.strings.regex_replace(text, r"<br\s*/?>", " ")
    text = tf.strings.regex_replace(text, r"\n", f" {SEPARATOR_TOKEN} ")
    return tf.strings.regex_replace(text, r"[\p{P}\p{S}\p{Z}\p{C}]", " ")
