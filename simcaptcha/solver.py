"""Solving: load the trained classifier, preprocess exactly as in training, predict, decode, rank by confidence."""

from __future__ import annotations

from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import numpy as np

from .challenges import InputError, LoadResult, load_captchas, write_json_atomic
from .preprocess import preprocess

MAX_CONTEST_ANSWERS = 15_000


def shipped_model_dir() -> Path:
    return Path(str(resources.files("simcaptcha.models")))


def load_classifier(model: str | Path | None = None):
    """A model folder holding classifier.keras, or a .keras file; None: the model shipped with simcaptcha."""
    import keras

    path = Path(model) if model else shipped_model_dir()
    if path.is_dir():
        path = path / "classifier.keras"
    if not path.is_file():
        hint = " (train one with `simcaptcha train`)" if model else " (this install ships no model; pass --model)"
        raise InputError(f"{path}: no classifier model{hint}")
    try:
        return keras.models.load_model(path, compile=False)
    except (OSError, ValueError) as exc:
        raise InputError(f"{path}: cannot load the classifier ({exc.__class__.__name__})") from None


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


def write_solutions(result: SolveResult, out: Path, top: int | None = None) -> Path:
    """Write the contest body to `out` and per-captcha confidences next to it; returns the confidence file."""
    write_json_atomic(out, result.contest_body(top))
    confidence_path = out.with_name(out.stem + ".confidence.json")
    write_json_atomic(confidence_path, {s.name: round(s.confidence, 6) for s in result.top(top)})
    return confidence_path


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
    pairs = [(answers.get(name, "????"), truth) for name, truth in labels.items()]
    n = len(pairs)
    whole = sum(p == t for p, t in pairs) / n
    chars = sum(a == b for p, t in pairs for a, b in zip(p, t)) / (4 * n)
    per_position = [sum(p[i] == t[i] for p, t in pairs) / n for i in range(4)]
    confusions = Counter((b, a) for p, t in pairs for a, b in zip(p, t) if a != b and a != "?")
    return Evaluation(
        n, whole, chars, per_position,
        [(t, p, c) for (t, p), c in confusions.most_common(top_confusions)],
        sum(name not in answers for name in labels),
    )
