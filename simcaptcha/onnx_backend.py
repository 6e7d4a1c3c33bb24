"""Solve with ONNX Runtime: a model.onnx from `simcaptcha export`, no TensorFlow import.

The file's metadata carries the captcha spec it was exported with; a file without one, or
with another size, length or alphabet than this version of simcaptcha reads, is refused in
one line.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from .alphabet import CAPTCHA_LENGTH, NUM_CLASSES, captcha_spec
from .files import InputError

SPEC_KEY = "simcaptcha_spec"  # the metadata entry holding an exported model's captcha spec
BATCH = 512
# What a model's input is: uint8 RGB it preprocesses itself, or preprocess()'s float output.
INPUTS = {"rgb": np.uint8, "preprocessed": np.float32}


def load_onnx_predictor(path: str | Path, threads: int | None = None):
    """A function: images -> (N, 4, 36) probabilities, run by ONNX Runtime. Its `takes_rgb` says whether it
    takes uint8 RGB (N, 50, 100, 3), preprocessed inside the model, or preprocess()'s (N, 50, 100, 1) floats."""
    try:
        import onnxruntime as ort
    except ImportError:
        raise InputError("the ONNX backend needs onnxruntime: pip install 'simcaptcha[onnx]'") from None
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such ONNX model")
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = threads or os.cpu_count() or 1
    options.log_severity_level = 3
    try:
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own kinds for damaged or foreign files
        raise InputError(f"{path}: cannot load the ONNX model ({exc.__class__.__name__})") from None
    spec_text = session.get_modelmeta().custom_metadata_map.get(SPEC_KEY)
    if spec_text is None:
        raise InputError(f"{path}: not a simcaptcha model (no {SPEC_KEY} in its metadata; export it with `simcaptcha export`)")
    try:
        spec = json.loads(spec_text)
    except ValueError:
        raise InputError(f"{path}: its {SPEC_KEY} metadata is not JSON") from None
    expected = captcha_spec()
    differs = [f"{k} {spec.get(k)!r} (expected {v!r})" for k, v in expected.items() if spec.get(k) != v]
    if differs:
        raise InputError(f"{path}: made for other captchas: " + ", ".join(differs))
    outputs = session.get_outputs()
    if len(outputs) != 1 or list(outputs[0].shape[1:]) != [CAPTCHA_LENGTH, NUM_CLASSES]:
        raise InputError(f"{path}: expected one output of shape (N, {CAPTCHA_LENGTH}, {NUM_CLASSES})")
    if spec.get("input") not in INPUTS:
        raise InputError(f"{path}: input {spec.get('input')!r} is not one of {sorted(INPUTS)}")
    input_name, dtype = session.get_inputs()[0].name, INPUTS[spec["input"]]

    def predict(x: np.ndarray) -> np.ndarray:
        x = np.ascontiguousarray(x, dtype)
        parts = [session.run(None, {input_name: x[i : i + BATCH]})[0] for i in range(0, len(x), BATCH)]
        return np.concatenate(parts) if parts else np.zeros((0, CAPTCHA_LENGTH, NUM_CLASSES), np.float32)

    predict.takes_rgb = spec["input"] == "rgb"  # the model preprocesses itself
    return predict
