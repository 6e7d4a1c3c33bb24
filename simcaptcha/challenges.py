"""Read and write contest challenge files and image folders, reporting bad entries one line each."""

from __future__ import annotations

import base64
import binascii
import io
import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

import numpy as np
from PIL import Image, UnidentifiedImageError

from .alphabet import IMAGE_HEIGHT, IMAGE_WIDTH

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg"}


class InputError(Exception):
    """A problem with the user's input that is reported in one line, without a traceback."""


@dataclass
class Captcha:
    name: str
    image: np.ndarray  # (50, 100, 3) uint8 RGB
    source: str  # file (and entry) it came from
    jpeg: bytes | None = None  # the original bytes, when the source was a JPEG


@dataclass
class LoadResult:
    captchas: list[Captcha] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def images(self) -> np.ndarray:
        if not self.captchas:
            return np.zeros((0, IMAGE_HEIGHT, IMAGE_WIDTH, 3), np.uint8)
        return np.stack([c.image for c in self.captchas])

    def names(self) -> list[str]:
        return [c.name for c in self.captchas]


def decode_image(data: bytes) -> np.ndarray:
    """Image bytes -> (50, 100, 3) uint8 RGB; ValueError says what is wrong."""
    try:
        with Image.open(io.BytesIO(data)) as im:
            im.load()
            size = im.size
            rgb = np.asarray(im.convert("RGB"))
    except (UnidentifiedImageError, OSError, SyntaxError) as exc:
        raise ValueError(f"not a readable image ({exc.__class__.__name__})") from None
    if size != (IMAGE_WIDTH, IMAGE_HEIGHT):
        raise ValueError(f"image is {size[0]}x{size[1]}, expected {IMAGE_WIDTH}x{IMAGE_HEIGHT}")
    return rgb


def read_challenge_file(path: Path, result: LoadResult) -> None:
    """Append the captchas of one challenge file to `result`; bad entries become error lines."""
    try:
        doc = json.loads(Path(path).read_bytes())
    except (json.JSONDecodeError, UnicodeDecodeError):
        result.errors.append(f"{path}: not a JSON challenge file")
        return
    except OSError as exc:
        result.errors.append(f"{path}: cannot read ({exc.strerror})")
        return
    entries = doc.get("images") if isinstance(doc, dict) else None
    if not isinstance(entries, list):
        result.errors.append(f'{path}: no "images" list')
        return
    for i, entry in enumerate(entries):
        where = f"{path} entry {i}"
        if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
            result.errors.append(f"{where}: missing name")
            continue
        where = f"{path} entry {i} ({entry['name']})"
        b64 = entry.get("jpg_base64")
        if not isinstance(b64, str):
            result.errors.append(f"{where}: missing jpg_base64")
            continue
        try:
            data = base64.b64decode(b64, validate=True)
        except (binascii.Error, ValueError):
            result.errors.append(f"{where}: bad base64")
            continue
        try:
            image = decode_image(data)
        except ValueError as exc:
            result.errors.append(f"{where}: {exc}")
            continue
        result.captchas.append(Captcha(entry["name"], image, where, data))


def read_image_file(path: Path, result: LoadResult) -> None:
    try:
        data = Path(path).read_bytes()
        image = decode_image(data)
    except OSError as exc:
        result.errors.append(f"{path}: cannot read ({exc.strerror})")
        return
    except ValueError as exc:
        result.errors.append(f"{path}: {exc}")
        return
    jpeg = data if path.suffix.lower() in {".jpg", ".jpeg"} else None
    result.captchas.append(Captcha(path.stem, image, str(path), jpeg))


def _files_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))


def load_captchas(paths: Iterable[str | os.PathLike]) -> LoadResult:
    """Load captchas from challenge files, image files, or folders of either.

    A missing path or an empty folder raises InputError; bad files and entries are
    listed in `errors` and skipped.
    """
    result = LoadResult()
    for raw in paths:
        path = Path(raw)
        if not path.exists():
            raise InputError(f"{path}: no such file or folder")
        files = _files_in(path) if path.is_dir() else [path]
        if path.is_dir() and not files:
            raise InputError(f"{path}: folder is empty")
        for f in files:
            if f.suffix.lower() in IMAGE_SUFFIXES:
                read_image_file(f, result)
            elif path.is_dir() and f.suffix.lower() not in {"", ".json"}:
                continue  # a folder may hold labels.json, README and the like beside the data
            elif f.name == "labels.json":
                continue
            else:
                read_challenge_file(f, result)
    return result


_UMASK = os.umask(0)
os.umask(_UMASK)


def write_atomic(path: str | os.PathLike, data: bytes) -> None:
    """Write bytes to `path` through a temporary file and a rename, so readers never see half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes owner-only files; give the usual permissions
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json_atomic(path: str | os.PathLike, obj) -> None:
    write_atomic(path, json.dumps(obj, indent=1).encode())


def encode_challenge(named_jpegs: Iterable[tuple[str, bytes]]) -> dict:
    """[(name, jpeg bytes)] -> the contest's challenge document."""
    return {"images": [{"name": n, "jpg_base64": base64.b64encode(b).decode()} for n, b in named_jpegs]}
