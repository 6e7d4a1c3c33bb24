"""Four-head captcha classifier: factory, training on (refined) synthetic streams, prediction, accuracy."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .alphabet import CAPTCHA_LENGTH, IMAGE_HEIGHT, IMAGE_WIDTH, NUM_CLASSES, decode
from .files import copy_atomic, write_json_atomic
from .runs import RunDir, save_model_atomic

if TYPE_CHECKING:
    from .synth import SyntheticPool


@dataclass(frozen=True)
class ClassifierConfig:
    steps: int = 3000
    batch_size: int = 64
    learning_rate: float = 1e-3
    filters: tuple[int, ...] = (16, 32, 64, 128)  # one 3x3 conv block each; all but the last halve the size
    stem_stride: int = 2  # the first conv halves the size itself: full-resolution maps cost the most time
    conv1_stride: int = 1  # 2: the second conv halves the map itself instead of a max-pool after it (28% fewer multiply-adds at width 1)
    bottleneck: int = 32  # 1x1 conv channels the heads read
    dense: int = 128  # hidden units of each head (of the one shared reader with shared_head)
    width: float = 1.0  # multiplies filters, bottleneck and dense: 2.0 has about 4x the weights and trains about 2.4x slower
    head_window: int = 6  # feature-map columns each head sees (of 12)
    shared_head: bool = True  # one character reader (same weights) for all four windows; False: one head per position
    dropout: float = 0.3
    seed: int = 0
    mask: str | None = None  # background PNG for the synthesizer
    fonts: tuple[str, ...] = ()
    refiner: str | None = None  # refiner.keras applied to every synthetic batch
    eval_every: int = 500
    checkpoint_every: int = 250
    val_size: int = 512
    extra_shift: int = 0  # pseudo-labelled real captchas move by up to this many pixels each way, per batch
    synthetic_pool: int = 0  # render this many synthetic captchas up front and draw batches from them (0: render each batch)


def head_windows(width: int, window: int, pad: int = 0) -> list[tuple[int, int]]:
    """Column ranges of a feature map of `width` columns, one per character, centred on where it is drawn.

    pad: columns of zeros added on each side; windows then stay centred instead of being clamped.
    """
    from .synth import SynthConfig

    spans = []
    for cx in SynthConfig().x_centers:
        lo = int(round(cx / IMAGE_WIDTH * width)) + pad - window // 2
        lo = min(max(0, lo), width + 2 * pad - window)
        spans.append((lo, lo + window))
    return spans


def build_classifier(cfg: ClassifierConfig = ClassifierConfig()):
    """A lean CNN over the preprocessed (50, 100, 1) image with heads char_0..char_3 (36-way softmax).

    Each head reads only a window of feature-map columns around its character's usual place:
    characters stay in their quarter, so this prior makes the network learn fast and small.
    """
    import keras
    from keras import layers

    def scaled(channels: int) -> int:
        return max(1, round(channels * cfg.width))

    inputs = keras.Input((IMAGE_HEIGHT, IMAGE_WIDTH, 1), name="image")
    x = inputs
    for i, f in enumerate(map(scaled, cfg.filters)):
        stride = cfg.stem_stride if i == 0 else cfg.conv1_stride if i == 1 else 1
        x = layers.Conv2D(f, 3, strides=stride, padding="same", use_bias=False, name=f"conv_{i}")(x)
        # BatchNorm: without it this network sometimes never starts learning.
        x = layers.BatchNormalization(name=f"bn_{i}")(x)
        x = layers.ReLU(name=f"relu_{i}")(x)
        if i < len(cfg.filters) - 1 and stride == 1:
            x = layers.MaxPooling2D(2, name=f"pool_{i}")(x)
    # A 1x1 bottleneck keeps the per-head dense layers small (a few MB model, fast heads).
    x = layers.Conv2D(scaled(cfg.bottleneck), 1, use_bias=False, name="bottleneck")(x)
    x = layers.BatchNormalization(name="bn_bottleneck")(x)
    x = layers.ReLU(name="relu_bottleneck")(x)
    width = x.shape[2]
    pad = 0
    if cfg.shared_head:
        # Centred windows over a zero-padded map, read by one head: every position learns from
        # all four characters, and a glyph reads the same wherever it stands.
        pad = cfg.head_window // 2
        x = layers.ZeroPadding2D(((0, 0), (pad, pad)), name="pad_windows")(x)
        features = layers.Dense(scaled(cfg.dense), activation="relu", name="features")
        logits = layers.Dense(NUM_CLASSES, name="logits")
    outputs = []
    for i, (lo, hi) in enumerate(head_windows(width, cfg.head_window, pad)):
        h = layers.Cropping2D(((0, 0), (lo, width + 2 * pad - hi)), name=f"window_{i}")(x)
        h = layers.Flatten(name=f"flatten_{i}")(h)
        h = layers.Dropout(cfg.dropout, name=f"dropout_{i}")(h)
        if cfg.shared_head:
            outputs.append(layers.Softmax(name=f"char_{i}")(logits(features(h))))
        else:
            h = layers.Dense(scaled(cfg.dense), activation="relu", name=f"features_{i}")(h)
            outputs.append(layers.Dense(NUM_CLASSES, activation="softmax", name=f"char_{i}")(h))
    return keras.Model(inputs, outputs, name="classifier")


def average_classifiers(models, name: str = "ensemble"):
    """One plain Keras model whose heads char_0..char_3 average the given classifiers' probabilities.

    Classifiers trained on different data (refined vs raw synthetic) make different mistakes;
    averaging their probabilities is right more often than either alone.
    """
    import keras
    from keras import layers

    if not models:
        raise ValueError("average_classifiers needs at least one model")
    inputs = keras.Input((IMAGE_HEIGHT, IMAGE_WIDTH, 1), name="image")
    # Re-wrap each member under its own name: nested models must not share one.
    members = [keras.Model(m.inputs, m.outputs, name=f"member_{i}") for i, m in enumerate(models)]
    heads = [member(inputs) for member in members]
    if len(models) == 1:
        outputs = [layers.Identity(name=f"char_{i}")(heads[0][i]) for i in range(CAPTCHA_LENGTH)]
    else:
        outputs = [layers.Average(name=f"char_{i}")([h[i] for h in heads]) for i in range(CAPTCHA_LENGTH)]
    return keras.Model(inputs, outputs, name=name)


def predict_probs(model, x: np.ndarray, batch_size: int = 512) -> np.ndarray:
    """Preprocessed images -> (N, 4, 36) probabilities."""
    import tensorflow as tf

    infer = compiled_forward(model)
    out = [infer(tf.constant(x[i : i + batch_size])) for i in range(0, len(x), batch_size)]
    if not out:
        return np.zeros((0, CAPTCHA_LENGTH, NUM_CLASSES), np.float32)
    return np.concatenate([np.stack([h.numpy() for h in o], axis=1) for o in out])


def compiled_forward(model):
    """A compiled forward pass for `model`, built once and kept on the model itself.

    Kept as a plain attribute (not tracked by Keras), so it goes away with the model instead of
    piling up in a module-level cache.
    """
    import tensorflow as tf

    infer = getattr(model, "_simcaptcha_infer", None)
    if infer is None:

        def forward(x):
            return model(x, training=False)

        infer = tf.function(
            forward, autograph=False, input_signature=[tf.TensorSpec((None, IMAGE_HEIGHT, IMAGE_WIDTH, 1), tf.float32)]
        )
        object.__setattr__(model, "_simcaptcha_infer", infer)  # bypass Keras attribute tracking
    return infer


def decode_probs(probs: np.ndarray) -> tuple[list[str], np.ndarray]:
    """(N, 4, 36) -> texts and a per-captcha confidence (product of the four maximum probabilities)."""
    idx = probs.argmax(-1)
    conf = probs.max(-1).prod(-1)
    return [decode(row) for row in idx], conf


def accuracy(pred: list[str], truth: list[str]) -> tuple[float, float]:
    """(captcha accuracy, character accuracy)."""
    if not truth:
        return 0.0, 0.0
    whole = np.mean([p == t for p, t in zip(pred, truth)])
    chars = np.mean([a == b for p, t in zip(pred, truth) for a, b in zip(p, t)])
    return float(whole), float(chars)


def score(model, x: np.ndarray, texts: list[str]) -> tuple[float, float]:
    """(captcha accuracy, character accuracy) of the model's readings of preprocessed images."""
    pred, _ = decode_probs(predict_probs(model, x))
    return accuracy(pred, texts)


@dataclass
class RealEval:
    """Real captchas with labels, for evaluation only: never fed to training."""

    x: np.ndarray
    texts: list[str]
    names: list[str] = field(default_factory=list)


def load_real_eval(paths, labels_path) -> RealEval:
    from .challenges import load_captchas, read_labels
    from .preprocess import preprocess

    labels, _ = read_labels(Path(labels_path))
    loaded = load_captchas(paths)
    kept = [c for c in loaded.captchas if c.name in labels]
    if not kept:
        from .files import InputError

        raise InputError(f"{labels_path}: no label matches a captcha in {', '.join(map(str, paths))}")
    x = preprocess(np.stack([c.image for c in kept]))
    return RealEval(x, [labels[c.name] for c in kept], [c.name for c in kept])


def shift_randomly(x: np.ndarray, max_shift: int, rng: np.random.Generator) -> np.ndarray:
    """(N, H, W, C) images each moved by up to max_shift pixels along both axes; the edge pixels fill in.

    Real captchas are few and seen again every round: moving them keeps the classifier from
    learning each one (and its wrong pseudo-labels) by heart.
    """
    if max_shift <= 0:
        return x
    n, h, w = x.shape[:3]
    padded = np.pad(x, ((0, 0), (max_shift, max_shift), (max_shift, max_shift), (0, 0)), mode="edge")
    dy, dx = rng.integers(0, 2 * max_shift + 1, (2, n))
    return np.stack([padded[i, dy[i]:dy[i] + h, dx[i]:dx[i] + w] for i in range(n)])


def training_loop(run: RunDir, cfg, start: int, step_fn, evaluate, schedule, models: dict, optimizers: dict,
                  desc: str, progress: bool = True) -> dict:
    """Steps start..cfg.steps of a training run: a progress bar, TensorBoard scalars every 50 steps,
    `evaluate(step)` every cfg.eval_every, a resumable checkpoint every cfg.checkpoint_every and at
    the end; returns the last metrics. step_fn(step) trains one step and returns its loss."""
    from tqdm import tqdm

    bar = tqdm(total=cfg.steps, initial=start, desc=desc, disable=not progress, dynamic_ncols=True)
    metrics: dict = {}
    loss_avg = None
    for step in range(start, cfg.steps):
        loss = step_fn(step)
        loss_avg = loss if loss_avg is None else 0.98 * loss_avg + 0.02 * loss
        bar.update(1)
        bar.set_postfix(loss=f"{loss_avg:.3f}")
        done = step + 1
        if done % 50 == 0:
            run.log_scalars(done, {"train/loss": loss_avg, "train/learning_rate": float(schedule(done))})
        if done % cfg.eval_every == 0 or done == cfg.steps:
            metrics = evaluate(done)
            if metrics:
                bar.write(f"step {done}: " + ", ".join(f"{k.split('/')[1]} {v:.4f}" for k, v in metrics.items()))
        if done % cfg.checkpoint_every == 0 or done == cfg.steps:
            run.save_checkpoint(done, models, optimizers)
    bar.close()
    return metrics


def train_classifier(
    cfg: ClassifierConfig,
    out_dir,
    resume: bool = False,
    real_eval: RealEval | None = None,
    extra_data: tuple[np.ndarray, np.ndarray] | None = None,
    extra_fraction: float = 0.5,
    init_model: str | None = None,
    pool: SyntheticPool | None = None,
    progress: bool = True,
    log=print,
) -> dict:
    """Train on an endless synthetic stream (refined when cfg.refiner is set); returns the final metrics.

    extra_data: preprocessed images and (N, 4) labels (pseudo-labelled real captchas, -1 for an
    unknown character, which is left out of the loss) mixed into each batch at `extra_fraction`. init_model: start from these weights (fine-tuning).
    pool: draw the synthetic part of each batch from these pre-rendered captchas (a pipeline shares one
    between stages); without it, cfg.synthetic_pool captchas are rendered here when set. A pool
    refined by cfg.refiner (SyntheticPool.refined) is drawn from as it is.
    """
    import keras
    import tensorflow as tf

    from .preprocess import load_background
    from .refiner import load_refiner
    from .synth import SynthConfig, Synthesizer, render_pool_with_bar, training_batches

    run = RunDir(out_dir)
    if resume and run.has_checkpoint():
        cfg = run.load_config(ClassifierConfig)
    run.save_config(cfg)
    background = load_background(cfg.mask) if cfg.mask else None
    synth = Synthesizer(background, SynthConfig(fonts=tuple(cfg.fonts)))
    if pool is None and cfg.synthetic_pool and cfg.refiner:
        # The pool training_batches would render, refined once instead of batch by batch; made
        # before seeding, as a pool passed in is, so that the seeded run is the same.
        pool = render_pool_with_bar(background, synth.config, cfg.synthetic_pool, seed=cfg.seed, show=progress).refined(cfg.refiner)
    keras.utils.set_random_seed(cfg.seed)
    refiner = load_refiner(cfg.refiner) if cfg.refiner else None
    pool_refined = pool is not None and pool.refined_by is not None
    if pool_refined and not (cfg.refiner and Path(pool.refined_by).resolve() == Path(cfg.refiner).resolve()):
        raise ValueError(f"the synthetic pool was refined by {pool.refined_by}, but this run's refiner is {cfg.refiner}")

    model = keras.models.load_model(init_model, compile=False) if init_model else build_classifier(cfg)
    schedule = keras.optimizers.schedules.CosineDecay(cfg.learning_rate, cfg.steps, alpha=0.02)
    optimizer = keras.optimizers.Adam(schedule)
    optimizer.build(model.trainable_variables)
    loss_fn = keras.losses.SparseCategoricalCrossentropy()

    start = 0
    if resume and run.has_checkpoint():
        start, _ = run.load_checkpoint({"classifier": model}, {"adam": optimizer})
        log(f"resuming from step {start}")

    @tf.function
    def refine(x):
        return refiner(x, training=False)

    @tf.function
    def train_step(x, y):
        known = tf.cast(y >= 0, tf.float32)  # pseudo-labels mark unknown characters with -1
        y = tf.maximum(y, 0)
        with tf.GradientTape() as tape:
            heads = model(x, training=True)
            loss = tf.add_n([loss_fn(y[:, i], heads[i], sample_weight=known[:, i]) for i in range(CAPTCHA_LENGTH)])
        grads = tape.gradient(loss, model.trainable_variables)
        optimizer.apply_gradients(zip(grads, model.trainable_variables))
        return loss

    n_extra = int(round(cfg.batch_size * extra_fraction)) if extra_data is not None else 0
    batches = training_batches(synth, cfg.batch_size - n_extra, cfg.seed, start, pool, cfg.synthetic_pool, progress)
    rng = np.random.default_rng((cfg.seed, start, 7))

    val_images, val_texts = synth.render_batch(cfg.val_size, (cfg.seed, 999_999_999))
    from .preprocess import preprocess

    val_x = preprocess(val_images)
    if refiner is not None:
        val_x = refine(tf.constant(val_x)).numpy()

    def evaluate(step):
        metrics = {}
        metrics["val/synthetic_captcha_acc"], metrics["val/synthetic_char_acc"] = score(model, val_x, val_texts)
        if real_eval is not None:
            metrics["val/real_captcha_acc"], metrics["val/real_char_acc"] = score(model, real_eval.x, real_eval.texts)
        run.log_scalars(step, metrics)
        return metrics

    def step_fn(step):
        x, y = next(batches)
        if refiner is not None and not pool_refined:
            x = refine(x)
        if n_extra:
            pick = rng.integers(0, len(extra_data[0]), n_extra)
            x = tf.concat([x, shift_randomly(extra_data[0][pick], cfg.extra_shift, rng)], 0)
            y = tf.concat([y, extra_data[1][pick].astype(np.int32)], 0)
        return float(train_step(x, y))

    t0 = time.time()
    metrics = training_loop(run, cfg, start, step_fn, evaluate, schedule, {"classifier": model}, {"adam": optimizer},
                            "train classifier", progress)
    if not metrics:
        metrics = evaluate(cfg.steps)
    save_model_atomic(model, run.path / "classifier.keras")
    if cfg.refiner and Path(cfg.refiner).resolve() != (run.path / "refiner.keras").resolve():
        copy_atomic(cfg.refiner, run.path / "refiner.keras")
    metrics["train/seconds"] = time.time() - t0
    write_json_atomic(run.path / "metrics.json", metrics)
    return metrics
