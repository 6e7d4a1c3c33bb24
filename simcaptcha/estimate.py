"""How many real captchas a model reads right, estimated without a single label.

Average thresholded confidence (ATC; Garg et al., "Leveraging unlabeled data to predict
out-of-distribution performance", ICLR 2022): on captchas whose texts are known without anyone
labelling them, held-out synthetic captchas passed through the refiner, find the certainty
above which as many captchas lie as the model reads right; the share of real captchas above
that same certainty estimates the share it reads right. Certainty is the log of the product of
the top probabilities of the model's slots (or CTC frames): the captcha's own confidence. Models
calibrated before 7 December 2026 used the negative entropy summed over the slots instead
(`method` in the calibration says which); both are still read. The top probabilities ran nearer
the true accuracy on every HackMIT model measured (docs/results.md, 7 December).

The threshold is a property of the model: the pipeline measures it when it makes the model
and saves it inside the model file (`simcaptcha_calibration.json`, and the ONNX metadata on
export), so `solve` (plain, on Ray, or with an ONNX model) prints an estimate for any captchas it reads. Mean confidence alone was
1-2.3 points low on challenge-14 (the averaged views are under-confident); see
docs/results.md for this estimate's error there.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from .classifier import adapt_batchnorm, decode_probs, is_ctc, predict_probs
from .files import InputError
from .refiner import refine_images
from .runs import model_entry
from .spec import CaptchaSpec
from .synth import Synthesizer, render_pool

CALIBRATION_ENTRY = "simcaptcha_calibration.json"  # inside a .keras file, beside the captcha spec
TOP_PROBABILITIES = "ATC, top probabilities"
NEGATIVE_ENTROPY = "ATC, negative entropy"  # calibrations made before 7 December 2026
METHODS = (TOP_PROBABILITIES, NEGATIVE_ENTROPY)
METHOD = TOP_PROBABILITIES  # what new calibrations use


def certainty(probs: np.ndarray, method: str = METHOD) -> np.ndarray:
    """Per captcha, 0 for a sure reading and lower when unsure. TOP_PROBABILITIES: the sum over its slots (or CTC
    frames) of log max_c p; NEGATIVE_ENTROPY: the sum over its slots of sum_c p log p."""
    p = np.clip(np.asarray(probs, np.float64), 1e-12, 1.0)
    if method == TOP_PROBABILITIES:
        return np.log(p.max(-1)).sum(-1)
    if method == NEGATIVE_ENTROPY:
        return (p * np.log(p)).sum(-1).sum(-1)
    raise ValueError(f"unknown certainty {method!r} (known: {', '.join(METHODS)})")


@dataclass(frozen=True)
class AccuracyCalibration:
    """The certainty threshold of one model: captchas above it count as read right."""

    threshold: float
    source: str  # what it was measured on, e.g. "2000 refined synthetic captchas"
    source_accuracy: float  # the model's captcha accuracy there
    method: str = METHOD
    head: str = "slots"  # the model's head: the estimate was far off for CTC models (docs/results.md)
    # The model is a real student (pipeline --real-students), trained almost only on real captchas: surer of them than
    # of the synthetic ones it is calibrated on, so its estimate ran high (docs/results.md).
    student: bool = False

    def sure(self, probs: np.ndarray) -> np.ndarray:
        """(N,) bool: each captcha's certainty lies above the threshold."""
        return certainty(probs, self.method) > self.threshold

    def estimate(self, probs: np.ndarray) -> float | None:
        """The estimated share of these captchas read right (None for none)."""
        return float(self.sure(probs).mean()) if len(probs) else None

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, doc, where: str = "calibration") -> AccuracyCalibration:
        if not isinstance(doc, dict):
            raise InputError(f"{where}: expected a JSON object")
        try:
            threshold, accuracy = float(doc["threshold"]), float(doc["source_accuracy"])
            # a calibration without a method predates the choice: negative entropy
            source, method, head = str(doc.get("source", "")), str(doc.get("method", NEGATIVE_ENTROPY)), str(doc.get("head", "slots"))
            student = doc.get("student", False)
        except (KeyError, TypeError, ValueError):
            raise InputError(f"{where}: needs a numeric threshold and source_accuracy") from None
        if not math.isfinite(threshold) or not 0.0 <= accuracy <= 1.0:
            raise InputError(f"{where}: threshold must be finite and source_accuracy within 0-1")
        if method not in METHODS:
            raise InputError(f"{where}: unknown method {method!r} (this version knows {' and '.join(map(repr, METHODS))})")
        if head not in ("slots", "ctc"):
            raise InputError(f"{where}: head must be slots or ctc")
        if not isinstance(student, bool):
            raise InputError(f"{where}: student must be true or false")
        return cls(threshold, source, accuracy, method, head, student)


def caveat(probs: np.ndarray, spec: CaptchaSpec, calibration: AccuracyCalibration | None = None) -> str | None:
    """What a reader of the estimate should know about it for the model that gave these probabilities and carries
    `calibration` (None: nothing)."""
    notes = []
    if is_ctc(probs, spec):
        notes.append("a CTC model: this estimate was 7-28 points off in the measurements so far, treat it as a rough guide")
    if calibration is not None and calibration.student:
        notes.append("a real student, trained almost only on real captchas: its estimate ran 1.8 points high on HackMIT, "
                     "and far higher for a CTC student")
    return "; ".join(notes) or None


def calibrate(probs: np.ndarray, texts: list[str], spec: CaptchaSpec, source: str, method: str = METHOD) -> AccuracyCalibration:
    """The threshold of `method`'s certainty that puts as many of these captchas above it as the model reads right
    (their true texts)."""
    if len(probs) != len(texts) or not len(texts):
        raise ValueError("calibrate needs one text per captcha, and at least one captcha")
    read, _ = decode_probs(probs, spec)
    accuracy = float(np.mean([r == t for r, t in zip(read, texts)]))
    ranked = np.sort(certainty(probs, method))[::-1]  # surest first
    k = int(round(accuracy * len(ranked)))
    if k == 0:
        threshold = float(ranked[0]) + 1.0
    elif k == len(ranked):
        threshold = float(ranked[-1]) - 1.0
    else:
        threshold = float((ranked[k - 1] + ranked[k]) / 2)
    return AccuracyCalibration(threshold, source, round(accuracy, 6), method, "ctc" if is_ctc(probs, spec) else "slots")


def calibrate_on_synthetic(model, synth: Synthesizer, refiner=None, captchas: int = 2000, seed: int = 7919,
                           own_normalization: bool = False) -> AccuracyCalibration:
    """A Keras model's calibration on `captchas` fresh synthetic captchas (a seed no training stage draws
    with), passed through `refiner` where one is given.

    own_normalization: for a model whose batch normalization was measured on the real captchas (AdaBN), read the
    calibration captchas with it measured on them instead (the model is left as it was): each kind of captcha
    normalized by its own statistics, as the real ones are (challenge-14: 1.1 points off instead of 2.2).
    """
    pool = render_pool(synth, captchas, seed=seed)
    x = pool.x if refiner is None else refine_images(refiner, pool.x)
    texts = [synth.spec.decode(row[row >= 0]) for row in pool.labels]
    source = f"{captchas} {'refined ' if refiner is not None else ''}synthetic captchas"
    if not own_normalization:
        return calibrate(predict_probs(model, x), texts, synth.spec, source)
    trained = model.get_weights()
    try:
        adapt_batchnorm(model, x)
        probs = predict_probs(model, x)
    finally:
        model.set_weights(trained)
    return calibrate(probs, texts, synth.spec, source + ", normalized on them")


def model_calibration(path: str | Path) -> AccuracyCalibration | None:
    """The calibration saved inside a .keras file; None where the model has none (an estimate is then not printed)."""
    doc = model_entry(path, CALIBRATION_ENTRY, "accuracy calibration")
    return None if doc is None else AccuracyCalibration.from_dict(doc, f"{path} ({CALIBRATION_ENTRY})")
