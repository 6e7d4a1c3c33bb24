"""The captcha alphabet (a-z0-9) and text <-> class-index encoding, shared by every stage."""

from __future__ import annotations

import numpy as np

ALPHABET = "0123456789abcdefghijklmnopqrstuvwxyz"
NUM_CLASSES = len(ALPHABET)
CAPTCHA_LENGTH = 4
IMAGE_HEIGHT = 50
IMAGE_WIDTH = 100

_INDEX = {c: i for i, c in enumerate(ALPHABET)}


def is_valid_text(text: str) -> bool:
    return len(text) == CAPTCHA_LENGTH and all(c in _INDEX for c in text)


def encode(text: str) -> np.ndarray:
    """'ab12' -> array([10, 11, 1, 2])."""
    if not is_valid_text(text):
        raise ValueError(f"not a {CAPTCHA_LENGTH}-character a-z0-9 text: {text!r}")
    return np.array([_INDEX[c] for c in text], dtype=np.int32)


def decode(indices) -> str:
    return "".join(ALPHABET[int(i)] for i in indices)


def captcha_spec() -> dict:
    """What a model reads: image size, text length and alphabet (saved with exported models, served by /health)."""
    return {"height": IMAGE_HEIGHT, "width": IMAGE_WIDTH, "length": CAPTCHA_LENGTH, "alphabet": ALPHABET}
