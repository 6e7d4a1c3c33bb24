"""The run-folder contract shared by training stages (config.json, spec.json, an atomic checkpoint that resumes,
logs, samples) and saved models: written atomically with their captcha spec inside, read back with it."""

from __future__ import annotations

import dataclasses
import io
import json
import os
from pathlib import Path

import numpy as np

from .files import InputError, parse_json, temp_path_for, write_atomic, write_json_atomic
from .spec import MODEL_SPEC_ENTRY, SPEC_FILE, CaptchaSpec

CHECKPOINT = "checkpoint.npz"


class RunDir:
    """OUT/config.json, OUT/checkpoint.npz, OUT/logs/ (TensorBoard), OUT/samples/ (PNG grids)."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.path.mkdir(parents=True, exist_ok=True)
        self.samples = self.path / "samples"
        self.logs = self.path / "logs"
        self._writer = None

    # -- config -------------------------------------------------------------
    def save_config(self, config) -> None:
        write_json_atomic(self.path / "config.json", dataclasses.asdict(config))

    def load_config(self, cls):
        path = self.path / "config.json"
        if not path.exists():
            raise InputError(f"{path}: no config to resume from")
        data = json.loads(path.read_text())
        fields = {f.name: f for f in dataclasses.fields(cls)}
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in data.items() if k in fields})

    # -- checkpoint ---------------------------------------------------------
    @property
    def checkpoint_path(self) -> Path:
        return self.path / CHECKPOINT

    def has_checkpoint(self) -> bool:
        return self.checkpoint_path.exists()

    def save_checkpoint(self, step: int, models: dict, optimizers: dict, extra: dict | None = None) -> None:
        """Weights, optimizer slots, the step and any extra arrays, in one file replaced atomically."""
        arrays = {"step": np.array(step)}
        for name, model in models.items():
            for i, w in enumerate(model.get_weights()):
                arrays[f"model/{name}/{i}"] = w
        for name, opt in optimizers.items():
            for i, v in enumerate(opt.variables):
                arrays[f"opt/{name}/{i}"] = np.asarray(v)
        for name, value in (extra or {}).items():
            arrays[f"extra/{name}"] = np.asarray(value)
        buf = io.BytesIO()
        np.savez(buf, **arrays)
        write_atomic(self.checkpoint_path, buf.getvalue())

    def load_checkpoint(self, models: dict, optimizers: dict) -> tuple[int, dict]:
        """Restore in place; returns (step, extra arrays). Optimizers must already be built."""
        with np.load(self.checkpoint_path) as data:
            files = set(data.files)
            for name, model in models.items():
                n = len(model.get_weights())
                model.set_weights([data[f"model/{name}/{i}"] for i in range(n)])
            for name, opt in optimizers.items():
                for i, v in enumerate(opt.variables):
                    key = f"opt/{name}/{i}"
                    if key in files:
                        v.assign(data[key])
            extra = {k[len("extra/") :]: data[k] for k in files if k.startswith("extra/")}
            return int(data["step"]), extra

    # -- logs ---------------------------------------------------------------
    def log_scalars(self, step: int, scalars: dict) -> None:
        import tensorflow as tf

        if self._writer is None:
            self._writer = tf.summary.create_file_writer(str(self.logs))
        with self._writer.as_default(step=step):
            for k, v in scalars.items():
                tf.summary.scalar(k, float(v))
        self._writer.flush()


def save_model_atomic(model, path: str | os.PathLike, spec: CaptchaSpec | None = None, entries: dict | None = None) -> None:
    """keras.Model.save to a temporary .keras file, then rename over `path`.

    spec: written inside the file (an extra entry of the .keras zip archive, which Keras leaves
    alone), so the model carries what it reads wherever it is copied. entries: more such JSON
    entries, name -> dict (the accuracy calibration, for one).
    """
    path = Path(path)
    tmp = temp_path_for(path, suffix=".keras")  # Keras picks the format by the suffix
    try:
        model.save(tmp)
        extra = dict(entries or {})
        if spec is not None:
            extra[MODEL_SPEC_ENTRY] = spec.to_dict()
        _append_entries(tmp, extra)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _append_entries(archive_path: Path, entries: dict) -> None:
    import zipfile

    with zipfile.ZipFile(archive_path, "a") as archive:
        for name, doc in entries.items():
            archive.writestr(name, json.dumps(doc))


def copy_model_with_entries(src: str | os.PathLike, dst: str | os.PathLike, entries: dict) -> None:
    """Copy a .keras file to `dst` (atomically), with these JSON entries added or replaced; the weights are untouched."""
    import zipfile

    src, dst = Path(src), Path(dst)
    tmp = temp_path_for(dst, suffix=".keras")
    try:
        with zipfile.ZipFile(src) as old, zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as new:
            for info in old.infolist():
                if info.filename not in entries:
                    new.writestr(info, old.read(info))
        _append_entries(tmp, entries)
        os.replace(tmp, dst)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


MAX_SPEC_BYTES = 1 << 20


def model_entry(path: str | os.PathLike, name: str, what: str) -> dict | None:
    """A JSON entry saved inside a .keras file (see save_model_atomic); None when the file has none or is no zip.

    InputError for an entry that is there but too large or not JSON (a model file from someone else is input too).
    """
    import zipfile

    path = Path(path)
    try:
        with zipfile.ZipFile(path) as archive:
            if name not in archive.namelist():
                return None
            info = archive.getinfo(name)
            if info.file_size > MAX_SPEC_BYTES:
                raise InputError(f"{path}: its {what} is too large")
            return parse_json(archive.read(info), f"{path} ({name})", what)
    except (zipfile.BadZipFile, OSError):
        return None  # not a zip: Keras's own loader names the problem


def model_spec(path: str | os.PathLike) -> CaptchaSpec | None:
    """The captcha spec saved in a .keras file, else in spec.json beside it; None for a model saved without one.

    InputError for a spec that is there but malformed.
    """
    path = Path(path)
    doc = model_entry(path, MODEL_SPEC_ENTRY, "captcha spec")
    if doc is not None:
        return CaptchaSpec.from_dict(doc)
    if (path.parent / SPEC_FILE).is_file():
        return CaptchaSpec.load(path.parent)
    return None


def compiled_forward(model):
    """A compiled forward pass for `model`, built once and kept on the model itself (any batch size).

    Kept as a plain attribute (not tracked by Keras), so it goes away with the model instead of
    piling up in a module-level cache.
    """
    import tensorflow as tf

    infer = getattr(model, "_simcaptcha_infer", None)
    if infer is None:

        def forward(x):
            return model(x, training=False)

        shape = (None,) + tuple(model.inputs[0].shape[1:])
        infer = tf.function(forward, autograph=False, input_signature=[tf.TensorSpec(shape, tf.float32)])
        object.__setattr__(model, "_simcaptcha_infer", infer)  # bypass Keras attribute tracking
    return infer
