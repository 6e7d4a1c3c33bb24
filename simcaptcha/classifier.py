"""The recognizer: a lean CNN with a slot head (one softmax per character window) or a CTC head (any length),
its training on (refined) synthetic captchas, prediction, decoding and accuracy."""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from .challenges import load_captchas, read_labels
from .files import InputError, copy_atomic, write_json_atomic
from .preprocess import preprocess
from .runs import RunDir, compiled_forward, save_model_atomic
from .spec import CaptchaSpec
from .synth import Synthesizer, SyntheticPool, training_batches, render_pool_with_bar
from .refiner import refine_images, refine_pool

HEADS = ("auto", "slots", "ctc")
PRECISIONS = ("auto", "float32", "bfloat16")
CTC_COLUMN_STRIDE = 4  # a CTC head reads one column of features per this many image columns


@dataclass(frozen=True)
class ClassifierConfig:
    steps: int = 3000
    batch_size: int = 64
    learning_rate: float = 1e-3
    filters: tuple[int, ...] = (16, 32, 64, 128)  # one 3x3 conv block each; all but the last halve the size
    stem_stride: int = 2  # the first conv halves the size itself: full-resolution maps cost the most time
    conv1_stride: int = 1  # 2: the second conv halves the map itself instead of a max-pool after it (28% fewer multiply-adds at width 1)
    bottleneck: int = 32  # 1x1 conv channels the heads read
    dense: int = 128  # hidden units of each head (of the one shared reader with shared_head; per time step with ctc)
    width: float = 1.0  # multiplies filters, bottleneck and dense: 2.0 has about 4x the weights and trains about 2.4x slower
    # slots: one softmax per character over a window of columns around where it is drawn (fixed length only);
    # ctc: one softmax per column over the alphabet and a blank, read by CTC (any length within the spec);
    # auto: slots for a fixed length, ctc for a range.
    head: str = "auto"
    context_layers: int = 2  # ctc: layers over the columns, so each column sees its neighbours
    context: str = "conv"  # ctc: "conv" (1-D convolutions, exportable to ONNX) or "gru" (bidirectional GRU)
    context_kernel: int = 3  # ctc: columns each 1-D convolution spans
    # ctc: share of the steps that also learn where characters usually stand (the synthesizer's layout: each
    # character's mean centre column, blank elsewhere), with a weight falling from 1 to 0. CTC alone leaves
    # its all-blank start slowly; this gets it reading in a few hundred steps.
    ctc_warmup: float = 0.5
    head_window: int = 6  # slots: feature-map columns each head sees
    shared_head: bool = True  # slots: one character reader (same weights) for all windows; False: one head per position
    dropout: float = 0.3
    seed: int = 0
    refiner: str | None = None  # the refiner.keras the synthetic captchas were passed through (recorded, copied to the run)
    eval_every: int = 500
    checkpoint_every: int = 250
    val_size: int = 512
    extra_shift: int = 0  # pseudo-labelled real captchas move by up to this many pixels each way, per batch
    extra_erase: int = 0  # pseudo-labelled real captchas lose this many small random boxes (set to their ground), per batch
    extra_erase_side: int = 10  # longest side of those boxes, px
    synthetic_pool: int = 0  # render this many synthetic captchas up front and draw batches from them (0: render each batch)
    # Arithmetic of the training steps: "bfloat16" computes layers in bfloat16 with float32 weights (Keras mixed
    # precision; outputs and saved models stay float32), "auto" picks it on a CPU with native bfloat16 and no GPU.
    # float32 by default: on HackMIT bfloat16 trained 20% faster and read as well over two seeds (91.45% each), but
    # a point lower at four rounds on the one seed measured (docs/results.md).
    precision: str = "float32"


# auto picks the CTC head for a fixed length too where the synthesizer moves characters sideways by at least
# this share of their pitch: a slot reads a window about a fixed place. (HackMIT: 0.30, slots 92.1% vs CTC
# 91.4%; the `captcha` style, fitted: 0.5-0.7, CTC 16.0% vs slots 8.1%; docs/results.md.)
MOVING_CHARACTERS = 0.4


def character_drift(synth: Synthesizer) -> float:
    """How far the synthesizer moves a character sideways (either way), as a share of the character pitch."""
    centers = synth.mean_centers(synth.spec.max_length)
    pitch = float(np.diff(centers).mean()) if len(centers) > 1 else synth.spec.width / 2
    return synth.config.x_jitter * synth.sx / max(pitch, 1e-9)


def resolve_head(head: str, spec: CaptchaSpec, synth: Synthesizer | None = None) -> str:
    """'auto' -> 'slots' for a fixed text length (unless `synth` moves its characters by MOVING_CHARACTERS of
    their pitch or more), 'ctc' for a range; 'slots' for a range is an InputError."""
    if head not in HEADS:
        raise InputError(f"head {head!r}: expected one of {', '.join(HEADS)}")
    if head == "auto":
        if not spec.fixed_length or (synth is not None and character_drift(synth) >= MOVING_CHARACTERS):
            return "ctc"
        return "slots"
    if head == "slots" and not spec.fixed_length:
        raise InputError(f"the slot head reads a fixed number of characters; texts of {spec.length_text} need --head ctc")
    return head


def slot_window(synth: Synthesizer, cfg: ClassifierConfig) -> int:
    """Feature-map columns a slot head should see for `synth`'s layout: one character pitch plus its sideways
    jitter both ways (HackMIT's layout: 6, the default), in columns of the slot network (8 image columns each)."""
    centers = synth.mean_centers(synth.spec.max_length)
    pitch = float(np.diff(centers).mean()) if len(centers) > 1 else synth.spec.width / 2
    reach = pitch + 2 * synth.config.x_jitter * synth.sx
    return max(cfg.head_window, int(np.ceil(reach / 8)))


def head_windows(width: int, window: int, centers, image_width: int, pad: int = 0) -> list[tuple[int, int]]:
    """Column ranges of a feature map of `width` columns, one per character, centred on where it is drawn
    (`centers`, pixels of an `image_width`-wide captcha).

    pad: columns of zeros added on each side; windows then stay centred instead of being clamped.
    """
    spans = []
    for cx in centers:
        lo = int(round(cx / image_width * width)) + pad - window // 2
        lo = min(max(0, lo), width + 2 * pad - window)
        spans.append((lo, lo + window))
    return spans


def build_classifier(spec: CaptchaSpec, cfg: ClassifierConfig = ClassifierConfig(), centers=None):
    """A lean CNN over the preprocessed (H, W, 1) image, with the head cfg.head names for this spec.

    slots: heads char_0..char_{L-1}, each a softmax over the alphabet reading only a window of
    feature-map columns around its character's usual place (`centers`, pixels; default evenly
    spaced): characters stay in their slot, so this prior makes the network learn fast and small.
    ctc: one output `ctc`, (T, classes + 1) per captcha, the last class the CTC blank; the last
    pooling halves only the height, so T is a quarter of the width.
    """
    import keras
    from keras import layers

    head = resolve_head(cfg.head, spec)

    def scaled(channels: int) -> int:
        return max(1, round(channels * cfg.width))

    inputs = keras.Input((spec.height, spec.width, 1), name="image")
    x = inputs
    col_stride = 1  # how many input columns one feature column spans
    for i, f in enumerate(map(scaled, cfg.filters)):
        stride = cfg.stem_stride if i == 0 else cfg.conv1_stride if i == 1 else 1
        x = layers.Conv2D(f, 3, strides=stride, padding="same", use_bias=False, name=f"conv_{i}")(x)
        col_stride *= stride
        # BatchNorm: without it this network sometimes never starts learning.
        x = layers.BatchNormalization(name=f"bn_{i}")(x)
        x = layers.ReLU(name=f"relu_{i}")(x)
        if i < len(cfg.filters) - 1 and stride == 1:
            # ctc keeps a quarter of the columns: a text needs about two columns per character
            pool = (2, 1) if head == "ctc" and col_stride >= CTC_COLUMN_STRIDE else 2
            col_stride *= pool if isinstance(pool, int) else 1
            x = layers.MaxPooling2D(pool, name=f"pool_{i}")(x)
    # A 1x1 bottleneck keeps the heads small (a few MB model, fast heads).
    x = layers.Conv2D(scaled(cfg.bottleneck), 1, use_bias=False, name="bottleneck")(x)
    x = layers.BatchNormalization(name="bn_bottleneck")(x)
    x = layers.ReLU(name="relu_bottleneck")(x)
    if head == "ctc":
        h, w, c = x.shape[1:]
        x = layers.Permute((2, 1, 3), name="columns")(x)
        x = layers.Reshape((w, h * c), name="sequence")(x)
        x = layers.Dense(scaled(cfg.dense), activation="relu", name="features")(x)
        for k in range(cfg.context_layers):
            if cfg.context == "gru":
                x = layers.Bidirectional(layers.GRU(scaled(cfg.dense) // 2, return_sequences=True), name=f"context_{k}")(x)
            else:
                x = layers.Conv1D(scaled(cfg.dense), cfg.context_kernel, padding="same", activation="relu", name=f"context_{k}")(x)
        x = layers.Dropout(cfg.dropout, name="dropout")(x)
        outputs = layers.Dense(spec.num_classes + 1, activation="softmax", name="ctc")(x)
        return keras.Model(inputs, outputs, name="classifier")
    if centers is None:
        centers = (np.arange(spec.max_length) + 0.5) * spec.width / spec.max_length
    width = x.shape[2]
    pad = 0
    if cfg.shared_head:
        # Centred windows over a zero-padded map, read by one head: every position learns from
        # all characters, and a glyph reads the same wherever it stands.
        pad = cfg.head_window // 2
        x = layers.ZeroPadding2D(((0, 0), (pad, pad)), name="pad_windows")(x)
        features = layers.Dense(scaled(cfg.dense), activation="relu", name="features")
        logits = layers.Dense(spec.num_classes, name="logits")
    outputs = []
    for i, (lo, hi) in enumerate(head_windows(width, cfg.head_window, centers, spec.width, pad)):
        h = layers.Cropping2D(((0, 0), (lo, width + 2 * pad - hi)), name=f"window_{i}")(x)
        h = layers.Flatten(name=f"flatten_{i}")(h)
        h = layers.Dropout(cfg.dropout, name=f"dropout_{i}")(h)
        if cfg.shared_head:
            outputs.append(layers.Softmax(name=f"char_{i}")(logits(features(h))))
        else:
            h = layers.Dense(scaled(cfg.dense), activation="relu", name=f"features_{i}")(h)
            outputs.append(layers.Dense(spec.num_classes, activation="softmax", name=f"char_{i}")(h))
    return keras.Model(inputs, outputs, name="classifier")


def is_ctc(probs_or_model, spec: CaptchaSpec) -> bool:
    """Whether probabilities (or a model's output) carry the CTC blank: classes + 1 per step."""
    if hasattr(probs_or_model, "outputs"):
        return len(probs_or_model.outputs) == 1 and tuple(probs_or_model.outputs[0].shape)[-1] == spec.num_classes + 1 \
            and len(probs_or_model.outputs[0].shape) == 3
    return probs_or_model.shape[-1] == spec.num_classes + 1


def average_classifiers(models, name: str = "ensemble"):
    """One plain Keras model whose outputs average the given classifiers' probabilities (same head and spec).

    Classifiers trained on different data (refined vs raw synthetic) make different mistakes;
    averaging their probabilities is right more often than either alone.
    """
    import keras
    from keras import layers

    if not models:
        raise ValueError("average_classifiers needs at least one model")
    shapes = {tuple(tuple(o.shape[1:]) for o in m.outputs) for m in models}
    if len(shapes) != 1:
        raise InputError("these classifiers cannot be averaged: their outputs differ " + " vs ".join(map(str, shapes)))
    inputs = keras.Input(tuple(models[0].inputs[0].shape[1:]), name="image")
    # Re-wrap each member under its own name: nested models must not share one.
    members = [keras.Model(m.inputs, m.outputs, name=f"member_{i}") for i, m in enumerate(models)]
    heads = [member(inputs) for member in members]
    heads = [h if isinstance(h, (list, tuple)) else [h] for h in heads]
    names = [o.name.split("/")[0] for o in models[0].outputs]
    names = [n if n.startswith(("char_", "ctc")) else f"char_{i}" for i, n in enumerate(names)]
    if len(models) == 1:
        outputs = [layers.Identity(name=n)(heads[0][i]) for i, n in enumerate(names)]
    else:
        outputs = [layers.Average(name=n)([h[i] for h in heads]) for i, n in enumerate(names)]
    return keras.Model(inputs, outputs if len(outputs) > 1 else outputs[0], name=name)


def cpu_has_bfloat16() -> bool:
    """Whether this CPU computes bfloat16 natively (x86 AVX512-BF16 or AMX, Arm BF16; Linux's /proc/cpuinfo)."""
    try:
        flags = set(Path("/proc/cpuinfo").read_text().split())
    except OSError:
        return False
    return bool(flags & {"avx512_bf16", "amx_bf16", "bf16"})


def resolve_precision(precision: str) -> str:
    """float32 or bfloat16 for a ClassifierConfig.precision (auto: bfloat16 where the CPU has it and TensorFlow
    sees no GPU; emulated bfloat16 is slower than float32)."""
    if precision not in PRECISIONS:
        raise InputError(f"precision {precision!r}: expected one of {', '.join(PRECISIONS)}")
    if precision != "auto":
        return precision
    import tensorflow as tf

    return "bfloat16" if cpu_has_bfloat16() and not tf.config.list_physical_devices("GPU") else "float32"


def with_precision(model, precision: str):
    """`model` itself for float32; for bfloat16 a copy computing in bfloat16 (Keras "mixed_bfloat16": float32
    weights, copied from `model`) whose outputs stay float32. Train the copy, then copy its weights back."""
    import keras

    if precision == "float32":
        return model
    outputs = set(model.output_names)

    def clone(layer):
        config = layer.get_config()
        config["dtype"] = "float32" if layer.name in outputs else "mixed_bfloat16"
        return layer.__class__.from_config(config)

    fast = keras.models.clone_model(model, clone_function=clone)
    fast.set_weights(model.get_weights())
    return fast


def copy_trained_weights(model, trained) -> None:
    """Bring `model` up to date with `trained`, its with_precision copy (nothing to do where they are one)."""
    if trained is not model:
        model.set_weights(trained.get_weights())


# Inside a .keras file whose normalization statistics were measured on real captchas (AdaBN), beside its spec:
# {"captchas": how many}. Its calibration then reads the synthetic captchas with their own statistics too.
ADAPTED_ENTRY = "simcaptcha_adabn.json"


def adapt_batchnorm(model, x: np.ndarray, batch_size: int = 500) -> int:
    """AdaBN (Li et al., 2016): set each BatchNormalization's moving mean and variance to those of its input on
    `x` (preprocessed real captchas), layer after layer, so that a classifier's normalization, learnt on
    synthetic or half-synthetic batches, matches the captchas it will read. Changes `model` in place (a nested
    model, such as an averaged ensemble's member, is adapted member by member); returns the layers adapted.
    """
    import keras

    members = [layer for layer in model.layers if isinstance(layer, keras.Model)]
    if members:
        return sum(adapt_batchnorm(member, x, batch_size) for member in members)
    norms = [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]
    if not len(x):
        return 0
    for norm in norms:  # in graph order: each layer's input already passes through the adapted ones before it
        upto = keras.Model(model.inputs[0], norm.input)
        total, square, count = 0.0, 0.0, 0
        for i in range(0, len(x), batch_size):
            features = np.asarray(upto(x[i : i + batch_size], training=False), np.float64)
            features = features.reshape(-1, features.shape[-1])  # every position of every captcha, per channel
            total, square, count = total + features.sum(0), square + (features**2).sum(0), count + len(features)
        mean = total / count
        norm.moving_mean.assign(mean.astype(np.float32))
        norm.moving_variance.assign(np.maximum(square / count - mean**2, 0.0).astype(np.float32))
    return len(norms)


def predict_probs(model, x: np.ndarray, batch_size: int = 512) -> np.ndarray:
    """Preprocessed images -> (N, L, classes) slot probabilities, or (N, T, classes + 1) for a CTC head."""
    import tensorflow as tf

    infer = compiled_forward(model)
    out = []
    for i in range(0, len(x), batch_size):
        o = infer(tf.constant(x[i : i + batch_size]))
        out.append(np.stack([h.numpy() for h in o], axis=1) if isinstance(o, (list, tuple)) else o.numpy())
    if not out:
        shape = [tuple(o.shape[1:]) for o in model.outputs]
        return np.zeros((0, *shape[0]) if len(shape) == 1 and len(shape[0]) == 2 else (0, len(shape), shape[0][-1]), np.float32)
    return np.concatenate(out)


def ctc_best_path(probs: np.ndarray, lengths: tuple[int, int] | None = None) -> tuple[list[list[tuple[int, int]]], np.ndarray]:
    """Greedy CTC decoding of (N, T, classes + 1): for each captcha the (class, frame) of every character
    read (repeats merged, blanks dropped; the frame is where that character is surest), and the best
    path's probability.

    lengths: (min, max) characters a text can have. A captcha whose greedy read is outside them is read
    along its most probable path with a length inside them instead (ctc_viterbi_path): the character a
    greedy read drops where two glyphs overlap is then the likeliest one there, and the probability
    returned is that path's, lower than the greedy one's.
    """
    blank = probs.shape[-1] - 1
    best = probs.argmax(-1)
    emitted = ctc_emits(best, blank)
    if lengths is not None:
        for b in np.flatnonzero(~np.isin(emitted.sum(-1), np.arange(lengths[0], lengths[1] + 1))):
            path = ctc_viterbi_path(probs[b], *lengths)
            if path is not None:
                best[b] = path
                emitted[b] = ctc_emits(path[None], blank)[0]
    top = np.take_along_axis(probs, best[..., None], -1)[..., 0]
    conf = np.exp(np.log(np.maximum(top, 1e-30)).sum(-1))
    reads = []
    for b, p, e in zip(best, top, emitted):
        chars = []
        for t, k in enumerate(b):
            if e[t]:
                chars.append((int(k), t))
            elif k != blank and p[t] > p[chars[-1][1]]:  # a repeat: keep the frame where it is surest
                chars[-1] = (int(k), t)
        reads.append(chars)
    return reads, conf


def ctc_viterbi_path(probs: np.ndarray, min_length: int, max_length: int) -> np.ndarray | None:
    """(T, classes + 1) of one captcha -> (T,) the most probable frame-by-frame path (the blank last) that
    reads between min_length and max_length characters, or None where T frames cannot hold that many.

    Dynamic programme over frames; a state is (characters read so far, this frame's class): a character
    frame after the same character continues it, after anything else starts the next one.
    """
    frames, classes = probs.shape
    if frames == 0:
        return None
    blank, top = classes - 1, max_length + 1
    logp = np.log(np.maximum(probs, 1e-30))
    score = np.full((top, classes), -np.inf)  # score[k, s]: best log-probability, k characters read, frame class s
    score[0, blank] = logp[0, blank]
    if top > 1:
        score[1, :blank] = logp[0, :blank]
    back = np.zeros((frames, top, classes, 2), np.int32)  # (k, s) of the frame before
    chars = np.arange(blank)
    for t in range(1, frames):
        new = np.full_like(score, -np.inf)
        src = np.zeros((top, classes, 2), np.int32)
        # the blank: from any state, the count unchanged
        s_best = score.argmax(-1)
        new[:, blank] = score[np.arange(top), s_best] + logp[t, blank]
        src[:, blank] = np.stack([np.arange(top), s_best], -1)
        # a character c: the same c continued (k unchanged), or a new one after the blank or another character (k - 1)
        stay = score[:, :blank]
        prev = score[:-1]  # k - 1 for k = 1..max_length
        order = np.argsort(-prev[:, :blank], axis=-1)  # best two characters at k - 1, for "another than c"
        first, second = order[:, 0], order[:, min(1, blank - 1)]  # (a one-character alphabet has no other)
        other_s = np.where(chars[None, :] == first[:, None], second[:, None], first[:, None])  # (k, c): best s != c
        other = np.where(other_s == chars[None, :], -np.inf, np.take_along_axis(prev[:, :blank], other_s, -1))
        after_blank = prev[:, blank][:, None].repeat(blank, 1)
        start_s = np.where(after_blank >= other, blank, other_s)
        start = np.maximum(after_blank, other)
        cont = stay[1:]  # continuing c only makes sense with k >= 1
        use_start = start >= cont
        new[1:, :blank] = np.where(use_start, start, cont) + logp[t, :blank]
        src[1:, :blank, 0] = np.where(use_start, np.arange(top - 1)[:, None], np.arange(1, top)[:, None])
        src[1:, :blank, 1] = np.where(use_start, start_s, chars[None, :])
        score, back[t] = new, src
    allowed = score[min_length:top]
    if not np.isfinite(allowed).any():
        return None
    k, s = np.unravel_index(np.argmax(allowed), allowed.shape)
    k += min_length
    path = np.empty(frames, np.int64)
    for t in range(frames - 1, -1, -1):
        path[t] = s
        k, s = back[t, k, s]
    return path


def ctc_emits(best: np.ndarray, blank: int) -> np.ndarray:
    """(N, T) best-path classes -> (N, T) bool: the frames where greedy CTC decoding reads a character
    (not the blank, not a repeat of the frame before)."""
    repeat = np.zeros_like(best, bool)
    repeat[:, 1:] = best[:, 1:] == best[:, :-1]
    return (best != blank) & ~repeat


def read_probs(probs: np.ndarray, spec: CaptchaSpec, rows: bool = True) -> tuple[list[str], np.ndarray, list[np.ndarray] | None]:
    """Probabilities -> texts, a per-captcha confidence and (with `rows`) each captcha's (characters read,
    classes) probabilities, decoded once. Slots: each character's top class, the product of their
    probabilities, the slots themselves. ctc: the best path, among paths of a length the spec allows where
    the greedy one is not; its probability; each read character's frame without the blank, renormalized."""
    if not is_ctc(probs, spec):
        return [spec.decode(row) for row in probs.argmax(-1)], probs.max(-1).prod(-1), list(probs) if rows else None
    reads, conf = ctc_best_path(probs, (spec.min_length, spec.max_length))
    texts = ["".join(spec.alphabet[k] for k, _ in r) for r in reads]
    if not rows:
        return texts, conf, None
    chars = []
    for p, r in zip(probs, reads):
        picked = p[[t for _, t in r], :-1] if r else np.zeros((0, spec.num_classes), np.float32)
        chars.append(picked / np.maximum(picked.sum(-1, keepdims=True), 1e-9))
    return texts, conf, chars


def decode_probs(probs: np.ndarray, spec: CaptchaSpec) -> tuple[list[str], np.ndarray]:
    """Probabilities -> texts and a per-captcha confidence (read_probs without the rows)."""
    return read_probs(probs, spec, rows=False)[:2]


def char_probs(probs: np.ndarray, spec: CaptchaSpec) -> list[np.ndarray]:
    """Each captcha's (characters read, classes) probabilities (read_probs' rows)."""
    return read_probs(probs, spec)[2]


def accuracy(pred: list[str], truth: list[str]) -> tuple[float, float]:
    """(captcha accuracy, character accuracy)."""
    if not truth:
        return 0.0, 0.0
    whole = np.mean([p == t for p, t in zip(pred, truth)])
    # position by position, over the true characters: a text read too short or too long loses the rest
    chars = sum(a == b for p, t in zip(pred, truth) for a, b in zip(p, t)) / max(1, sum(map(len, truth)))
    return float(whole), float(chars)


def score(model, x: np.ndarray, texts: list[str], spec: CaptchaSpec) -> tuple[float, float]:
    """(captcha accuracy, character accuracy) of the model's readings of preprocessed images."""
    pred, _ = decode_probs(predict_probs(model, x), spec)
    return accuracy(pred, texts)


@dataclass
class RealEval:
    """Real captchas with labels, for evaluation only: never fed to training."""

    x: np.ndarray
    texts: list[str]
    names: list[str] = field(default_factory=list)


def load_real_eval(paths, labels_path, resize: tuple[int, int] | None = None, ink: str = "light") -> RealEval:
    """Labelled real captchas: labels_path is a JSON name -> text map, or a folder of images named after their texts."""
    labels, _ = read_labels(Path(labels_path))
    loaded = load_captchas(paths)
    if resize:
        loaded.resize(resize)
    loaded.captchas = [c for c in loaded.captchas if c.name in labels]
    if not loaded.captchas:
        raise InputError(f"{labels_path}: no label matches a captcha in {', '.join(map(str, paths))}")
    x = preprocess(loaded.images(), ink)
    return RealEval(x, [labels[c.name] for c in loaded.captchas], loaded.names())


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


def erase_randomly(x: np.ndarray, boxes: int, side: int, rng: np.random.Generator) -> np.ndarray:
    """A copy of (N, H, W, C) images with `boxes` random boxes of each (1 to `side` px each way) set to
    the image's median, its ground: a reader must then read a character from more than one of its parts."""
    x = np.array(x, copy=True)
    n, h, w = x.shape[:3]
    bh, bw = min(side, h), min(side, w)
    ground = np.median(x.reshape(n, -1), axis=1)
    for i in range(n):
        for _ in range(boxes):
            eh, ew = rng.integers(1, bh + 1), rng.integers(1, bw + 1)
            y0, x0 = rng.integers(0, h - eh + 1), rng.integers(0, w - ew + 1)
            x[i, y0:y0 + eh, x0:x0 + ew] = ground[i]
    return x


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
    synth: Synthesizer,
    out_dir,
    refiner=None,
    pool: SyntheticPool | None = None,
    real_eval: RealEval | None = None,
    extra_data: tuple[np.ndarray, np.ndarray] | None = None,
    extra_fraction: float = 0.5,
    init_model=None,
    resume: bool = False,
    progress: bool = True,
    log=print,
) -> dict:
    """Train on `synth`'s captchas, passed through `refiner` (a loaded refiner model) when given; returns the final metrics.

    pool: draw the synthetic part of each batch from these pre-rendered captchas (a pipeline shares
    one between stages; one already refined, see refiner.refine_pool, is drawn from as it is);
    without it, cfg.synthetic_pool captchas are rendered here when set (and refined once).
    extra_data: preprocessed images and (N, max_length) labels (pseudo-labelled real captchas; for the
    slot head -1 marks an unknown character, left out of the loss) mixed into each batch at
    `extra_fraction`. init_model: a loaded classifier to start from (fine-tuning).
    Writes OUT/classifier.keras (with the spec inside), spec.json, synth.json, config.json, metrics.json.
    """
    import keras
    import tensorflow as tf

    spec = synth.spec
    run = RunDir(out_dir)
    if resume and run.has_checkpoint():
        cfg = run.load_config(ClassifierConfig)
    cfg = replace(cfg, head=resolve_head(cfg.head, spec, synth), precision=resolve_precision(cfg.precision))
    run.save_config(cfg)
    spec.save(run.path)
    synth.save(run.path)
    if pool is None and cfg.synthetic_pool:
        pool = render_pool_with_bar(synth, cfg.synthetic_pool, seed=cfg.seed, show=progress)
        if refiner is not None:
            pool = refine_pool(pool, refiner, cfg.refiner or "refiner")
    keras.utils.set_random_seed(cfg.seed)
    per_batch_refiner = refiner if pool is None or pool.refined_by is None else None
    if pool is not None and pool.refined_by is not None and refiner is None:
        raise ValueError(f"the synthetic pool was refined by {pool.refined_by}, but this run has no refiner")

    model = init_model if init_model is not None else build_classifier(spec, cfg, synth.mean_centers(spec.max_length))
    ctc = is_ctc(model, spec)
    precision = cfg.precision
    trained = with_precision(model, precision)  # the steps train this one; `model` (float32) is scored and saved
    schedule = keras.optimizers.schedules.CosineDecay(cfg.learning_rate, cfg.steps, alpha=0.02)
    optimizer = keras.optimizers.Adam(schedule)
    optimizer.build(trained.trainable_variables)
    loss_fn = keras.losses.SparseCategoricalCrossentropy()

    start = 0
    if resume and run.has_checkpoint():
        start, _ = run.load_checkpoint({"classifier": trained}, {"adam": optimizer})
        log(f"resuming from step {start}")

    @tf.function
    def refine(x):
        return per_batch_refiner(x, training=False)

    def loss_of(y, out):
        if ctc:
            # CTC over the columns; the text ends at the first PAD. ctc_loss wants logits: log of a
            # softmax is one (its log-softmax is itself).
            label_length = tf.reduce_sum(tf.cast(y >= 0, tf.int32), axis=1)
            logit_length = tf.fill([tf.shape(out)[0]], tf.shape(out)[1])
            losses = tf.nn.ctc_loss(tf.maximum(y, 0), tf.math.log(out + 1e-8), label_length, logit_length,
                                    logits_time_major=False, blank_index=spec.num_classes)
            return tf.reduce_mean(losses)
        known = tf.cast(y >= 0, tf.float32)  # pseudo-labels mark unknown characters with -1
        y = tf.maximum(y, 0)
        return tf.add_n([loss_fn(y[:, i], out[i], sample_weight=known[:, i]) for i in range(len(out))])

    @tf.function
    def train_step(x, y, frames, frame_weight):
        with tf.GradientTape() as tape:
            out = trained(x, training=True)
            loss = loss_of(y, out)
            if ctc:
                known = tf.cast(frames >= 0, tf.float32)
                framewise = keras.losses.sparse_categorical_crossentropy(tf.maximum(frames, 0), out)
                loss += frame_weight * tf.reduce_sum(framewise * known) / tf.maximum(tf.reduce_sum(known), 1.0) * 5.0
        grads = tape.gradient(loss, trained.trainable_variables)
        optimizer.apply_gradients(zip(grads, trained.trainable_variables))
        return loss

    columns = int(model.outputs[0].shape[1]) if ctc else 0
    layout = {n: np.clip((synth.mean_centers(n) / spec.width * columns).astype(int), 0, columns - 1)
              for n in range(spec.min_length, spec.max_length + 1)} if ctc else {}
    warmup_steps = int(cfg.ctc_warmup * cfg.steps) if ctc else 0

    def frame_targets(y: np.ndarray, step: int) -> tuple[np.ndarray, float]:
        """ctc warm-up: each character at its layout column, blank at the others (-1: not scored)."""
        if step >= warmup_steps:
            return np.full((len(y), max(columns, 1)), -1, np.int32), 0.0
        frames = np.full((len(y), columns), spec.num_classes, np.int32)
        for b, row in enumerate(y):
            text = row[row >= 0]
            if len(text) in layout:
                for offset in (-1, 0, 1):  # the character's centre column and its neighbours
                    frames[b, np.clip(layout[len(text)] + offset, 0, columns - 1)] = text
            else:
                frames[b] = -1
        return frames, 1.0 - step / warmup_steps

    n_extra = int(round(cfg.batch_size * extra_fraction)) if extra_data is not None else 0
    batches = training_batches(synth, cfg.batch_size - n_extra, cfg.seed, start, pool, 0, progress)
    rng = np.random.default_rng((cfg.seed, start, 7))

    val_images, val_texts = synth.render_batch(cfg.val_size, (cfg.seed, 999_999_999))
    val_x = preprocess(val_images, spec.ink)
    if refiner is not None:
        val_x = refine_images(refiner, val_x)

    def evaluate(step):
        copy_trained_weights(model, trained)
        metrics = {}
        metrics["val/synthetic_captcha_acc"], metrics["val/synthetic_char_acc"] = score(model, val_x, val_texts, spec)
        if real_eval is not None:
            metrics["val/real_captcha_acc"], metrics["val/real_char_acc"] = score(model, real_eval.x, real_eval.texts, spec)
        run.log_scalars(step, metrics)
        return metrics

    def step_fn(step):
        x, y = next(batches)
        if per_batch_refiner is not None:
            x = refine(x)
        if n_extra:
            pick = rng.integers(0, len(extra_data[0]), n_extra)
            real = shift_randomly(extra_data[0][pick], cfg.extra_shift, rng)
            if cfg.extra_erase:
                real = erase_randomly(real, cfg.extra_erase, cfg.extra_erase_side, rng)
            x = tf.concat([x, real], 0)
            y = tf.concat([y, extra_data[1][pick].astype(np.int32)], 0)
        frames, weight = frame_targets(np.asarray(y), step)
        return float(train_step(x, y, tf.constant(frames), tf.constant(weight, tf.float32)))

    t0 = time.time()
    metrics = training_loop(run, cfg, start, step_fn, evaluate, schedule, {"classifier": trained}, {"adam": optimizer},
                            f"train classifier ({precision})" if precision != "float32" else "train classifier", progress)
    if not metrics:
        metrics = evaluate(cfg.steps)
    copy_trained_weights(model, trained)
    save_model_atomic(model, run.path / "classifier.keras", spec)
    if cfg.refiner and Path(cfg.refiner).is_file() and Path(cfg.refiner).resolve() != (run.path / "refiner.keras").resolve():
        copy_atomic(cfg.refiner, run.path / "refiner.keras")
    metrics["train/seconds"] = time.time() - t0
    write_json_atomic(run.path / "metrics.json", metrics)
    return metrics
