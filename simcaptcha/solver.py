"""Solving, and the Python API: load a trained model (Keras or ONNX), preprocess exactly as in training,
predict, decode, rank by confidence; write and check the contest body."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import numpy as np

from . import quiet
from .challenges import LoadResult, decode_image, flatten_image, flatten_rgba, load_captchas, read_image
from .classifier import is_ctc, predict_probs, read_probs
from .estimate import AccuracyCalibration, caveat, model_calibration
from .files import InputError, read_json, sha256_hex, write_atomic, write_json_atomic
from .onnx_backend import load_onnx_predictor
from .preprocess import preprocess
from .runs import model_spec
from .spec import CaptchaSpec, legacy_spec

MAX_CONTEST_ANSWERS = 15_000
# Names of models shipped in simcaptcha/models, usable wherever a model path is taken.
SHIPPED_NAMES = {"fast": "fast.onnx"}


def shipped_model_dir() -> Path:
    return Path(str(resources.files("simcaptcha.models")))


def classifier_path(model: str | Path | None = None) -> Path:
    """The classifier.keras a model argument names (a folder holding one, or the file); None: the shipped one."""
    path = Path(model) if model else shipped_model_dir()
    return path / "classifier.keras" if path.is_dir() else path


def load_classifier(model: str | Path | None = None) -> tuple[object, CaptchaSpec]:
    """(Keras model, its captcha spec) from a model folder holding classifier.keras, or a .keras file;
    None: the model shipped with simcaptcha.

    The spec comes from inside the file (or spec.json beside it; a model saved before specs
    travelled with models reads 100x50 HackMIT captchas). The model is checked against it
    (input size, heads, classes): a file that is not such a classifier is one InputError line
    naming what differs.
    """
    import keras

    path = classifier_path(model)
    if not path.is_file():
        hint = " (train one with `simcaptcha train`)" if model else " (this install ships no model; pass --model)"
        raise InputError(f"{path}: no classifier model{hint}")
    try:
        loaded = keras.models.load_model(path, compile=False, safe_mode=True)
    except Exception as exc:  # a damaged or foreign file: zip, HDF5, JSON and Keras all raise their own kinds
        raise InputError(f"{path}: cannot load the classifier ({exc.__class__.__name__})") from None
    spec = model_spec(path) or legacy_spec()
    problem = classifier_mismatch(loaded, spec)
    if problem:
        raise InputError(f"{path}: not a classifier for {spec.describe()}: {problem}")
    return loaded, spec


def classifier_mismatch(model, spec: CaptchaSpec) -> str | None:
    """None when `model` reads (N, H, W, 1) images of the spec into max_length slot heads of the alphabet's
    classes, or into one CTC output of (T, classes + 1); else what differs."""
    inputs = getattr(model, "inputs", None) or []
    outputs = getattr(model, "outputs", None) or []
    if len(inputs) != 1:
        return f"{len(inputs)} inputs, expected 1"
    shape = tuple(inputs[0].shape)
    if shape[1:] != (spec.height, spec.width, 1):
        return f"input shape {shape[1:]}, expected {(spec.height, spec.width, 1)}"
    if is_ctc(model, spec):
        return None
    if len(outputs) != spec.max_length or not spec.fixed_length:
        return f"{len(outputs)} output heads, expected {spec.max_length} (or one CTC output)"
    for i, out in enumerate(outputs):
        if tuple(out.shape)[1:] != (spec.num_classes,):
            return f"head {i} has shape {tuple(out.shape)[1:]}, expected ({spec.num_classes},)"
    return None


@dataclass
class Solution:
    name: str
    text: str
    confidence: float
    sure: bool | None = None  # above the model's calibrated certainty threshold (None: the model has no calibration)


@dataclass
class SolveResult:
    solutions: list[Solution] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    estimate_caveat: str | None = None  # what to know about the accuracy estimate for this model

    def top(self, k: int | None) -> list[Solution]:
        """The k most confident answers (all when k is None), most confident first."""
        ranked = sorted(self.solutions, key=lambda s: -s.confidence)
        return ranked if k is None else ranked[:k]

    def estimated_accuracy(self, k: int | None = None) -> float | None:
        """The label-free estimate of the share of the top k answers (all: None) that are right; None where
        the model carries no calibration (see simcaptcha.estimate)."""
        kept = self.top(k)
        if not kept or any(s.sure is None for s in kept):
            return None
        return sum(s.sure for s in kept) / len(kept)

    def contest_body(self, k: int | None = None) -> dict:
        return {"solutions": [{"name": s.name, "solution": s.text} for s in self.top(k)]}


# -- the Python API -------------------------------------------------------------------------------


@dataclass
class Answer:
    """One captcha's reading: the text, its confidence and every character's probabilities."""

    text: str
    confidence: float  # product of the characters' top probabilities
    char_probs: np.ndarray  # (characters read, classes), rows sum to 1
    alphabet: str

    def to_dict(self, top: int = 3) -> dict:
        """JSON-ready: text, confidence, and each character's `top` most likely readings."""
        chars = []
        for row in self.char_probs:
            best = np.argsort(-row)[:top]
            chars.append([{"char": self.alphabet[i], "p": round(float(row[i]), 6)} for i in best])
        return {"text": self.text, "confidence": round(self.confidence, 6), "chars": chars}


def to_rgb(image, size: tuple[int, int]) -> np.ndarray:
    """One captcha as (height, width, 3) uint8 RGB of `size` (width, height), from image bytes, a file path,
    a PIL image or a NumPy array.

    ValueError names what is wrong (not an image, wrong size, wrong type).
    """
    from PIL import Image

    width, height = size
    if isinstance(image, (bytes, bytearray, memoryview)):
        if not len(image):
            raise ValueError("empty image")
        return decode_image(bytes(image), size)
    if isinstance(image, (str, Path)):
        path = Path(image)
        if not path.is_file():
            raise ValueError(f"{path}: no such file")
        try:
            return read_image(path, size)[0]
        except ValueError as exc:
            raise ValueError(f"{path}: {exc}") from None
    if isinstance(image, Image.Image):
        if image.size != size:
            raise ValueError(f"image is {image.size[0]}x{image.size[1]}, expected {width}x{height}")
        return np.asarray(flatten_image(image))
    if isinstance(image, np.ndarray):
        if image.dtype != np.uint8:
            raise ValueError(f"expected a uint8 array, got {image.dtype}")
        if image.ndim == 2:
            image = np.repeat(image[..., None], 3, axis=-1)
        if image.ndim != 3 or image.shape[2] not in (3, 4):
            raise ValueError(f"expected an (height, width, 3) RGB array, got shape {image.shape}")
        if image.shape[:2] != (height, width):
            raise ValueError(f"image is {image.shape[1]}x{image.shape[0]}, expected {width}x{height}")
        return flatten_rgba(image) if image.shape[2] == 4 else np.ascontiguousarray(image)
    raise ValueError(f"cannot read a captcha from a {type(image).__name__}: give bytes, a path, a PIL image or a NumPy array")


class Solver:
    """A trained captcha reader. `Solver.load()` is the model shipped with simcaptcha.

    >>> solver = Solver.load()                     # or Solver.load("runs/x/model"), or a model.onnx
    >>> answer = solver.solve(open("c.jpg", "rb").read())
    >>> answer.text, answer.confidence
    """

    def __init__(self, predict, spec: CaptchaSpec, source: str, backend: str, calibration: AccuracyCalibration | None = None):
        self._predict = predict  # preprocessed (N, H, W, 1) float32 (uint8 RGB if predict.takes_rgb) -> probabilities
        self.spec, self.source, self.backend = spec, source, backend
        self.calibration = calibration  # for a label-free accuracy estimate (None: the model file has none)

    @classmethod
    def load(cls, model: str | Path | None = None, backend: str = "auto") -> Solver:
        """A model folder, a classifier.keras, or a model.onnx (from `simcaptcha export`); None: the shipped model,
        "fast": the shipped one-network model distilled from it (ONNX Runtime).

        backend: "keras", "onnx" (ONNX Runtime, no TensorFlow import), or "auto" (by the file).
        """
        path = Path(model) if model else None
        if path is not None and str(model) in SHIPPED_NAMES and not path.exists():
            path = shipped_model_dir() / SHIPPED_NAMES[str(model)]
        if backend == "auto":
            backend = "onnx" if path is not None and path.suffix == ".onnx" else "keras"
        if backend == "onnx":
            if path is None:
                raise InputError("the ONNX backend needs a model.onnx (make one with `simcaptcha export`)")
            predict, spec = load_onnx_predictor(path)
            return cls(predict, spec, str(path), "onnx", getattr(predict, "calibration", None))
        if backend != "keras":
            raise InputError(f"unknown backend {backend!r}: use keras, onnx or auto")
        quiet.tensorflow()
        keras_model, spec = load_classifier(path)
        return cls.from_keras(keras_model, spec, str(path or shipped_model_dir()), model_calibration(classifier_path(path)))

    @classmethod
    def from_keras(cls, keras_model, spec: CaptchaSpec, source: str = "keras model",
                   calibration: AccuracyCalibration | None = None) -> Solver:
        return cls(lambda x: predict_probs(keras_model, x), spec, source, "keras", calibration)

    def probabilities(self, rgb: np.ndarray, chunk: int = 1024) -> np.ndarray:
        """(N, H, W, 3) uint8 RGB -> (N, L, classes) slot or (N, T, classes + 1) CTC probabilities.

        Preprocessed and read `chunk` captchas at a time: the float copies of 15,000 captchas
        take about 1 GB, and making them all at once ran 3x slower than in chunks.
        """
        ink = self.spec.ink
        prepare = (lambda part: part) if getattr(self._predict, "takes_rgb", False) else (lambda part: preprocess(part, ink))
        parts = [self._predict(prepare(rgb[i : i + chunk])) for i in range(0, max(len(rgb), 1), chunk)]
        return np.concatenate(parts)

    def solve_batch(self, images) -> list[Answer]:
        """Read many captchas at once (a list of bytes, paths, PIL images or arrays, or an (N, H, W, 3) array)."""
        spec = self.spec
        if isinstance(images, np.ndarray) and images.dtype == np.uint8 and images.shape[1:] == (spec.height, spec.width, 3):
            rgb = images  # already a batch of RGB captchas
        elif len(images):
            rgb = np.stack([to_rgb(i, spec.size) for i in images])
        else:
            rgb = np.zeros((0, spec.height, spec.width, 3), np.uint8)
        return answers_from_probs(self.probabilities(rgb), spec)

    def solve(self, image) -> Answer:
        """Read one captcha (bytes, a path, a PIL image or a NumPy array)."""
        return self.solve_batch([image])[0]


def answers_from_probs(probs: np.ndarray, spec: CaptchaSpec) -> list[Answer]:
    texts, conf, rows = read_probs(probs, spec)
    return [Answer(t, float(c), p, spec.alphabet) for t, c, p in zip(texts, conf, rows)]


def as_solver(model) -> Solver:
    """A Solver from a Solver or a model path (None: the shipped model)."""
    if isinstance(model, Solver):
        return model
    return Solver.load(model)


def solve_loaded(loaded: LoadResult, model, resize: bool = False) -> SolveResult:
    """Predict every loaded captcha (names are already unique: load_captchas keeps the first).

    A captcha of another size than the model reads is one error line, or resized to it with `resize`.
    """
    solver = as_solver(model)
    result = SolveResult(errors=list(loaded.errors))
    size = solver.spec.size
    if resize:
        loaded.resize(size)
    fitting = []
    for c in loaded.captchas:
        if c.image.shape[:2] == (size[1], size[0]):
            fitting.append(c)
        else:
            h, w = c.image.shape[:2]
            result.errors.append(f"{c.source}: image is {w}x{h}, the model reads {size[0]}x{size[1]} (--resize to read it)")
    if not fitting:
        return result
    probs = solver.probabilities(np.stack([c.image for c in fitting]))
    answers = answers_from_probs(probs, solver.spec)
    sure = solver.calibration.sure(probs).tolist() if solver.calibration is not None else [None] * len(answers)
    result.estimate_caveat = caveat(probs, solver.spec, solver.calibration) if solver.calibration is not None else None
    result.solutions = [Solution(c.name, a.text, a.confidence, s) for c, a, s in zip(fitting, answers, sure)]
    return result


def solve(paths, model=None, resize: bool = False) -> SolveResult:
    """Solve challenge files, image files or folders of them with a model (a Solver, a path, None: the shipped one)."""
    return solve_loaded(load_captchas(paths), model, resize)


def confidence_path_for(out: Path) -> Path:
    return out.with_name(out.stem + ".confidence.json")


def write_solutions(result: SolveResult, out: Path, top: int | None = None) -> Path:
    """Write the contest body to `out` and per-captcha confidences next to it; returns the confidence file.

    The confidence file names the SHA-256 of the solutions it belongs to and is written first:
    a run killed between the two writes leaves a pair that `read_confidences` sees do not match.
    """
    out = Path(out)
    body = json.dumps(result.contest_body(top), indent=1).encode()
    confidence_path = confidence_path_for(out)
    estimate = result.estimated_accuracy(top)
    write_json_atomic(confidence_path, {
        "solutions_sha256": sha256_hex(body),
        "confidences": {s.name: round(s.confidence, 6) for s in result.top(top)},
        **({} if estimate is None else {"estimated_accuracy": round(estimate, 6)}),
    })
    write_atomic(out, body)
    return confidence_path


def estimate_line(result: SolveResult, top: int | None = None) -> str:
    """One line for people: the label-free accuracy estimate of all answers (and of the top K kept)."""
    every = result.estimated_accuracy()
    if every is None:
        return ("no accuracy estimate: this model carries no calibration (models made by `simcaptcha pipeline` do; "
                "`simcaptcha calibrate` adds one to a Keras model, and `export` carries it into ONNX)")
    line = f"estimated accuracy without labels: {every:.1%} of {len(result.solutions)} answers"
    kept = result.top(top)
    if len(kept) < len(result.solutions):
        line += f", {result.estimated_accuracy(top):.1%} of the {len(kept)} kept"
    if result.estimate_caveat:
        line += f" ({result.estimate_caveat})"
    return line


def read_estimate(path: Path, solutions: Path) -> float | None:
    """The estimated accuracy a confidence file records for these solutions (None: none recorded, not a
    confidence file, or one written for other solutions)."""
    try:
        doc = read_json(path, what="confidence file")
    except InputError:
        return None
    if not isinstance(doc, dict) or doc.get("solutions_sha256") != sha256_hex(Path(solutions).read_bytes()):
        return None
    value = doc.get("estimated_accuracy") if isinstance(doc, dict) else None
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def read_confidences(path: Path, solutions: Path | None = None) -> dict[str, float]:
    """The name -> confidence map of a confidence file; InputError if it is not one, or (given
    `solutions`) if it was written for other solutions than that file's."""
    doc = read_json(path, what="confidence file")
    if isinstance(doc, dict) and "confidences" in doc:
        if solutions is not None and doc.get("solutions_sha256") != sha256_hex(Path(solutions).read_bytes()):
            raise InputError(f"{path}: written for other solutions than {solutions} (an interrupted solve?); ignored")
        doc = doc["confidences"]
    if not isinstance(doc, dict) or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in doc.values()):
        raise InputError(f"{path}: expected a JSON name -> confidence map")
    return doc


@dataclass
class Evaluation:
    count: int
    captcha_accuracy: float
    char_accuracy: float
    per_position: list[float]
    confusions: list[tuple[str, str, int]]  # (true, predicted, count), most frequent first
    missing: int  # labelled captchas without an answer


# Shares of the answers, most confident first, that accuracy_by_confidence scores.
CONFIDENCE_SHARES = (0.5, 0.8, 0.9, 0.95, 1.0)


def accuracy_by_confidence(answers: dict[str, str], labels: dict[str, str], confidences: dict[str, float],
                           shares=CONFIDENCE_SHARES) -> list[tuple[float, int, float]]:
    """(share, count, captcha accuracy) of the most confident labelled answers, for each share.

    What `solve --top K` buys: how right the K answers it keeps are. Answers without a
    confidence rank last.
    """
    scored = [name for name in labels if name in answers]
    if not scored:
        raise InputError("no labelled answer to rank by confidence")
    ranked = sorted(scored, key=lambda name: -confidences.get(name, -1.0))
    rows = []
    for share in shares:
        count = max(1, round(share * len(ranked)))
        right = sum(answers[name] == labels[name] for name in ranked[:count])
        rows.append((share, count, right / count))
    return rows


def evaluate(answers: dict[str, str], labels: dict[str, str], top_confusions: int = 10) -> Evaluation:
    """Accuracy of answers (name -> text) on the labelled names; unanswered labels count as wrong."""
    from collections import Counter

    if not labels:
        raise InputError("no labels to evaluate against")
    length = max(len(t) for t in labels.values())
    pairs = [(answers.get(name, "").ljust(length, "?"), truth.ljust(length, "?")) for name, truth in labels.items()]
    n = len(pairs)
    whole = sum(p == t for p, t in pairs) / n
    chars = sum(a == b for p, t in pairs for a, b in zip(p, t)) / (length * n)
    per_position = [sum(p[i] == t[i] for p, t in pairs) / n for i in range(length)]
    confusions = Counter((b, a) for p, t in pairs for a, b in zip(p, t) if a != b and a != "?" and b != "?")
    return Evaluation(
        n, whole, chars, per_position,
        [(t, p, c) for (t, p), c in confusions.most_common(top_confusions)],
        sum(name not in answers for name in labels),
    )


def read_answers(path: Path) -> dict[str, str]:
    """name -> answer from a contest body written by `simcaptcha solve`."""
    body = read_json(path, what="solutions file")
    entries = body.get("solutions") if isinstance(body, dict) else None
    if not isinstance(entries, list):
        raise InputError(f'{path}: expected the contest body {{"solutions": [{{"name", "solution"}}, ...]}}')
    answers = {}
    for e in entries:
        if isinstance(e, dict) and isinstance(e.get("name"), str) and isinstance(e.get("solution"), str):
            answers.setdefault(e["name"], e["solution"])
    return answers
