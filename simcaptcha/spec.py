"""The captcha spec: image size, text length (fixed or a range) and alphabet, built once and passed to every stage.

Nothing in simcaptcha imports a size, a length or an alphabet as a constant: a spec is made
from the user's data and flags (`CaptchaSpec.from_flags`), saved in every run folder
(spec.json) and inside every saved model, and read back from there by `solve`.
"""

from __future__ import annotations

import string
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from .files import InputError

DEFAULT_ALPHABET = "0-9a-z"  # the --alphabet flag's default (digits first: the class order of the first models)
DEFAULT_LENGTH = "4"  # the --length flag's default
SPEC_FILE = "spec.json"  # in run folders and model folders
MODEL_SPEC_ENTRY = "simcaptcha_spec.json"  # inside a .keras file (a zip archive)
MAX_SIDE = 1024  # a captcha larger than this on either side is refused
MAX_LENGTH = 32
MAX_CLASSES = 512
INKS = ("light", "dark", "mixed")  # text lighter than its ground, darker, or either per captcha
PAD = -1  # label value after the end of a shorter text (and for an unknown character in pseudo-labels)

_RANGES = {"a-z": string.ascii_lowercase, "A-Z": string.ascii_uppercase, "0-9": string.digits}


def parse_alphabet(text: str) -> str:
    """'a-z0-9' -> 'abc...xyz0123456789': ranges of letters or digits expanded, other characters kept in order.

    A path to an existing file reads the alphabet from it (whitespace ignored).
    """
    if text and len(text) < 4096 and Path(text).is_file():
        text = "".join(Path(text).read_text(encoding="utf-8").split())
    out = []
    i = 0
    while i < len(text):
        piece = text[i : i + 3]
        if len(piece) == 3 and piece[1] == "-" and piece[0] <= piece[2] and any(
            piece[0] in r and piece[2] in r for r in _RANGES.values()
        ):
            out.extend(chr(c) for c in range(ord(piece[0]), ord(piece[2]) + 1))
            i += 3
        else:
            out.append(text[i])
            i += 1
    alphabet = "".join(dict.fromkeys(out))  # unique, in the order given
    if len(alphabet) < 2:
        raise InputError(f"alphabet {text!r}: needs at least 2 characters")
    if len(alphabet) > MAX_CLASSES:
        raise InputError(f"alphabet {text!r}: more than {MAX_CLASSES} characters")
    if any(not c.isprintable() or c.isspace() for c in alphabet):
        raise InputError(f"alphabet {text!r}: only printable, non-space characters")
    return alphabet


def parse_length(text: str | int) -> tuple[int, int]:
    """'4' -> (4, 4); '4-6' -> (4, 6)."""
    try:
        parts = [int(p) for p in str(text).split("-")]
    except ValueError:
        raise InputError(f"length {text!r}: expected a number (5) or a range (4-6)") from None
    if len(parts) == 1:
        parts = parts * 2
    if len(parts) != 2 or not 1 <= parts[0] <= parts[1] <= MAX_LENGTH:
        raise InputError(f"length {text!r}: expected a number (5) or a range (4-6) within 1-{MAX_LENGTH}")
    return parts[0], parts[1]


@dataclass(frozen=True)
class CaptchaSpec:
    """What a model reads: images of height x width, texts of min_length..max_length characters of `alphabet`,
    drawn in `ink` lighter ("light") or darker ("dark") than their background, or either per captcha
    ("mixed"): the network always sees the text bright (preprocess turns dark ink over)."""

    height: int
    width: int
    min_length: int
    max_length: int
    alphabet: str
    ink: str = "light"

    def __post_init__(self):
        if not (8 <= self.height <= MAX_SIDE and 8 <= self.width <= MAX_SIDE):
            raise InputError(f"captcha size {self.width}x{self.height}: each side must be 8 to {MAX_SIDE} pixels")
        if not 1 <= self.min_length <= self.max_length <= MAX_LENGTH:
            raise InputError(f"text length {self.min_length}-{self.max_length}: must be within 1-{MAX_LENGTH}")
        if len(set(self.alphabet)) != len(self.alphabet) or not 2 <= len(self.alphabet) <= MAX_CLASSES:
            raise InputError("alphabet: 2 or more distinct characters")
        if self.ink not in INKS:
            raise InputError(f"ink {self.ink!r}: expected one of {', '.join(INKS)}")

    @classmethod
    def from_flags(cls, height: int, width: int, length: str | int = DEFAULT_LENGTH, alphabet: str = DEFAULT_ALPHABET,
                   ink: str = "light") -> CaptchaSpec:
        lo, hi = parse_length(length)
        return cls(int(height), int(width), lo, hi, parse_alphabet(alphabet), ink)

    @classmethod
    def for_images(cls, images: np.ndarray, length: str | int = DEFAULT_LENGTH, alphabet: str = DEFAULT_ALPHABET,
                   ink: str = "light") -> CaptchaSpec:
        """The spec of a stack of (N, height, width, 3) real captchas and the length, alphabet and ink flags."""
        return cls.from_flags(images.shape[1], images.shape[2], length, alphabet, ink)

    # -- facts --------------------------------------------------------------
    @property
    def fixed_length(self) -> bool:
        return self.min_length == self.max_length

    @property
    def num_classes(self) -> int:
        return len(self.alphabet)

    @property
    def size(self) -> tuple[int, int]:
        """(width, height), as PIL gives image sizes."""
        return self.width, self.height

    @property
    def length_text(self) -> str:
        return str(self.min_length) if self.fixed_length else f"{self.min_length}-{self.max_length}"

    def describe(self) -> str:
        return f"{self.width}x{self.height} captchas of {self.length_text} characters from {self.alphabet!r}, {self.ink} ink"

    # -- text <-> class indices ---------------------------------------------
    def is_valid(self, text: str) -> bool:
        return self.min_length <= len(text) <= self.max_length and all(c in self.alphabet for c in text)

    def encode(self, text: str) -> np.ndarray:
        """'ab1' -> class indices, padded with PAD to max_length."""
        if not self.is_valid(text):
            raise ValueError(f"not a {self.length_text}-character text of {self.alphabet!r}: {text!r}")
        out = np.full(self.max_length, PAD, np.int32)
        out[: len(text)] = [self.alphabet.index(c) for c in text]
        return out

    def decode(self, indices) -> str:
        """Class indices -> text; PAD (or any negative index) ends nothing and is written '?'."""
        return "".join(self.alphabet[int(i)] if 0 <= int(i) < self.num_classes else "?" for i in indices)

    # -- saving -------------------------------------------------------------
    def to_dict(self) -> dict:
        d = asdict(self)
        d["length"] = self.length_text
        return d

    @classmethod
    def from_dict(cls, d) -> CaptchaSpec:
        """From to_dict's output (also older ones with one 'length' number); InputError for anything malformed."""
        if not isinstance(d, dict):
            raise InputError("captcha spec: expected a JSON object")
        try:
            if "min_length" in d:
                lo, hi = int(d["min_length"]), int(d["max_length"])
            else:
                lo, hi = parse_length(d["length"])
            alphabet = d["alphabet"]
            if not isinstance(alphabet, str):
                raise TypeError
            return cls(int(d["height"]), int(d["width"]), lo, hi, alphabet, str(d.get("ink", "light")))
        except (KeyError, TypeError, ValueError):
            raise InputError(f"captcha spec: expected height, width, length and alphabet, got {sorted(d)}") from None

    def save(self, folder) -> Path:
        from .files import write_json_atomic

        path = Path(folder) / SPEC_FILE
        write_json_atomic(path, self.to_dict())
        return path

    @classmethod
    def load(cls, folder) -> CaptchaSpec:
        from .files import read_json

        return cls.from_dict(read_json(Path(folder) / SPEC_FILE, what="captcha spec"))


def legacy_spec() -> CaptchaSpec:
    """The spec of models saved before specs travelled with them: 100x50 HackMIT captchas, 4 characters of a-z0-9
    (its class order: digits first)."""
    return CaptchaSpec(50, 100, 4, 4, string.digits + string.ascii_lowercase)
