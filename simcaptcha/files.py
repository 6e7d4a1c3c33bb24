"""The base module every stage may import: the one-line error, safe names, atomic writes, output guards.

It imports nothing else from simcaptcha. Names of captchas come from challenge files, and
challenge files come from servers: a name is never used as a path until `check_name` accepts it.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
from pathlib import Path
from typing import Iterable

# A captcha name: letters, digits, '.', '_' and '-', starting with a letter or digit, at most
# 100 characters. The contest's names (32 hex digits) match; a path, '..', a hidden name, NUL
# or an empty name do not.
NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")
NAME_RULE = "letters, digits, '.', '_' or '-', starting with a letter or digit, at most 100 characters"


class InputError(Exception):
    """A problem with the user's input that is reported in one line, without a traceback."""


def shown(value, most: int = 40) -> str:
    """A short, printable rendering of untrusted text for a one-line message (no NUL, no newline)."""
    text = repr(value)
    return text if len(text) <= most else text[: most - 3] + "..."


def check_name(name) -> str | None:
    """None when `name` is a safe captcha name, else what is wrong with it."""
    if not isinstance(name, str):
        return "missing name"
    if not NAME_PATTERN.fullmatch(name):
        return f"bad name {shown(name)} (a name is {NAME_RULE})"
    return None


def check_file_stem(stem: str) -> str | None:
    """None when a file's stem is usable as a captcha name (image files are named by users, so looser than check_name)."""
    if not stem or stem.startswith(".") or len(stem) > 200 or not stem.isprintable() or any(c in stem for c in "/\\"):
        return f"bad name {shown(stem)} (a file name is printable, at most 200 characters, not hidden)"
    return None


def child_path(folder: str | os.PathLike, file_name: str) -> Path:
    """folder / file_name, refusing anything that would land outside `folder` (a second guard after check_name)."""
    folder = Path(folder)
    if not file_name or "/" in file_name or "\\" in file_name or "\0" in file_name or file_name in {".", ".."}:
        raise InputError(f"{shown(file_name)}: not a plain file name; not written")
    path = folder / file_name
    if path.resolve().parent != folder.resolve():
        raise InputError(f"{shown(file_name)}: would be written outside {folder}; not written")
    return path


# -- atomic writes -------------------------------------------------------------------------------

_UMASK = os.umask(0)
os.umask(_UMASK)
_TMP_MARK = ".tmp"


def _temp_prefix(path: Path) -> str:
    return f".{path.name}.{os.getpid()}."


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def clean_stale_temps(path: str | os.PathLike) -> int:
    """Remove temporary files left beside `path` by writers of it that were killed; returns how many.

    Temporary files are named .<name>.<pid>.<random>.tmp[.ext]: one whose process no longer
    runs is stale. A live writer's file is left alone.
    """
    path = Path(path)
    removed = 0
    if not path.parent.is_dir():
        return 0
    for tmp in path.parent.glob(f".{glob_escape(path.name)}.*{_TMP_MARK}*"):
        parts = tmp.name[len(path.name) + 2 :].split(".")
        if not parts or not parts[0].isdigit() or _pid_alive(int(parts[0])):
            continue
        try:
            tmp.unlink()
            removed += 1
        except OSError:
            pass
    return removed


def glob_escape(name: str) -> str:
    return re.sub(r"([*?\[])", r"[\1]", name)


def temp_path_for(path: str | os.PathLike, suffix: str = "") -> Path:
    """A fresh temporary path beside `path` (same folder, so os.replace is atomic), after cleaning stale ones."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    clean_stale_temps(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=_temp_prefix(path), suffix=_TMP_MARK + suffix)
    os.close(fd)
    return Path(tmp)


def write_atomic(path: str | os.PathLike, data: bytes) -> None:
    """Write bytes to `path` through a temporary file and a rename, so readers never see half a file."""
    path = Path(path)
    tmp = temp_path_for(path)
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes owner-only files; give the usual permissions
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_json_atomic(path: str | os.PathLike, obj) -> None:
    write_atomic(path, json.dumps(obj, indent=1).encode())


def copy_atomic(source: str | os.PathLike, path: str | os.PathLike) -> None:
    """Copy a file so that `path` is either the old file or the whole new one, never a part."""
    write_atomic(path, Path(source).read_bytes())


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# -- reading untrusted JSON ---------------------------------------------------------------------

MAX_JSON_BYTES = 256 * 2**20  # a 1,000-captcha challenge file is about 3 MB


def read_json(path: str | os.PathLike, most_bytes: int = MAX_JSON_BYTES, what: str = "JSON file"):
    """Parse a JSON file from an untrusted source; InputError in one line for anything wrong with it."""
    path = Path(path)
    try:
        size = path.stat().st_size
        if path.is_dir():
            raise InputError(f"{path}: is a folder, expected a {what}")
        if size > most_bytes:
            raise InputError(f"{path}: {size / 2**20:.0f} MB, more than the {most_bytes / 2**20:.0f} MB a {what} may have")
        data = path.read_bytes()
    except FileNotFoundError:
        raise InputError(f"{path}: no such file") from None
    except OSError as exc:
        raise InputError(f"{path}: cannot read ({exc.strerror or exc.__class__.__name__})") from None
    return parse_json(data, f"{path}", what)


def parse_json(data: bytes, where: str, what: str = "JSON file"):
    try:
        return json.loads(data)
    except RecursionError:
        raise InputError(f"{where}: JSON nested too deeply") from None
    except (ValueError, UnicodeDecodeError):
        raise InputError(f"{where}: not a {what} (not JSON)") from None


# -- outputs must not be inputs -----------------------------------------------------------------


def input_files(paths: Iterable[str | os.PathLike]) -> set[Path]:
    """The resolved files a command reads from `paths` (files, and the files directly inside folders)."""
    files = set()
    for raw in paths:
        p = Path(raw)
        if p.is_dir():
            files.update(f.resolve() for f in p.iterdir() if f.is_file())
        elif p.exists():
            files.add(p.resolve())
    return files


def refuse_overwriting_inputs(outputs: Iterable[str | os.PathLike], inputs: Iterable[str | os.PathLike]) -> None:
    """InputError before any work when an output file is an input, or an output folder holds inputs."""
    inputs = list(inputs)  # read twice below
    read = input_files(inputs)
    folders = {Path(p).resolve() for p in inputs if Path(p).is_dir()}
    for raw in outputs:
        out = Path(raw).resolve()
        if out in read:
            raise InputError(f"{raw}: is one of the inputs; choose another output path (inputs are never overwritten)")
        if out in folders or any(out in f.parents for f in read):
            raise InputError(f"{raw}: holds input files; choose another output folder (inputs are never overwritten)")
