"""How far synthetic (or refined) captchas are from real ones, measured; and alarms for a refiner gone wrong.

- `gap_score`: fresh, small critics (not the training discriminator) learn to tell real
  captchas from others on one part of each set, and are scored on the rest: their mean ROC
  AUC. 0.5 means they cannot tell them apart; 1.0 that they always can. Every score trains its
  own critics from the same seeds, so scores of synthetic and of refined captchas compare.
- `label_preservation`: how many refined captchas a reader trained on raw synthetic captchas
  still reads as their labels, against the same synthetic captchas unrefined. A refiner that moves
  captchas toward the real ones lowers that as much as the real captchas do, so the pipeline also
  asks whether a reader trained on refined captchas learns their labels (`learnable`): labels are
  lost only when neither reader finds them.
- `health_alarms`: one line each, with what to try, for a refiner that returns its input while
  the gap stays high, one that moves captchas away from the real ones, a discriminator that
  wins outright, and a refiner that destroys labels.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# Alarm thresholds, in the preprocessed [-1, 1] scale.
IDLE_CHANGE = 0.01  # mean |refined - synthetic| below this: the refiner returns its input
HIGH_GAP = 0.75  # a critic AUC above this: real and refined are still easy to tell apart
DISC_WINS_LOSS = 0.05  # discriminator loss below this ...
DISC_WINS_STEPS = 50  # ... for this many adversarial steps in a row
KEPT_LABELS = 0.9  # refined captchas must keep at least this share of what the reader reads on synthetic ones
WIDER_GAP = 0.02  # refined captchas further from real than synthetic ones by more than this AUC


def average_ranks(values: np.ndarray) -> np.ndarray:
    """Each value's rank among `values` (0: the lowest); tied values share their mean rank."""
    order = values.argsort(kind="mergesort")
    ranks = np.empty(len(values))
    sorted_values = values[order]
    i = 0
    while i < len(values):
        j = i
        while j + 1 < len(values) and sorted_values[j + 1] == sorted_values[i]:
            j += 1
        ranks[order[i : j + 1]] = (i + j) / 2
        i = j + 1
    return ranks


def roc_auc(scores_pos: np.ndarray, scores_neg: np.ndarray) -> float:
    """Probability that a random positive scores above a random negative (ties count half)."""
    ranks = average_ranks(np.concatenate([scores_pos, scores_neg])) + 1
    n_pos, n_neg = len(scores_pos), len(scores_neg)
    return float((ranks[:n_pos].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def build_critic(seed: int = 0):
    """A small CNN: three stride-2 convolutions, global average, one logit (real vs other)."""
    import keras
    from keras import layers

    keras.utils.set_random_seed(seed)
    inputs = keras.Input((None, None, 1))
    x = inputs
    for f in (8, 16, 32):
        x = layers.Conv2D(f, 3, strides=2, padding="same", activation="relu")(x)
    x = layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, layers.Dense(1)(x), name="critic")


def gap_score(real_x: np.ndarray, other_x: np.ndarray, steps: int = 300, batch_size: int = 64, seed: int = 0,
              held_out: float = 0.3, critics: int = 3) -> float:
    """Mean ROC AUC of `critics` fresh critics (seeds seed, seed + 1, ...) separating held-out real images
    from held-out `other_x` (preprocessed). One critic's AUC moves by up to 0.09 with its seed on HackMIT."""
    return float(np.mean([_one_critic_auc(real_x, other_x, steps, batch_size, seed + k, held_out) for k in range(critics)]))


def _one_critic_auc(real_x, other_x, steps, batch_size, seed, held_out) -> float:
    import keras
    import tensorflow as tf

    rng = np.random.default_rng((seed, 5))
    n = min(len(real_x), len(other_x))
    if n < 20:
        raise ValueError(f"need at least 20 images of each kind for a gap score, got {n}")
    real_idx, other_idx = rng.permutation(len(real_x))[:n], rng.permutation(len(other_x))[:n]
    cut = int(n * (1 - held_out))
    critic = build_critic(seed)
    optimizer = keras.optimizers.Adam(1e-3)
    loss_fn = keras.losses.BinaryCrossentropy(from_logits=True)

    @tf.function
    def step(x, y):
        with tf.GradientTape() as tape:
            loss = loss_fn(y, critic(x, training=True))
        optimizer.apply_gradients(zip(tape.gradient(loss, critic.trainable_variables), critic.trainable_variables))

    half = batch_size // 2
    y = tf.constant(np.concatenate([np.ones((half, 1)), np.zeros((half, 1))]).astype(np.float32))
    for _ in range(steps):
        a = real_x[real_idx[rng.integers(0, cut, half)]]
        b = other_x[other_idx[rng.integers(0, cut, half)]]
        step(tf.constant(np.concatenate([a, b])), y)

    def scores(x):
        return np.concatenate([critic(tf.constant(x[i : i + 256]), training=False).numpy()[:, 0] for i in range(0, len(x), 256)])

    return roc_auc(scores(real_x[real_idx[cut:]]), scores(other_x[other_idx[cut:]]))


def label_preservation(read, synthetic_x: np.ndarray, refined_x: np.ndarray, labels: list[str]) -> dict:
    """A reader's captcha accuracy on synthetic captchas and on the same ones refined, and their ratio.

    read: preprocessed images -> texts (a classifier trained on raw synthetic captchas).
    """
    on_synthetic = float(np.mean([a == b for a, b in zip(read(synthetic_x), labels)]))
    on_refined = float(np.mean([a == b for a, b in zip(read(refined_x), labels)]))
    return {"synthetic_acc": on_synthetic, "refined_acc": on_refined,
            "kept": on_refined / on_synthetic if on_synthetic > 0 else 0.0}


@dataclass
class GapReport:
    synthetic_gap: float  # critic AUC, real vs synthetic
    refined_gap: float  # critic AUC, real vs refined
    mean_change: float  # mean |refined - synthetic|
    kept_labels: float | None = None  # label_preservation()["kept"], when a reader was given
    # A reader trained on refined captchas reads this share as many held-out refined ones as a reader trained on
    # raw ones reads raw ones (the pipeline's two views); None: not measured.
    learnable: float | None = None

    def as_scalars(self) -> dict:
        out = {"gap/synthetic_auc": self.synthetic_gap, "gap/refined_auc": self.refined_gap, "gap/mean_change": self.mean_change}
        if self.kept_labels is not None:
            out["gap/kept_labels"] = self.kept_labels
        if self.learnable is not None:
            out["gap/learnable"] = self.learnable
        return out


def measure_gap(real_x, synthetic_x, refined_x, read=None, labels=None, steps: int = 300, seed: int = 0,
                critics: int = 3) -> GapReport:
    """Both gap scores, the refiner's mean change and (given a reader `read` and the labels) label preservation."""
    kept = label_preservation(read, synthetic_x, refined_x, labels)["kept"] if read is not None else None
    return GapReport(gap_score(real_x, synthetic_x, steps, seed=seed, critics=critics),
                     gap_score(real_x, refined_x, steps, seed=seed, critics=critics),
                     float(np.abs(refined_x - synthetic_x).mean()), kept)


def health_alarms(report: GapReport | None = None, disc_losses: list[float] | None = None) -> list[str]:
    """One line per problem seen, each with what to try."""
    alarms = []
    if report is not None and report.mean_change < IDLE_CHANGE and report.refined_gap > HIGH_GAP:
        alarms.append(f"the refiner returns its input (mean change {report.mean_change:.4f}) while real and refined "
                      f"captchas stay easy to tell apart (critic AUC {report.refined_gap:.2f}): "
                      "try a smaller --reg-lambda, more --steps, or more refiner --features")
    if report is not None and report.refined_gap > report.synthetic_gap + WIDER_GAP:
        alarms.append(f"refining moves captchas away from the real ones (critic AUC {report.refined_gap:.2f} against "
                      f"{report.synthetic_gap:.2f} unrefined): the discriminator rewards something a fresh critic "
                      "sees through; look at the samples' refined-syn row, try a larger --reg-lambda or fewer --steps")
    lost = report is not None and report.kept_labels is not None and report.kept_labels < KEPT_LABELS
    if lost and (report.learnable is None or report.learnable < KEPT_LABELS):
        learnt = "" if report.learnable is None else (f", and a reader trained on refined captchas learns {report.learnable:.0%} "
                                                      "as many as one trained on raw ones")
        alarms.append(f"the refiner destroys labels: a reader of synthetic captchas reads {report.kept_labels:.0%} as many "
                      f"refined ones right{learnt}: try a larger --reg-lambda or fewer --steps")
    if disc_losses:
        run = 0
        for loss in disc_losses:
            run = run + 1 if loss < DISC_WINS_LOSS else 0
            if run >= DISC_WINS_STEPS:
                alarms.append(f"the discriminator wins outright (loss under {DISC_WINS_LOSS} for {DISC_WINS_STEPS} steps in a row): "
                              "the refiner gets no useful gradient; try a smaller discriminator, a larger --history-size, "
                              "or fewer discriminator steps")
                break
    return alarms
