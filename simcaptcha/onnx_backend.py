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

from .estimate import AccuracyCalibration
from .files import InputError, parse_json
from .spec import CaptchaSpec

CALIBRATION_KEY = "simcaptcha_calibration"  # its accuracy calibration, where the Keras model had one (simcaptcha.estimate)
SPEC_KEY = "simcaptcha_spec"  # the metadata entry holding an exported model's captcha spec
BATCH = 512
# What a model's input is: uint8 RGB it preprocesses itself, or preprocess()'s float output.
INPUTS = {"rgb": np.uint8, "preprocessed": np.float32}


def load_onnx_predictor(path: str | Path, threads: int | None = None) -> tuple[object, CaptchaSpec]:
    """(predict, spec): predict maps images to probabilities ((N, L, classes) slots, or (N, T, classes + 1) CTC),
    run by ONNX Runtime; spec is the captcha spec in the model's metadata. predict.takes_rgb says whether it
    takes uint8 RGB (N, H, W, 3), preprocessed inside the model, or preprocess()'s (N, H, W, 1) floats."""
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
    except (ValueError, RecursionError):
        raise InputError(f"{path}: its {SPEC_KEY} metadata is not JSON") from None
    try:
        captcha = CaptchaSpec.from_dict(spec)
    except InputError as exc:
        raise InputError(f"{path}: {exc}") from None
    outputs = session.get_outputs()
    shape = list(outputs[0].shape[1:]) if len(outputs) == 1 else []
    slots = [captcha.max_length, captcha.num_classes]
    if not (captcha.fixed_length and shape == slots) and not (len(shape) == 2 and shape[1] == captcha.num_classes + 1):
        raise InputError(f"{path}: expected one output of shape (N, {slots[0]}, {slots[1]}) or a CTC output "
                         f"(N, T, {captcha.num_classes + 1}), got {shape}")
    if spec.get("input") not in INPUTS:
        raise InputError(f"{path}: input {spec.get('input')!r} is not one of {sorted(INPUTS)}")
    input_name, dtype = session.get_inputs()[0].name, INPUTS[spec["input"]]

    def predict(x: np.ndarray) -> np.ndarray:
        x = np.ascontiguousarray(x, dtype)
        parts = [session.run(None, {input_name: x[i : i + BATCH]})[0] for i in range(0, max(len(x), 1), BATCH)]
        return np.concatenate(parts)

    predict.takes_rgb = spec["input"] == "rgb"  # the model preprocesses itself
    calibration = session.get_modelmeta().custom_metadata_map.get(CALIBRATION_KEY)
    predict.calibration = None if calibration is None else AccuracyCalibration.from_dict(
        parse_json(calibration.encode(), f"{path} ({CALIBRATION_KEY})", "accuracy calibration"), f"{path} ({CALIBRATION_KEY})")
    return predict, captcha
