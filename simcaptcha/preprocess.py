"""The one preprocessing function shared by every stage, and the per-user background (noise mask) estimate.

Real captchas are near-white strokes and thin white lines over saturated colour stripes.
The minimum of R, G and B (whiteness) is high only where a pixel is close to white, so it
separates strokes from stripes whatever the stripe colours are; but JPEG keeps colour at
half resolution (4:2:0), and the minimum inherits that blur: thin lines fade and the small
gaps that tell i from l or c from o close. Brightness (luma) is stored at full resolution
and stays sharp, with less contrast on bright stripes. The network sees the mean of the two,
scaled to [-1, 1], for real and synthetic captchas alike (a raw-synthetic classifier reads
63.8% of challenge-14 with it, 62.4% with luma alone, 59.1% with whiteness alone).
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from .files import InputError, write_atomic

# The white lines of a background are the pixels at least this white (0-255 whiteness).
LINE_THRESHOLD = 160
# Captchas a background is estimated from: the percentiles settle long before, and more costs memory.
BACKGROUND_SAMPLE = 3000


def whiteness(rgb: np.ndarray) -> np.ndarray:
    """(..., 3) uint8 RGB -> (...) uint8: how close each pixel is to white."""
    # Two elementwise minimums: numpy's min over a 3-long last axis is ~6x slower (solve speed).
    return np.minimum(np.minimum(rgb[..., 0], rgb[..., 1]), rgb[..., 2])


# ITU-R BT.601 luma weights, as JPEG uses, over 255: the mean (luma + whiteness) / 2 scaled
# from [0, 255] to [-1, 1] is (luma + whiteness) / 255 - 1, which preprocess adds up in place.
_LUMA_OVER_255 = np.array([0.299, 0.587, 0.114], np.float32) / 255.0


def preprocess(rgb: np.ndarray, ink: str = "light") -> np.ndarray:
    """(N, H, W, 3) or (H, W, 3) uint8 RGB -> float32 (..., H, W, 1) in [-1, 1].

    The mean of whiteness and luma: white 1, black -1 (see the module docstring). For captchas of
    dark ink on a light background (the spec's ink "dark") the scale is turned over, so that the
    network always sees bright text on a darker ground, whatever the site's colours. For a site
    whose text is lighter than its ground on some captchas and darker on others (ink "mixed"),
    each captcha is measured on its own (`text_is_darker`), turned over where its text is darker,
    and shifted so that its ground (its median) sits at -1; what lies beyond the ground on the
    other side from the text (a black line under light text) is cut off there.
    """
    rgb = np.asarray(rgb)
    if rgb.ndim < 3 or rgb.shape[-1] != 3:
        raise ValueError(f"expected (..., height, width, 3) RGB, got {rgb.shape}")
    x = rgb @ _LUMA_OVER_255  # luma / 255, float32
    x += whiteness(rgb) * np.float32(1 / 255.0)  # in place: no more full-size copies than needed
    x -= 1.0
    if ink == "dark":
        np.negative(x, out=x)
    elif ink == "mixed":
        shape = x.shape
        flat = x.reshape(-1, shape[-2] * shape[-1])  # one row per captcha
        for start in range(0, len(flat), 1024):  # np.median copies its input: a slice at a time
            rows = flat[start : start + 1024]
            ground, darker = _ground_and_polarity(rows)
            sign = np.where(darker, np.float32(-1), np.float32(1))
            rows -= ground
            rows *= sign
            rows -= 1.0
            np.clip(rows, -1.0, 1.0, out=rows)
        x = flat.reshape(shape)
    elif ink != "light":
        raise ValueError(f"ink {ink!r}: expected light, dark or mixed")
    return x[..., None]


def _ground_and_polarity(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(N, pixels) of the network's grey scale -> each row's ground (its median) and whether its text is darker, (N, 1) each.

    The ground is most of a captcha's pixels and the text a minority on one side of it, so the text
    pulls the mean away from the median towards its own side: below it for dark text.
    """
    ground = np.median(rows, axis=1, keepdims=True)
    return ground, rows.mean(1, keepdims=True) < ground


def text_is_darker(rgb: np.ndarray) -> np.ndarray:
    """(N, H, W, 3) uint8 -> (N,) bool: whether each captcha's text is darker than its ground, by the rule
    preprocess(ink="mixed") applies to each captcha."""
    x = preprocess(rgb, "light")
    return _ground_and_polarity(x.reshape(len(x), -1))[1][:, 0]


def to_uint8(x: np.ndarray) -> np.ndarray:
    """Inverse of preprocess for display: [-1, 1] -> uint8 grey, channel axis dropped."""
    x = np.asarray(x)
    if x.shape[-1] == 1:
        x = x[..., 0]
    return np.clip((x + 1.0) * 127.5 + 0.5, 0, 255).astype(np.uint8)


def estimate_background(images: np.ndarray) -> np.ndarray:
    """Stripes and lines shared by many captchas of one user, without the characters.

    Characters move from captcha to captcha, so per-pixel statistics keep only what every
    captcha shares. The median finds the lines; elsewhere a low percentile gives the stripe
    colour, because JPEG's chroma blur lets nearby white characters brighten a pixel in
    many captchas (the median shows ghosts where characters usually sit).
    """
    images = np.asarray(images)
    if images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"expected (N, height, width, 3) images, got {images.shape}")
    if len(images) < 3:
        raise InputError(f"need at least 3 captchas to estimate the background, got {len(images)}")
    median = np.median(images, axis=0)
    low = np.percentile(images, 20, axis=0)
    lines = whiteness(median) >= LINE_THRESHOLD
    return np.where(lines[..., None], median, low).round().astype(np.uint8)


def line_mask(background: np.ndarray) -> np.ndarray:
    """Boolean (H, W): the white noise lines of a background."""
    return whiteness(background) >= LINE_THRESHOLD


def save_background(background: np.ndarray, path) -> None:
    """Write a background (mask) PNG atomically; `load_background` reads it back."""
    import io

    buf = io.BytesIO()
    Image.fromarray(background).save(buf, "PNG")
    write_atomic(path, buf.getvalue())


def load_background(path, size: tuple[int, int] | None = None) -> np.ndarray:
    """A background PNG as (H, W, 3) RGB; size (width, height): the captchas' size it must have."""
    from .challenges import read_image

    try:
        return read_image(path, size)[0]
    except ValueError as exc:
        raise ValueError(f"{path}: mask {exc}") from None
