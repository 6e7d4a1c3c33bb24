"""Self-training on unlabelled real captchas: pseudo-labels kept where two independent views agree confidently."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .alphabet import encode


@dataclass
class PseudoLabels:
    x: np.ndarray  # preprocessed real captchas that were kept
    texts: list[str]
    names: list[str]
    considered: int

    @property
    def labels(self) -> np.ndarray:
        return np.stack([encode(t) for t in self.texts]) if self.texts else np.zeros((0, 4), np.int32)


def agreeing_pseudo_labels(x: np.ndarray, names: list[str], probs_a: np.ndarray, probs_b: np.ndarray, threshold: float) -> PseudoLabels:
    """Keep a captcha when both views read the same text and each is at least `threshold` confident in it.

    probs_*: (N, 4, 36) from two classifiers trained on different data (refined and raw synthetic),
    so their mistakes are unlikely to coincide.
    """
    from .classifier import decode_probs

    texts_a, conf_a = decode_probs(probs_a)
    texts_b, conf_b = decode_probs(probs_b)
    keep = [i for i in range(len(x)) if texts_a[i] == texts_b[i] and conf_a[i] >= threshold and conf_b[i] >= threshold]
    return PseudoLabels(x[keep], [texts_a[i] for i in keep], [names[i] for i in keep], len(x))


def pseudo_label_accuracy(pseudo: PseudoLabels, labels: dict[str, str]) -> tuple[int, float | None]:
    """How many kept captchas have a (held-out) label, and how many of those pseudo-labels are right."""
    checked = [(t, labels[n]) for t, n in zip(pseudo.texts, pseudo.names) if n in labels]
    if not checked:
        return 0, None
    return len(checked), float(np.mean([a == b for a, b in checked]))
