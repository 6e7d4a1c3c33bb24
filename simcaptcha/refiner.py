"""SimGAN pieces: refiner and local patch discriminator factories, their losses, and the refined-image history buffer."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .files import InputError
from .runs import compiled_forward
from .synth import SyntheticPool


@dataclass(frozen=True)
class RefinerConfig:
    features: int = 8  # F: feature maps of the refiner (lean: it runs on every classifier batch)
    blocks: int = 3  # K: ResNet blocks
    disc_features: int = 32  # width of the discriminator


def build_refiner(cfg: RefinerConfig = RefinerConfig()):
    """Fully convolutional ResNet: 3x3 conv to F maps, K residual blocks, 1x1 conv to one channel, tanh.

    Works on the preprocessed single-channel image in [-1, 1] and returns one of the same size.
    """
    import keras
    from keras import layers

    inputs = keras.Input((None, None, 1), name="synthetic")
    x = layers.Conv2D(cfg.features, 3, padding="same", activation="relu", name="stem")(inputs)
    for i in range(cfg.blocks):
        y = layers.Conv2D(cfg.features, 3, padding="same", activation="relu", name=f"block_{i}_conv_a")(x)
        y = layers.Conv2D(cfg.features, 3, padding="same", name=f"block_{i}_conv_b")(y)
        x = layers.ReLU(name=f"block_{i}_out")(layers.Add(name=f"block_{i}_skip")([x, y]))
    outputs = layers.Conv2D(1, 1, activation="tanh", name="refined")(x)
    return keras.Model(inputs, outputs, name="refiner")


def build_discriminator(cfg: RefinerConfig = RefinerConfig()):
    """Fully convolutional: one logit per local patch (about 12x25 patches on a 50x100 captcha)."""
    import keras
    from keras import layers

    f = cfg.disc_features
    inputs = keras.Input((None, None, 1), name="image")
    x = layers.Conv2D(f, 3, strides=2, padding="same", activation="relu", name="conv_0")(inputs)
    x = layers.Conv2D(f, 3, strides=2, padding="same", activation="relu", name="conv_1")(x)
    x = layers.MaxPooling2D(3, strides=1, padding="same", name="pool")(x)
    x = layers.Conv2D(f, 3, padding="same", activation="relu", name="conv_2")(x)
    x = layers.Conv2D(f // 2, 1, activation="relu", name="conv_3")(x)
    outputs = layers.Conv2D(1, 1, name="patch_logits")(x)
    return keras.Model(inputs, outputs, name="discriminator")


def _bce(logits, target: float):
    import tensorflow as tf

    labels = tf.fill(tf.shape(logits), target)
    return tf.reduce_mean(tf.nn.sigmoid_cross_entropy_with_logits(labels=labels, logits=logits))


def self_regularization_loss(synthetic, refined):
    """L1 between input and output in the preprocessed space: keeps the characters (the label) intact."""
    import tensorflow as tf

    return tf.reduce_mean(tf.abs(refined - synthetic))


def refiner_adversarial_loss(refined_logits):
    """The refiner wants every patch of its output judged real."""
    return _bce(refined_logits, 1.0)


def discriminator_loss(real_logits, refined_logits):
    """Mean over patches: real patches -> 1, refined patches -> 0."""
    return _bce(real_logits, 1.0) + _bce(refined_logits, 0.0)


class ImageHistoryBuffer:
    """Earlier refined images, so the discriminator keeps remembering old refiner artefacts (SimGAN, section 2.3).

    `mix(batch)` returns a batch of the same size whose first half is new and whose second half
    is drawn from the buffer; the buffer then takes in half of the new images at random places.
    Until the buffer holds half a batch, the batch passes through unchanged while it fills.
    """

    def __init__(self, capacity: int, seed=0):
        if capacity < 1:
            raise ValueError("history buffer capacity must be at least 1")
        self.capacity = capacity
        self.rng = np.random.default_rng(seed)
        self.images: np.ndarray | None = None
        self.size = 0

    def _take_in(self, images: np.ndarray) -> None:
        if self.images is None:
            self.images = np.zeros((self.capacity,) + images.shape[1:], images.dtype)
        free = min(self.capacity - self.size, len(images))
        self.images[self.size : self.size + free] = images[:free]
        self.size += free
        rest = images[free:]
        if len(rest):
            self.images[self.rng.choice(self.size, len(rest), replace=False)] = rest

    def mix(self, refined: np.ndarray) -> np.ndarray:
        refined = np.asarray(refined)
        half = len(refined) // 2
        if self.size < half or half == 0:
            self._take_in(refined[: max(half, 1)])
            return refined
        old = self.images[self.rng.choice(self.size, len(refined) - half, replace=False)]
        self._take_in(refined[self.rng.choice(len(refined), half, replace=False)])
        return np.concatenate([refined[:half], old])

    def state(self) -> np.ndarray:
        return np.zeros((0,)) if self.images is None else self.images[: self.size].copy()

    def restore(self, images: np.ndarray) -> None:
        self.images, self.size = None, 0
        if len(images):
            self._take_in(np.asarray(images)[: self.capacity])


def load_refiner(path):
    """A refiner.keras: one single-channel image in and one out (any size: the refiner is fully convolutional)."""
    import keras

    if not Path(path).is_file():
        raise InputError(f"{path}: no such refiner model")
    try:
        model = keras.models.load_model(path, compile=False, safe_mode=True)
    except Exception as exc:  # a damaged or foreign file: zip, HDF5, JSON and Keras all raise their own kinds
        raise InputError(f"{path}: cannot load refiner ({exc.__class__.__name__})") from None
    inputs, outputs = getattr(model, "inputs", None) or [], getattr(model, "outputs", None) or []

    def fits(tensor) -> bool:  # a fully convolutional refiner leaves height and width open (None)
        dims = tuple(tensor.shape)[1:]
        return len(dims) == 3 and dims[2] == 1

    if len(inputs) != 1 or len(outputs) != 1 or not fits(inputs[0]) or not fits(outputs[0]):
        raise InputError(f"{path}: not a refiner: expected one single-channel image in and one out")
    return model


def refine_images(refiner, x: np.ndarray, batch_size: int = 256) -> np.ndarray:
    """Preprocessed synthetic images -> refined images, same shape (written in place of a copy: a pool is ~1 GB)."""
    import tensorflow as tf

    forward = compiled_forward(refiner)  # 1.6x faster than eager calls on a 64,000-captcha pool
    out = np.empty(x.shape, np.float32)
    for i in range(0, len(x), batch_size):
        out[i : i + batch_size] = forward(tf.constant(x[i : i + batch_size])).numpy()
    return out


def refine_pool(pool: SyntheticPool, refiner, name: str, batch_size: int = 512) -> SyntheticPool:
    """A synthetic pool passed once through a refiner (`name` says which, for messages). A stage that refines
    every batch it draws would refine each captcha again on every pass (width 1.5: 0.06 s of a 0.33 s step here)."""
    return SyntheticPool(refine_images(refiner, pool.x, batch_size), pool.labels, refined_by=str(name))
