"""Quiet, honest output: TensorFlow imported without its C++ start-up chatter, known-harmless warnings filtered.

TensorFlow's C++ side writes to file descriptor 2 before its logging is set up, so
TF_CPP_MIN_LOG_LEVEL does not reach it: on a CPU machine every command printed a
`failed call to cuInit ... UNKNOWN ERROR (303)` line that reads as a failure. `tensorflow()`
imports it once with descriptor 2 pointed at /dev/null, probes the devices (where that line is
printed), and restores descriptor 2 before anything else runs: Python errors, tracebacks and
every later message are shown as usual. SIMCAPTCHA_VERBOSE=1 shows the start-up lines.
"""

from __future__ import annotations

import contextlib
import os
import sys
import warnings

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

# Keras 3 converting TensorFlow tensors under NumPy 2: harmless, and printed hundreds of times.
HARMLESS_WARNINGS = [
    (r"__array__ implementation doesn't accept a copy keyword", DeprecationWarning),
]


def filter_harmless_warnings() -> None:
    for message, category in HARMLESS_WARNINGS:
        warnings.filterwarnings("ignore", message=message, category=category)


@contextlib.contextmanager
def stderr_silenced():
    """Point file descriptor 2 at /dev/null for the block (C++ writes included), then restore it."""
    if os.environ.get("SIMCAPTCHA_VERBOSE"):
        yield
        return
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "wb") as null:
            os.dup2(null.fileno(), 2)
        yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)


def tensorflow():
    """The tensorflow module, imported (once) without its start-up chatter."""
    if "tensorflow" in sys.modules:
        return sys.modules["tensorflow"]
    filter_harmless_warnings()
    with stderr_silenced():
        import tensorflow as tf

        tf.config.list_physical_devices()  # cuInit and its error line happen here, silenced
    return tf
