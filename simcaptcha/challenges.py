"""Read and write contest challenge files and image folders, reporting bad entries one line each.

Everything read here is untrusted: a challenge file comes from a server, an image folder from a
user. Each bad file or entry becomes one line naming the file (and entry) and is skipped; the
rest is read. Names are checked before they can become file names; an image's declared size is
checked from its header before any pixel is decoded.
"""

from __future__ import annotations

import base64
import binascii
import io
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

import numpy as np
from PIL import Image

from .files import InputError, check_file_stem, check_name, parse_json, read_json, shown
from .spec import MAX_SIDE

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".gif", ".bmp"}
IMAGE_FORMATS = {"JPEG", "PNG", "GIF", "BMP"}
MAX_CHALLENGE_BYTES = 256 * 2**20  # a 1,000-captcha challenge file is about 3 MB
MAX_IMAGE_BYTES = 8 * 2**20  # one captcha image, as a file or one entry's decoded bytes

__all__ = ["Captcha", "LoadResult", "InputError", "captcha_files", "decode_image", "load_captchas", "encode_challenge",
           "parse_challenge", "read_captcha_file", "read_challenge_file", "read_image", "read_image_file", "read_labels"]


@dataclass
class Captcha:
    name: str
    image: np.ndarray  # (height, width, 3) uint8 RGB
    source: str  # file (and entry) it came from
    jpeg: bytes | None = None  # the original bytes, when the source was a JPEG


@dataclass
class LoadResult:
    captchas: list[Captcha] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    _where: dict = field(default_factory=dict, repr=False)  # name -> where it was first read

    def add(self, captcha: Captcha) -> None:
        """Keep the first captcha of each name; a later one of the same name is a reported duplicate."""
        first = self._where.get(captcha.name)
        if first is not None:
            self.errors.append(f"{captcha.source}: duplicate name (first read at {first}); skipped")
            return
        self._where[captcha.name] = captcha.source
        self.captchas.append(captcha)

    def images(self) -> np.ndarray:
        """(N, height, width, 3): every captcha must have one size (see `resize`); InputError names each size found."""
        if not self.captchas:
            raise InputError("no captcha was read")
        examples = {}
        for c in self.captchas:
            examples.setdefault(c.image.shape[:2], c.source)
        if len(examples) > 1:
            found = ", ".join(f"{w}x{h} ({where})" for (h, w), where in examples.items())
            raise InputError(f"captchas of {len(examples)} sizes: {found}; give one size, or pass --resize WIDTHxHEIGHT")
        return np.stack([c.image for c in self.captchas])

    def resize(self, size: tuple[int, int]) -> int:
        """Resize every captcha not already `size` (width, height) in place; returns how many changed."""
        changed = 0
        for c in self.captchas:
            if c.image.shape[:2] != (size[1], size[0]):
                c.image = np.asarray(Image.fromarray(c.image).resize(size, Image.BILINEAR))
                c.jpeg = None
                changed += 1
        return changed

    def mostly_jpeg(self) -> bool:
        """Whether most captchas were read from JPEG bytes (a site serving JPEG, whose artefacts synthesis should copy)."""
        return bool(self.captchas) and 2 * sum(c.jpeg is not None for c in self.captchas) >= len(self.captchas)

    def names(self) -> list[str]:
        return [c.name for c in self.captchas]


def flatten_image(im: Image.Image) -> Image.Image:
    """RGB as a browser shows the image on a white page: a transparent ground (PNG, GIF) becomes white.

    Dropping the alpha channel instead would keep whatever colour the transparent pixels store,
    often black: black text on a transparent ground would vanish into it.
    """
    if im.mode in ("RGBA", "LA", "PA") or (im.mode in ("P", "L", "RGB") and "transparency" in im.info):
        rgba = im.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    return im.convert("RGB")


def flatten_rgba(rgba: np.ndarray) -> np.ndarray:
    """(H, W, 4) uint8 RGBA -> (H, W, 3) RGB over white, as flatten_image does for an image."""
    rgb, alpha = rgba[..., :3].astype(np.uint16), rgba[..., 3:].astype(np.uint16)
    return ((rgb * alpha + 255 * (255 - alpha) + 127) // 255).astype(np.uint8)


def decode_image(data: bytes, size: tuple[int, int] | None = None) -> np.ndarray:
    """Image bytes -> (height, width, 3) uint8 RGB; ValueError says what is wrong.

    The format and the declared size are read from the header first: an image of the wrong
    size (`size`, (width, height), when given; else larger than MAX_SIDE on a side, as a
    decompression bomb is) is refused before its pixels are decoded.
    """
    if len(data) > MAX_IMAGE_BYTES:
        raise ValueError(f"image is {len(data) / 2**20:.1f} MB, more than the {MAX_IMAGE_BYTES / 2**20:.0f} MB limit")
    rgb = None
    try:
        with warnings.catch_warnings():
            # Any size but the expected one is refused below, before decoding; PIL's own warning
            # for large declared sizes would only add noise.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data), formats=sorted(IMAGE_FORMATS)) as im:
                declared = im.size
                if declared == size or (size is None and 0 < min(declared) and max(declared) <= MAX_SIDE):
                    im.load()
                    rgb = np.asarray(flatten_image(im))
    except Image.DecompressionBombError:
        raise ValueError("image declares far more pixels than a captcha has (a decompression bomb?)") from None
    except Exception as exc:  # PIL raises many kinds on corrupt data; every one is one bad entry
        raise ValueError(f"not a readable image ({exc.__class__.__name__})") from None
    if rgb is None and size is None:
        raise ValueError(f"image is {declared[0]}x{declared[1]}, more than the {MAX_SIDE} pixels a side a captcha may have")
    if rgb is None:
        raise ValueError(f"image is {declared[0]}x{declared[1]}, expected {size[0]}x{size[1]}")
    if rgb.shape != (declared[1], declared[0], 3):
        raise ValueError(f"image decodes to {rgb.shape}, expected {declared[0]}x{declared[1]} RGB")
    return rgb


def read_image(path: Path, size: tuple[int, int] | None = None) -> tuple[np.ndarray, bytes]:
    """One image file -> (RGB array, its bytes); ValueError for a file too large or not a captcha image,
    OSError where it cannot be read. The size is checked before the file is read."""
    if Path(path).stat().st_size > MAX_IMAGE_BYTES:
        raise ValueError(f"file is more than the {MAX_IMAGE_BYTES / 2**20:.0f} MB an image may have")
    data = Path(path).read_bytes()
    return decode_image(data, size), data


def parse_challenge(data: bytes, where: str, result: LoadResult) -> None:
    """Append the captchas of one challenge document's bytes to `result`; bad entries become error lines."""
    try:
        doc = parse_json(data, where, "JSON challenge file")
    except InputError as exc:
        result.errors.append(str(exc))
        return
    _read_entries(doc, where, result)


def read_challenge_file(path: Path, result: LoadResult) -> None:
    """Append the captchas of one challenge file to `result`; bad entries become error lines."""
    try:
        doc = read_json(path, MAX_CHALLENGE_BYTES, "JSON challenge file")
    except InputError as exc:
        result.errors.append(str(exc))
        return
    _read_entries(doc, str(path), result)


def _read_entries(doc, where: str, result: LoadResult) -> None:
    entries = doc.get("images") if isinstance(doc, dict) else None
    if not isinstance(entries, list):
        result.errors.append(f'{where}: no "images" list')
        return
    for i, entry in enumerate(entries):
        at = f"{where} entry {i}"
        problem = check_name(entry.get("name") if isinstance(entry, dict) else None)
        if problem:
            result.errors.append(f"{at}: {problem}")
            continue
        at = f"{where} entry {i} ({entry['name']})"
        b64 = entry.get("jpg_base64")
        if not isinstance(b64, str):
            result.errors.append(f"{at}: missing jpg_base64")
            continue
        if len(b64) > MAX_IMAGE_BYTES * 4 // 3 + 4:
            result.errors.append(f"{at}: image is more than the {MAX_IMAGE_BYTES / 2**20:.0f} MB limit")
            continue
        try:
            data = base64.b64decode(b64, validate=True)
        except (binascii.Error, ValueError):
            result.errors.append(f"{at}: bad base64")
            continue
        try:
            image = decode_image(data)
        except ValueError as exc:
            result.errors.append(f"{at}: {exc}")
            continue
        result.add(Captcha(entry["name"], image, at, data))


def read_image_file(path: Path, result: LoadResult) -> None:
    problem = check_file_stem(path.stem)
    if problem:
        result.errors.append(f"{path}: {problem}")
        return
    try:
        image, data = read_image(path)
    except OSError as exc:
        result.errors.append(f"{path}: cannot read ({exc.strerror or exc.__class__.__name__})")
        return
    except ValueError as exc:
        result.errors.append(f"{path}: {exc}")
        return
    jpeg = data if path.suffix.lower() in {".jpg", ".jpeg"} else None
    result.add(Captcha(path.stem, image, str(path), jpeg))


def read_captcha_file(path: Path, result: LoadResult) -> None:
    """One file of `captcha_files`: an image by its suffix, else a challenge file."""
    if path.suffix.lower() in IMAGE_SUFFIXES:
        read_image_file(path, result)
    else:
        read_challenge_file(path, result)


def captcha_files(paths: Iterable[str | os.PathLike]) -> list[Path]:
    """The files `load_captchas` reads from `paths`, in order: files as given, and in folders the images and
    challenge files (no suffix or .json), leaving out labels.json, confidence files and hidden files.

    A missing path or an empty folder raises InputError.
    """
    files = []
    for raw in paths:
        path = Path(raw)
        if not path.exists():
            raise InputError(f"{shown(str(path), 200)[1:-1]}: no such file or folder")
        if not path.is_dir():
            if path.name != "labels.json" and not path.name.endswith(".confidence.json"):
                files.append(path)
            continue
        inside = sorted(p for p in path.iterdir() if p.is_file() and not p.name.startswith("."))
        if not inside:
            raise InputError(f"{path}: folder is empty")
        for f in inside:
            if f.name == "labels.json" or f.name.endswith(".confidence.json"):
                continue
            if f.suffix.lower() in IMAGE_SUFFIXES or f.suffix.lower() in {"", ".json"}:
                files.append(f)  # a folder may hold README and the like beside the data
    return files


def load_captchas(paths: Iterable[str | os.PathLike]) -> LoadResult:
    """Load captchas from challenge files, image files, or folders of either.

    A missing path or an empty folder raises InputError; bad files and entries are listed in
    `errors` and skipped. A name read twice keeps its first captcha (the contest counts a name once).
    """
    result = LoadResult()
    for f in captcha_files(paths):
        read_captcha_file(f, result)
    return result


def encode_challenge(named_jpegs: Iterable[tuple[str, bytes]]) -> dict:
    """[(name, jpeg bytes)] -> the contest's challenge document."""
    return {"images": [{"name": n, "jpg_base64": base64.b64encode(b).decode()} for n, b in named_jpegs]}


def label_from_name(name: str) -> str:
    """The text a labelled file's name gives, by the convention of most captcha tools: abcd.png and abcd_17.png read abcd."""
    return name.split("_", 1)[0]


def read_labels(path: Path) -> tuple[dict[str, str], list[str]]:
    """True answers, and one line for each entry that is not name -> text.

    path: a JSON name -> text map, or a folder of images named after their texts (abcd.png, abcd_17.png).
    """
    path = Path(path)
    if path.is_dir():
        files = [f for f in captcha_files([path]) if f.suffix.lower() in IMAGE_SUFFIXES]
        if not files:
            raise InputError(f"{path}: no image file to take labels from")
        return {f.stem: label_from_name(f.stem) for f in files}, []
    doc = read_json(path, what="labels file")
    if not isinstance(doc, dict):
        raise InputError(f"{path}: expected a JSON name -> text map, got a {type(doc).__name__}")
    labels, errors = {}, []
    for name, text in doc.items():
        if isinstance(text, str) and text:
            labels[name] = text
        else:
            errors.append(f"{path} entry {name!r}: label {str(text)[:20]!r} is not a text; skipped")
    return labels, errors
