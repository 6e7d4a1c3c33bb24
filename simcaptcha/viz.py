"""Contact sheets: rows of captchas (RGB or preprocessed) tiled into one PNG for a person to compare."""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw

from .files import write_atomic
from .preprocess import preprocess, to_uint8


def as_rgb(images: np.ndarray) -> np.ndarray:
    """uint8 RGB stays; float [-1, 1] single-channel becomes grey RGB."""
    images = np.asarray(images)
    if images.dtype != np.uint8:
        images = to_uint8(images)
    if images.ndim == 3:
        images = np.repeat(images[..., None], 3, axis=-1)
    return images


def contact_sheet(rows: list[tuple[str, np.ndarray]], columns: int = 8, scale: int = 2) -> Image.Image:
    """rows: (title, images). Each titled block is laid out `columns` wide, one block under another."""
    label_w, pad = 90, 2
    blocks = []
    for title, images in rows:
        images = as_rgb(images)
        n_rows = max(1, -(-len(images) // columns))
        h, w = images.shape[1:3] if len(images) else (8, 8)
        block = Image.new("RGB", (label_w + columns * (w + pad), n_rows * (h + pad)), (32, 32, 32))
        ImageDraw.Draw(block).text((4, 4), title, fill=(255, 255, 255))
        for k, im in enumerate(images):
            block.paste(Image.fromarray(im), (label_w + (k % columns) * (w + pad), (k // columns) * (h + pad)))
        blocks.append(block)
    width = max(b.width for b in blocks)
    sheet = Image.new("RGB", (width, sum(b.height + 6 for b in blocks)), (0, 0, 0))
    y = 0
    for b in blocks:
        sheet.paste(b, (0, y))
        y += b.height + 6
    return sheet.resize((sheet.width * scale, sheet.height * scale), Image.NEAREST)


def misread_sheet(misreads: list[tuple[str, str, np.ndarray]], scale: int = 3, ink: str = "light") -> Image.Image:
    """misreads: (true text, answer, uint8 RGB captcha). One row each: the captcha as served and as the network sees it."""
    served = np.stack([rgb for _, _, rgb in misreads])
    seen = as_rgb(preprocess(served, ink)[..., 0])
    rows = [(f"{truth} -> {answer}", np.stack([served[k], seen[k]])) for k, (truth, answer, _) in enumerate(misreads)]
    return contact_sheet(rows, columns=2, scale=scale)


def save_png(image: Image.Image, path) -> None:
    import io

    buf = io.BytesIO()
    image.save(buf, "PNG")
    write_atomic(path, buf.getvalue())
