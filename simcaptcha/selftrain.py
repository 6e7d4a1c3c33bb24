"""Self-training on unlabelled real captchas: per-character pseudo-labels kept where two independent views agree.

Whole-captcha agreement keeps few captchas while the classifiers still miss a character or
two; per-character agreement keeps most characters, and the unknown ones (label -1) are
masked out of the loss.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .alphabet import ALPHABET

UNKNOWN = -1


@dataclass
class PseudoLabels:
    x: np.ndarray  # preprocessed real captchas with at least `min_chars` known characters
    labels: np.ndarray  # (N, 4) class indices, UNKNOWN where the views disagree or are unsure
    names: list[str]
    considered: int

    @property
    def texts(self) -> list[str]:
        return ["".join(ALPHABET[i] if i >= 0 else "?" for i in row) for row in self.labels]

    @property
    def known_chars(self) -> int:
        return int((self.labels >= 0).sum())


def agreeing_pseudo_labels(x: np.ndarray, names: list[str], probs_a: np.ndarray, probs_b: np.ndarray,
                           threshold: float, min_chars: int = 2) -> PseudoLabels:
    """A character is known when both views pick the same class, each with probability >= threshold.

    probs_*: (N, 4, 36) from two classifiers trained on different data (refined and raw synthetic),
    so their mistakes are unlikely to coincide.
    """
    pick_a, pick_b = probs_a.argmax(-1), probs_b.argmax(-1)
    sure = np.minimum(probs_a.max(-1), probs_b.max(-1)) >= threshold
    labels = np.where((pick_a == pick_b) & sure, pick_a, UNKNOWN).astype(np.int32)
    keep = np.nonzero((labels >= 0).sum(1) >= min_chars)[0]
    return PseudoLabels(x[keep], labels[keep], [names[i] for i in keep], len(x))


def pseudo_label_accuracy(pseudo: PseudoLabels, labels: dict[str, str]) -> dict:
    """Against (held-out) true labels: how many known characters are right, and whole captchas fully known and right."""
    pairs = [(p, labels[n]) for p, n in zip(pseudo.texts, pseudo.names) if n in labels]
    known = [(a, b) for p, t in pairs for a, b in zip(p, t) if a != "?"]
    full = [(p, t) for p, t in pairs if "?" not in p]
    return {
        "captchas": len(pairs),
        "known_chars": len(known),
        "char_precision": float(np.mean([a == b for a, b in known])) if known else None,
        "full_captchas": len(full),
        "full_captcha_precision": float(np.mean([p == t for p, t in full])) if full else None,
    }
