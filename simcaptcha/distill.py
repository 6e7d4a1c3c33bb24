"""Distillation: one cheaper classifier that learns a trained model's readings of the unlabelled real captchas.

The shipped HackMIT model averages two width-2 classifiers; reading is bounded by their cost.
A student (one network, any width) is trained on the teacher's full probability vectors for
the user's real captchas (soft targets: what the teacher finds likely besides its pick
carries information a hard pseudo-label throws away), each captcha moved by up to
`shift` pixels per batch, mixed with labelled synthetic captchas. No real label is used.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace

import numpy as np

from .classifier import (ClassifierConfig, RealEval, build_classifier, copy_trained_weights, is_ctc, predict_probs, resolve_precision, score,
                         shift_randomly, training_loop, with_precision)
from .files import InputError, write_json_atomic
from .runs import RunDir, save_model_atomic
from .spec import CaptchaSpec


@dataclass(frozen=True)
class DistillConfig:
    steps: int = 6000
    batch_size: int = 64
    learning_rate: float = 1e-3
    width: float = 1.0  # the student's ClassifierConfig.width
    conv1_stride: int = 1  # the student's ClassifierConfig.conv1_stride (2: cheaper to read)
    filters: tuple[int, ...] = ClassifierConfig.filters  # the student's conv channels (before width)
    synthetic_fraction: float = 0.25  # share of each batch from labelled synthetic captchas
    shift: int = 2  # real captchas move by up to this many pixels each way, per batch
    seed: int = 0
    eval_every: int = 1000
    checkpoint_every: int = 250
    precision: str = "float32"  # ClassifierConfig.precision: the arithmetic of the training steps


def distill_classifier(cfg: DistillConfig, teacher, spec: CaptchaSpec, real_x: np.ndarray, out_dir, synthetic=None,
                       centers=None, real_eval: RealEval | None = None, resume: bool = False, progress: bool = True,
                       log=print) -> dict:
    """Train a student with the teacher's head on the teacher's probabilities for `real_x` (preprocessed, unlabelled).

    synthetic: (x, labels) labelled synthetic captchas, or None for real captchas alone (a CTC
    student learns the teacher's readings of them too: its targets are per column, not per label).
    centers: where a slot student's windows sit (pixels), as the synthesizer draws characters.
    Writes OUT/classifier.keras, config.json, spec.json, checkpoint.npz (resumable), logs/, metrics.json.
    """
    import keras
    import tensorflow as tf

    run = RunDir(out_dir)
    if resume and run.has_checkpoint():
        cfg = run.load_config(DistillConfig)
    cfg = replace(cfg, precision=resolve_precision(cfg.precision))
    run.save_config(cfg)
    spec.save(run.path)
    log(f"reading {len(real_x)} real captchas with the teacher")
    targets = predict_probs(teacher, real_x)  # (N, L, classes) or, for ctc, (N, T, classes + 1)
    ctc = is_ctc(targets, spec)
    keras.utils.set_random_seed(cfg.seed)
    student = build_classifier(spec, ClassifierConfig(width=cfg.width, conv1_stride=cfg.conv1_stride, filters=tuple(cfg.filters),
                                                      seed=cfg.seed, head="ctc" if ctc else "slots"), centers)
    if ctc and student.outputs[0].shape[1] != targets.shape[1]:
        raise InputError(f"the student reads {student.outputs[0].shape[1]} columns, the teacher {targets.shape[1]}: "
                         "a CTC student needs the teacher's column count")
    if synthetic is not None and ctc:
        synthetic = (synthetic[0], predict_probs(teacher, synthetic[0]))
    trained = with_precision(student, cfg.precision)  # the steps train this one; `student` (float32) is scored and saved
    schedule = keras.optimizers.schedules.CosineDecay(cfg.learning_rate, cfg.steps, alpha=0.02)
    optimizer = keras.optimizers.Adam(schedule)
    optimizer.build(trained.trainable_variables)
    start = 0
    if resume and run.has_checkpoint():
        start, _ = run.load_checkpoint({"student": trained}, {"adam": optimizer})
        log(f"resuming from step {start}")

    @tf.function
    def train_step(x, y):
        with tf.GradientTape() as tape:
            heads = trained(x, training=True)
            if ctc:  # per column: (B, T) cross-entropies against the teacher's columns
                loss = tf.reduce_mean(keras.losses.categorical_crossentropy(y, heads))
            else:
                loss = tf.add_n([keras.losses.categorical_crossentropy(y[:, i], heads[i]) for i in range(len(heads))])
                loss = tf.reduce_mean(loss)
        grads = tape.gradient(loss, trained.trainable_variables)
        optimizer.apply_gradients(zip(grads, trained.trainable_variables))
        return loss

    n_syn = int(round(cfg.batch_size * cfg.synthetic_fraction)) if synthetic is not None else 0
    n_real = cfg.batch_size - n_syn
    num_classes = targets.shape[-1]

    def evaluate(step):
        metrics = {}
        if real_eval is not None:
            copy_trained_weights(student, trained)
            metrics["val/real_captcha_acc"], metrics["val/real_char_acc"] = score(student, real_eval.x, real_eval.texts, spec)
            run.log_scalars(step, metrics)
        return metrics

    def step_fn(step):
        rng = np.random.default_rng((cfg.seed, step, 11))  # batch i depends only on (seed, i): resumes draw the same
        pick = rng.integers(0, len(real_x), n_real)
        x, y = shift_randomly(real_x[pick], cfg.shift, rng), targets[pick]
        if n_syn:
            sp = rng.integers(0, len(synthetic[0]), n_syn)
            x = np.concatenate([x, synthetic[0][sp]])
            syn_y = synthetic[1][sp] if ctc else np.eye(num_classes, dtype=np.float32)[synthetic[1][sp]]
            y = np.concatenate([y, syn_y])
        return float(train_step(tf.constant(x), tf.constant(y)))

    t0 = time.time()
    metrics = training_loop(run, cfg, start, step_fn, evaluate, schedule, {"student": trained}, {"adam": optimizer}, "distill", progress)
    if not metrics:
        metrics = evaluate(cfg.steps)
    copy_trained_weights(student, trained)
    save_model_atomic(student, run.path / "classifier.keras", spec)
    metrics["train/seconds"] = time.time() - t0
    write_json_atomic(run.path / "metrics.json", metrics)
    return metrics
