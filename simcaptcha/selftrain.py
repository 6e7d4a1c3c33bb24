"""Self-training on unlabelled real captchas: per-character pseudo-labels kept where two independent views agree.

Whole-captcha agreement keeps few captchas while the classifiers still miss a character or
two; per-character agreement keeps most characters, and the unknown ones (label -1) are
masked out of the loss.

Both views share some mistakes (a real glyph unlike every synthetic one is read as the same
wrong class by both), and agreement cannot catch those. Captcha texts are drawn uniformly from
the alphabet, so a class the classifier picks far more or less often than 1/36 on the real
captchas is a symptom: `class_balance_weights` finds per-class weights that make the picks
uniform again (a prior shift correction), and pseudo-labels are read from the reweighted
probabilities, so the real glyphs of an under-picked class get their own label.
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


def class_balance_weights(probs: np.ndarray, iterations: int = 200, step: float = 0.25) -> np.ndarray:
    """Per-class weights w (36,) such that argmax(probs * w) picks every class about equally often.

    probs: (N, 4, 36) on unlabelled real captchas. Multiplicative updates on the log-weights,
    damped by `step`: a class picked twice too often has its weight divided by 2**step per pass.
    """
    log_p = np.log(probs.reshape(-1, probs.shape[-1]) + 1e-9)
    log_w = np.zeros(probs.shape[-1])
    target = 1.0 / probs.shape[-1]
    for _ in range(iterations):
        freq = np.bincount((log_p + log_w).argmax(-1), minlength=probs.shape[-1]) / len(log_p)
        log_w += step * (np.log(target) - np.log(freq + 1e-6))
    return np.exp(log_w - log_w.mean())


def reweight(probs: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """probs * weights, renormalized over the classes."""
    q = probs * weights
    return q / q.sum(-1, keepdims=True)


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
