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

from .classifier import ctc_emits
from .spec import PAD, CaptchaSpec

UNKNOWN = PAD


@dataclass
class PseudoLabels:
    x: np.ndarray  # preprocessed real captchas with at least `min_chars` known characters
    labels: np.ndarray  # (N, max_length) class indices, UNKNOWN where the views disagree or are unsure (slots) or after the text (ctc)
    names: list[str]
    considered: int
    alphabet: str
    whole_texts: bool = False  # ctc: every label is a whole text, PAD only after its end

    @property
    def texts(self) -> list[str]:
        if self.whole_texts:
            return ["".join(self.alphabet[i] for i in row if i >= 0) for row in self.labels]
        return ["".join(self.alphabet[i] if i >= 0 else "?" for i in row) for row in self.labels]

    @property
    def known_chars(self) -> int:
        return int((self.labels >= 0).sum())


def picked_characters(probs: np.ndarray, ctc: bool) -> np.ndarray:
    """Class indices of every character read: each slot's argmax, or for ctc the characters the best path emits."""
    picks = probs.argmax(-1)
    return picks[ctc_emits(picks, probs.shape[-1] - 1)] if ctc else picks.ravel()


MAX_LOG_WEIGHT = 20.0


def class_balance_weights(probs: np.ndarray, ctc: bool = False, iterations: int = 200, step: float = 0.25,
                          stop_within: float | None = None) -> np.ndarray:
    """Per-class weights w (classes,) such that reweight(probs, w) picks every class about equally often.

    probs: (N, L, classes) slot probabilities, or with ctc (N, T, classes + 1) frame probabilities whose
    last class is the blank. Multiplicative updates on the log-weights, damped by `step`: a class picked
    twice too often has its weight divided by 2**step per pass. stop_within: stop once every class's
    count is within this many standard errors of an equal share. Even truly uniform texts are not
    equal in a sample (a class of 700 characters varies by about 26), and pushing past that noise
    takes characters the reader read right from their class.
    """
    classes = probs.shape[-1] - (1 if ctc else 0)
    log_w = np.zeros(classes)
    target = 1.0 / classes
    for _ in range(iterations):
        picks = picked_characters(reweight(probs, np.exp(log_w)), ctc)
        if not len(picks):
            break
        counts = np.bincount(picks, minlength=classes)[:classes]
        due = len(picks) * target
        if stop_within is not None and np.abs(counts - due).max() <= stop_within * np.sqrt(due):
            break
        # A class no captcha is read as grows its weight every pass: bounded, so that the weights stay
        # finite in float32 (e**20; measured runs stay within e**7).
        log_w = np.clip(log_w + step * (np.log(target) - np.log(counts / len(picks) + 1e-6)), -MAX_LOG_WEIGHT, MAX_LOG_WEIGHT)
    return np.exp(log_w - log_w.mean())


def reweight(probs: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """probs * weights, renormalized over the classes.

    ctc (`weights` has no entry for the blank): the characters' probabilities are reweighted among
    themselves and keep their total against the blank's, so the weights change which character a
    frame reads far more than whether it reads one.
    """
    probs = np.asarray(probs, np.float32)
    weights = np.asarray(weights, np.float32)
    if len(weights) == probs.shape[-1]:
        q = probs * weights
        return q / np.maximum(q.sum(-1, keepdims=True), 1e-30)
    chars = probs[..., :-1]
    q = chars * weights
    q *= chars.sum(-1, keepdims=True) / np.maximum(q.sum(-1, keepdims=True), 1e-12)
    return np.concatenate([q, probs[..., -1:]], -1)


def agreeing_pseudo_labels(x: np.ndarray, names: list[str], probs_a: np.ndarray, probs_b: np.ndarray,
                           threshold: float, alphabet: str, min_chars: int = 2) -> PseudoLabels:
    """Slot heads: a character is known when both views pick the same class, each with probability >= threshold.

    probs_*: (N, L, classes) from two classifiers trained on different data (refined and raw synthetic),
    so their mistakes are unlikely to coincide.
    """
    pick_a, pick_b = probs_a.argmax(-1), probs_b.argmax(-1)
    sure = np.minimum(probs_a.max(-1), probs_b.max(-1)) >= threshold
    labels = np.where((pick_a == pick_b) & sure, pick_a, UNKNOWN).astype(np.int32)
    keep = np.nonzero((labels >= 0).sum(1) >= min(min_chars, labels.shape[1]))[0]
    return PseudoLabels(x[keep], labels[keep], [names[i] for i in keep], len(x), alphabet)


def agreeing_texts(x: np.ndarray, names: list[str], texts_a: list[str], conf_a: np.ndarray, texts_b: list[str],
                   conf_b: np.ndarray, threshold: float, spec: CaptchaSpec) -> PseudoLabels:
    """CTC heads (which read whole texts, not slots): a captcha is kept when both views read the same valid
    text, each with a per-character confidence (geometric mean) >= threshold."""
    keep, labels = [], []
    for i, (a, b) in enumerate(zip(texts_a, texts_b)):
        if a != b or not spec.is_valid(a):
            continue
        if min(conf_a[i], conf_b[i]) ** (1 / len(a)) >= threshold:
            keep.append(i)
            labels.append(spec.encode(a))
    labels_arr = np.stack(labels) if labels else np.zeros((0, spec.max_length), np.int32)
    return PseudoLabels(x[keep], labels_arr, [names[i] for i in keep], len(x), spec.alphabet, whole_texts=True)


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
