"""Solving: load the trained classifier, preprocess exactly as in training, predict, decode, rank by confidence."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import numpy as np

from .challenges import LoadResult, load_captchas
from .files import InputError, read_json, sha256_hex, write_atomic, write_json_atomic
from .alphabet import CAPTCHA_LENGTH, IMAGE_HEIGHT, IMAGE_WIDTH, NUM_CLASSES
from .preprocess import preprocess

MAX_CONTEST_ANSWERS = 15_000


def shipped_model_dir() -> Path:
    return Path(str(resources.files("simcaptcha.models")))


def load_classifier(model: str | Path | None = None):
    """A model folder holding classifier.keras, or a .keras file; None: the model shipped with simcaptcha.

    The model is checked against the captcha spec it will be asked to read (input size, heads,
    classes): a file that is not such a classifier is one InputError line naming what differs.
    """
    import keras

    path = Path(model) if model else shipped_model_dir()
    if path.is_dir():
        path = path / "classifier.keras"
    if not path.is_file():
        hint = " (train one with `simcaptcha train`)" if model else " (this install ships no model; pass --model)"
        raise InputError(f"{path}: no classifier model{hint}")
    try:
        loaded = keras.models.load_model(path, compile=False, safe_mode=True)
    except Exception as exc:  # a damaged or foreign file: zip, HDF5, JSON and Keras all raise their own kinds
        raise InputError(f"{path}: cannot load the classifier ({exc.__class__.__name__})") from None
    problem = classifier_mismatch(loaded)
    if problem:
        raise InputError(f"{path}: not a classifier for {CAPTCHA_LENGTH}-character {IMAGE_WIDTH}x{IMAGE_HEIGHT} captchas of {NUM_CLASSES} classes: {problem}")
    return loaded


def classifier_mismatch(model) -> str | None:
    """None when `model` reads (N, 50, 100, 1) images into 4 heads of 36 probabilities, else what differs."""
    inputs = getattr(model, "inputs", None) or []
    outputs = getattr(model, "outputs", None) or []
    if len(inputs) != 1:
        return f"{len(inputs)} inputs, expected 1"
    shape = tuple(inputs[0].shape)
    if shape[1:] != (IMAGE_HEIGHT, IMAGE_WIDTH, 1):
        return f"input shape {shape[1:]}, expected {(IMAGE_HEIGHT, IMAGE_WIDTH, 1)}"
    if len(outputs) != CAPTCHA_LENGTH:
        return f"{len(outputs)} output heads, expected {CAPTCHA_LENGTH}"
    for i, out in enumerate(outputs):
        if tuple(out.shape)[1:] != (NUM_CLASSES,):
            return f"head {i} has shape {tuple(out.shape)[1:]}, expected ({NUM_CLASSES},)"
    return None


@dataclass
class Solution:
    name: str
    text: str
    confidence: float


@dataclass
class SolveResult:
    solutions: list[Solution] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def top(self, k: int | None) -> list[Solution]:
        """The k most confident answers (all when k is None), most confident first."""
        ranked = sorted(self.solutions, key=lambda s: -s.confidence)
        return ranked if k is None else ranked[:k]

    def contest_body(self, k: int | None = None) -> dict:
        return {"solutions": [{"name": s.name, "solution": s.text} for s in self.top(k)]}


def solve_loaded(loaded: LoadResult, model) -> SolveResult:
    """Predict every loaded captcha; a name seen twice is answered once (the contest counts it once)."""
    from .classifier import decode_probs, predict_probs

    seen, captchas = set(), []
    for c in loaded.captchas:
        if c.name not in seen:
            seen.add(c.name)
            captchas.append(c)
    result = SolveResult(errors=list(loaded.errors))
    if not captchas:
        return result
    x = preprocess(np.stack([c.image for c in captchas]))
    texts, conf = decode_probs(predict_probs(model, x))
    result.solutions = [Solution(c.name, t, float(p)) for c, t, p in zip(captchas, texts, conf)]
    return result


def solve(paths, model=None) -> SolveResult:
    return solve_loaded(load_captchas(paths), load_classifier(model) if not hasattr(model, "predict") else model)


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
    write_json_atomic(confidence_path, {
        "solutions_sha256": sha256_hex(body),
        "confidences": {s.name: round(s.confidence, 6) for s in result.top(top)},
    })
    write_atomic(out, body)
    return confidence_path


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
