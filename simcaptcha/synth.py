"""Font renderer: labelled synthetic captchas drawn over a user's background, seeded and batched."""

from __future__ import annotations

import io
import os
import sys
from dataclasses import dataclass, field
from functools import lru_cache
from itertools import product
from importlib import resources
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from .preprocess import line_mask, preprocess
from .spec import CaptchaSpec


def default_fonts() -> list[str]:
    """The open fonts shipped with simcaptcha (fonts/ in the source tree, simcaptcha.fonts when installed)."""
    folder = resources.files("simcaptcha.fonts")
    fonts = sorted(str(p) for p in folder.iterdir() if p.name.lower().endswith((".ttf", ".otf")))
    if not fonts:
        raise FileNotFoundError("no fonts shipped with simcaptcha; pass --font")
    return fonts


@dataclass(frozen=True)
class SynthConfig:
    """How synthetic captchas are drawn. Defaults were matched by eye and by ink statistics to HackMIT 2017.

    Sizes and positions are in pixels of a reference_size captcha (HackMIT's 100x50); a captcha
    spec of another size scales them (x by the width, sizes and y by the height). x_centers are
    the centres of a text of len(x_centers) characters; texts of another length are spread evenly
    over the same span (a shorter text of a length range sits in its middle).
    """

    reference_size: tuple[int, int] = (100, 50)  # (width, height) the pixel values below were measured at
    glyph_box: int = 48  # glyphs are drawn centred in a square this size (reference pixels), then rotated
    fonts: tuple[str, ...] = ()  # empty: the shipped fonts
    # Share of characters drawn with one of variety_fonts instead of `fonts`: other shapes of each glyph
    # (a two-storey g, a 1 on a base bar, a dotted 0) than the fonts chosen to fit, so that a reader has
    # met the shape a site's own font gives a character even where the chosen fonts lack it.
    variety: float = 0.0
    variety_fonts: tuple[str, ...] = ()
    font_size: tuple[int, int] = (21, 28)  # pixel size range, inclusive
    rotation: float = 30.0  # degrees, uniform in [-rotation, rotation]
    x_centers: tuple[float, ...] = (17.0, 43.0, 67.0, 88.0)  # mean centre of each character (of a mid-width one)
    x_jitter: float = 7.0  # uniform +- pixels around the mean centre (anchored: around the left edge)
    y_range: tuple[float, float] = (14.0, 40.0)  # vertical centre, uniform (anchored=False)
    # The contest drew text as PIL does, from a left edge and on a baseline, not from a centre: on
    # real captchas the first character's left edge is the same for narrow and wide glyphs (10.9
    # and 10.1 px on average) and its bottom the same for short and tall ones (36.2, 35.9 px).
    # anchored=True does the same: a glyph's left ink edge starts where a mid-width glyph's would
    # (x_centers - mid_width / 2), so wide glyphs reach right and narrow ones sit left, and it
    # stands on a baseline drawn from baseline_range, so short letters sit low, descenders below.
    anchored: bool = True
    mid_width: float = 18.0  # mean ink width of a placed glyph (turned and stretched), px
    baseline_range: tuple[float, float] = (27.5, 46.5)  # baseline row, uniform (anchored=True)
    stroke: tuple[int, int] = (1, 4)  # extra stroke in quarter pixels: the real font is heavier than any open bold
    ink: tuple[int, int] = (235, 255)  # character colour, a near-white grey level range
    jpeg_quality: tuple[int, int] = (45, 55)  # real HackMIT captchas are quality 50, 4:2:0
    width_scale: tuple[float, float] = (0.9, 1.35)  # horizontal stretch: the real glyphs are ~10% wider than the fonts'
    height_scale: tuple[float, float] = (1.0, 1.0)  # vertical stretch of each glyph on its own (sites that vary glyph heights)
    # Glyph shapes no single open font has, fitted to the real captchas' most confused characters:
    char_fonts: tuple[tuple[str, tuple[str, ...]], ...] = (
        ("g", ("GilliusADF", "OpenSans", "Karla", "Cabin")),  # the real g is two-storey
        ("1", ("DejaVuSans", "LiberationSans")),  # the real 1 stands on a base bar (else it reads as z)
    )
    # (char, width range, height range) replacing width_scale for that char
    char_scale: tuple[tuple[str, tuple[float, float], tuple[float, float]], ...] = (
        ("l", (1.0, 1.4), (0.9, 1.05)),  # the real l is a plain thick bar, ~1.2x the stem of the dotted i
        ("i", (1.0, 1.4), (1.0, 1.0)),  # whose stem is as thick
        ("0", (0.9, 1.3), (0.85, 0.95)),  # the real 0 is barely taller than the o (else it reads as o)
    )
    lines_on_top: bool = True  # the contest drew its noise lines after the text: they cross the characters
    # Grey level the lines are redrawn in (None: the background's line colour). The real lines are
    # white: JPEG's half-resolution colour tints them with the stripes', but across a character they
    # stay white, where the tinted colour of the background would cut a dark seam.
    line_ink: int | None = 250
    open_four: float = 0.5  # share of 4s drawn with an open top (as the real font does) instead of from a font
    # Colours, for captchas without a fixed background (simcaptcha.look fits them to a site's): each
    # captcha's ground is one of ground_colours (else random stripes) and all its characters one of
    # ink_colours (else the grey `ink` range). Lists of one length are pairs, measured on one real captcha
    # each, and drawn together: a site's pale text on a dark ground and dark text on a pale one never
    # become pale on pale.
    ground_colours: tuple[tuple[int, int, int], ...] = ()
    ink_colours: tuple[tuple[int, int, int], ...] = ()
    lossless: bool = False  # keep the drawing as it is (a site serving PNG) instead of JPEG-compressing it
    dots: float = 0.0  # mean number of noise dots per captcha, in the ink colour (Poisson), each dot_radius px
    dot_radius: tuple[float, float] = (1.0, 1.5)  # reference pixels
    arcs: float = 0.0  # mean number of thin wavy lines across the text per captcha, in the ink colour (Poisson)
    arc_width: tuple[int, int] = (1, 3)  # their width, reference pixels


@lru_cache(maxsize=None)
def _font(path: str, size: int) -> ImageFont.FreeTypeFont:
    return ImageFont.truetype(path, size)


SUPERSAMPLE = 4  # glyphs are drawn this many times larger, then box-filtered down


# Unbounded: the key space is fonts x sizes x chars x strokes (9,216 glyphs of 2.3 KB with the
# defaults). A bounded LRU smaller than that misses on every ninth glyph drawn, forever.
@lru_cache(maxsize=None)
def _glyph(path: str, size: int, char: str, stroke: int = 0, box_size: int = 48) -> Image.Image:
    """An 'L' coverage image of one character, centred on its ink in a `box_size` square.

    `stroke` emboldens by that many 1/SUPERSAMPLE pixels: drawing large and reducing gives a
    fractional stroke, so heavier letters keep their small gaps (the dot of an i).
    """
    font = _font(path, size * SUPERSAMPLE)
    big = box_size * SUPERSAMPLE
    box = Image.new("L", (big, big), 0)
    draw = ImageDraw.Draw(box)
    l, t, r, b = draw.textbbox((0, 0), char, font=font, stroke_width=stroke)
    xy = ((big - (r - l)) / 2 - l, (big - (b - t)) / 2 - t)
    draw.text(xy, char, font=font, fill=255, stroke_width=stroke, stroke_fill=255)
    return box.reduce(SUPERSAMPLE)


@lru_cache(maxsize=None)
def _baseline_below_centre(path: str, size: int, char: str, stroke: int = 0) -> float:
    """How far (px) the baseline lies below the centre of a `_glyph`'s ink (more for descenders)."""
    font = _font(path, size * SUPERSAMPLE)
    probe = ImageDraw.Draw(Image.new("L", (1, 1)))
    _, top, _, bottom = probe.textbbox((0, 0), char, font=font, anchor="ls", stroke_width=stroke)
    return -(top + bottom) / 2 / SUPERSAMPLE


OPEN_FOUR_SCALE = 0.72  # the drawn 4's height over its font size: a typical sans's cap height


@lru_cache(maxsize=256)
def _open_four(size: int, stroke: int = 0, box_size: int = 48) -> Image.Image:
    """A '4' whose slanted arm stops short of the stem (an open top), drawn as strokes at a font's cap height."""
    big = box_size * SUPERSAMPLE
    h = OPEN_FOUR_SCALE * size * SUPERSAMPLE
    w = 0.75 * h
    width = round(0.19 * h + 2 * stroke)  # a bold stem, emboldened like the font glyphs
    x0, y0 = (big - w) / 2, (big - h) / 2
    box = Image.new("L", (big, big), 0)
    draw = ImageDraw.Draw(box)
    draw.line([(x0 + 0.18 * w, y0), (x0, y0 + 0.66 * h), (x0 + w, y0 + 0.66 * h)], fill=255, width=width, joint="curve")
    draw.line([(x0 + 0.74 * w, y0), (x0 + 0.74 * w, y0 + h)], fill=255, width=width)
    return box.reduce(SUPERSAMPLE)


def _place(glyph: Image.Image, angle: float, sx: float, sy: float) -> Image.Image:
    """Stretch a glyph by (sx, sy) about its centre, then rotate it by `angle` degrees, in one resampling."""
    a = np.deg2rad(angle)
    cos, sin = np.cos(a), np.sin(a)
    c = glyph.size[0] / 2
    # PIL wants the inverse map, output (x, y) -> input: unrotate, then unstretch.
    m = np.array([[cos / sx, -sin / sx], [sin / sy, cos / sy]])
    offset = np.array([c, c]) - m @ np.array([c, c])
    data = (m[0, 0], m[0, 1], offset[0], m[1, 0], m[1, 1], offset[1])
    return glyph.transform(glyph.size, Image.AFFINE, data, resample=Image.BILINEAR)


def striped_background(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """A plain background of 4 random saturated stripes, used when no mask is given."""
    bg = np.zeros((height, width, 3), np.uint8)
    edges = np.linspace(0, width, 5).round().astype(int)
    for i in range(4):
        colour = rng.integers(0, 200, 3)
        colour[rng.integers(0, 3)] = 0  # saturated: one channel off, so it is never near white
        bg[:, edges[i] : edges[i + 1]] = colour
    return bg


class Synthesizer:
    """Renders labelled captchas of a spec. `render_batch(n, seed)` is a pure function of its arguments."""

    def __init__(self, spec: CaptchaSpec, background: np.ndarray | None = None, config: SynthConfig = SynthConfig()):
        self.spec, self.config = spec, config
        ref_w, ref_h = config.reference_size
        self.sx, self.sy = spec.width / ref_w, spec.height / ref_h  # reference pixels -> this spec's pixels
        self.font_size = (max(4, round(config.font_size[0] * self.sy)), max(4, round(config.font_size[1] * self.sy)))
        self.box = max(8, round(config.glyph_box * self.sy))
        self.fonts = list(config.fonts) or default_fonts()
        self.variety_fonts = list(config.variety_fonts) if config.variety > 0 else []
        for f in self.fonts + self.variety_fonts:
            if not Path(f).is_file():
                raise FileNotFoundError(f"{f}: font file not found")
            _font(f, self.font_size[0])  # fail early on a file that is not a font
        if background is not None and background.shape != (spec.height, spec.width, 3):
            raise ValueError(f"background must be {spec.width}x{spec.height} RGB, got {background.shape[1]}x{background.shape[0]}")
        self.background = None if background is None else Image.fromarray(background)
        self.lines = None  # 'L' mask of the background's noise lines, redrawn over the characters
        if background is not None and config.lines_on_top:
            self.lines = Image.fromarray((line_mask(background) * 255).astype(np.uint8))
        self.char_fonts = {}
        for char, names in config.char_fonts:
            chosen = [f for f in self.fonts if any(n.lower() in Path(f).name.lower() for n in names)]
            self.char_fonts[char] = chosen or self.fonts  # other fonts given: draw that char from all of them
        self.char_scale = {char: (sx, sy) for char, sx, sy in config.char_scale}

    def warm_up(self) -> int:
        """Draw every glyph once (they are cached); returns how many. Rendering is fastest afterwards."""
        cfg = self.config
        sizes = range(self.font_size[0], self.font_size[1] + 1)
        strokes = range(cfg.stroke[0], cfg.stroke[1] + 1)
        count = 0
        for size, stroke in product(sizes, strokes):
            _open_four(size, stroke, self.box)
            for font, char in product(dict.fromkeys(self.fonts + self.variety_fonts), self.spec.alphabet):
                _glyph(font, size, char, stroke, self.box)
                if cfg.anchored:
                    _baseline_below_centre(font, size, char, stroke)
                count += 1
        return count

    def random_text(self, rng: np.random.Generator) -> str:
        spec = self.spec
        length = spec.min_length if spec.fixed_length else int(rng.integers(spec.min_length, spec.max_length + 1))
        return "".join(spec.alphabet[i] for i in rng.integers(0, spec.num_classes, length))

    def _dots(self, canvas: Image.Image, rng: np.random.Generator, colour) -> None:
        draw = ImageDraw.Draw(canvas)
        w, h = canvas.size
        for _ in range(int(rng.poisson(self.config.dots))):
            x, y = rng.uniform(0, w), rng.uniform(0, h)
            r = rng.uniform(*self.config.dot_radius) * self.sy
            draw.ellipse((x - r, y - r, x + r, y + r), fill=tuple(colour))

    def _arcs(self, canvas: Image.Image, rng: np.random.Generator, colour) -> None:
        """Thin wavy lines across the text band: a slow sine over a random share of the width."""
        draw = ImageDraw.Draw(canvas)
        w, h = canvas.size
        cfg = self.config
        for _ in range(int(rng.poisson(cfg.arcs))):
            x0 = rng.uniform(0, 0.3 * w)
            x1 = rng.uniform(0.6 * w, w)
            centre = rng.uniform(*cfg.y_range) * self.sy if not cfg.anchored else rng.uniform(0.3 * h, 0.7 * h)
            amplitude, phase = rng.uniform(0.02, 0.15) * h, rng.uniform(0, 2 * np.pi)
            period = rng.uniform(0.5, 1.5) * w
            xs = np.linspace(x0, x1, 24)
            ys = centre + amplitude * np.sin(2 * np.pi * xs / period + phase)
            width = max(1, round(rng.integers(cfg.arc_width[0], cfg.arc_width[1] + 1) * self.sy))
            draw.line(list(zip(xs.tolist(), ys.tolist())), fill=tuple(colour), width=width, joint="curve")

    def mean_centers(self, length: int) -> np.ndarray:
        """Mean x centre (pixels of this spec) of each character of a `length`-character text."""
        centers = np.asarray(self.config.x_centers, float)
        longest = self.spec.max_length
        if longest != len(centers):
            centers = np.linspace(centers[0], centers[-1], longest) if longest > 1 else centers[[0, -1]].mean(keepdims=True)
        if length != longest:  # a shorter text of a length range: evenly spaced about the middle
            step = (centers[-1] - centers[0]) / max(1, longest - 1)
            centers = (centers[0] + centers[-1]) / 2 + step * (np.arange(length) - (length - 1) / 2)
        return centers * self.sx

    def render_jpeg(self, text: str, rng: np.random.Generator) -> bytes:
        """Draw `text` and return the image file's bytes as the site serves them: JPEG, or PNG when lossless."""
        canvas, quality = self.render_image(text, rng)
        out = io.BytesIO()
        if self.config.lossless:
            canvas.save(out, "PNG", compress_level=1)
        else:
            canvas.save(out, "JPEG", quality=quality, subsampling=2)
        return out.getvalue()

    def _colours(self, rng: np.random.Generator) -> tuple[tuple | None, tuple | None]:
        """(ground colour or None, ink colour or None) of one captcha: a measured pair where both lists are pairs."""
        grounds, inks = self.config.ground_colours, self.config.ink_colours
        paired = len(grounds) == len(inks)
        k = int(rng.integers(len(grounds))) if grounds else None
        ground = tuple(int(v) for v in grounds[k]) if grounds else None
        if not inks:
            return ground, None
        j = k if paired else int(rng.integers(len(inks)))
        return ground, tuple(int(v) for v in inks[j])

    def _ground(self, rng: np.random.Generator, colour: tuple | None) -> Image.Image:
        spec = self.spec
        if self.background is not None:
            return self.background.copy()
        if colour is not None:
            return Image.new("RGB", (spec.width, spec.height), colour)
        return Image.fromarray(striped_background(rng, spec.height, spec.width))

    def render_image(self, text: str, rng: np.random.Generator) -> tuple[Image.Image, int]:
        """Draw `text`: the RGB image before compression, and the JPEG quality drawn for it."""
        cfg = self.config
        sx, sy, box = self.sx, self.sy, self.box
        ground_colour, captcha_ink = self._colours(rng)
        canvas = self._ground(rng, ground_colour)
        centers = self.mean_centers(len(text))
        for i, char in enumerate(text):
            fonts = self.char_fonts.get(char, self.fonts)
            if self.variety_fonts and rng.random() < cfg.variety:
                fonts = self.variety_fonts
            font = fonts[rng.integers(len(fonts))]  # per character: more shapes of each glyph
            size = int(rng.integers(self.font_size[0], self.font_size[1] + 1))
            angle = rng.uniform(-cfg.rotation, cfg.rotation)
            stroke = int(rng.integers(cfg.stroke[0], cfg.stroke[1] + 1))
            sx_range, sy_range = self.char_scale.get(char, (cfg.width_scale, cfg.height_scale))
            stretch_x, stretch_y = rng.uniform(*sx_range), rng.uniform(*sy_range)
            open_four = char == "4" and rng.random() < cfg.open_four
            glyph = _open_four(size, stroke, box) if open_four else _glyph(font, size, char, stroke, box)
            glyph = _place(glyph, angle, stretch_x, stretch_y)
            x_shift = rng.uniform(-cfg.x_jitter, cfg.x_jitter) * sx
            if cfg.anchored:
                if open_four:
                    baseline = OPEN_FOUR_SCALE * size / 2  # the stem's foot: half the strokes' height below their centre
                else:
                    baseline = _baseline_below_centre(font, size, char, stroke)
                left = (glyph.getbbox() or (box // 2,))[0]  # the placed glyph's left ink edge
                x = centers[i] - cfg.mid_width * sy / 2 + x_shift - left
                # The glyph turns about its centre: the baseline's point below it moves up by cos(angle).
                cy = rng.uniform(*cfg.baseline_range) * sy - stretch_y * baseline * np.cos(np.deg2rad(angle))
                y = cy - box / 2
            else:
                x = centers[i] + x_shift - box / 2
                y = rng.uniform(*cfg.y_range) * sy - box / 2
            if captcha_ink is None:
                grey = int(rng.integers(cfg.ink[0], cfg.ink[1] + 1))
                canvas.paste((grey, grey, grey), (round(x), round(y)), glyph)
            else:
                canvas.paste(captcha_ink, (round(x), round(y)), glyph)
        if self.lines is not None:
            line_colour = self.background if cfg.line_ink is None else (cfg.line_ink,) * 3
            canvas.paste(line_colour, (0, 0), self.lines)
        if cfg.dots > 0:
            self._dots(canvas, rng, captcha_ink or (cfg.ink[1],) * 3)
        if cfg.arcs > 0:
            self._arcs(canvas, rng, captcha_ink or (cfg.ink[1],) * 3)
        quality = int(rng.integers(cfg.jpeg_quality[0], cfg.jpeg_quality[1] + 1))
        return canvas, quality

    def render_batch(self, n: int, seed) -> tuple[np.ndarray, list[str]]:
        """n captchas as (n, height, width, 3) uint8 RGB and their texts; same seed, same batch."""
        rng = np.random.default_rng(seed)
        images = np.empty((n, self.spec.height, self.spec.width, 3), np.uint8)
        texts = []
        for k in range(n):
            text = self.random_text(rng)
            if self.config.lossless:  # no file format in between: the drawing is the captcha
                images[k] = np.asarray(self.render_image(text, rng)[0])
            else:
                with Image.open(io.BytesIO(self.render_jpeg(text, rng))) as im:
                    images[k] = np.asarray(im.convert("RGB"))
            texts.append(text)
        return images, texts

    def labels(self, texts: list[str]) -> np.ndarray:
        """(N, max_length) class indices, PAD after a shorter text."""
        return np.stack([self.spec.encode(t) for t in texts]) if texts else np.zeros((0, self.spec.max_length), np.int32)

    def save(self, folder) -> None:
        """Write what makes this synthesizer again into a run folder: synth.json (spec, settings, fonts) and,
        where it draws over a fixed background, that background as mask.png."""
        from dataclasses import asdict

        from .files import write_json_atomic
        from .preprocess import save_background

        folder = Path(folder)
        write_json_atomic(folder / "synth.json", {"spec": self.spec.to_dict(), "config": asdict(self.config),
                                                  "fonts": self.fonts, "mask": "mask.png" if self.background else None})
        if self.background is not None:
            save_background(np.asarray(self.background), folder / "mask.png")

    @classmethod
    def load(cls, folder) -> Synthesizer:
        """The synthesizer a run folder's synth.json (and mask.png) describe."""
        from .files import read_json
        from .preprocess import load_background

        folder = Path(folder)
        doc = read_json(folder / "synth.json", what="synthesizer record")
        spec = CaptchaSpec.from_dict(doc.get("spec"))
        fields = {f for f in SynthConfig.__dataclass_fields__}
        config = SynthConfig(**{k: _tuples(v) for k, v in doc.get("config", {}).items() if k in fields})
        background = load_background(folder / doc["mask"], spec.size) if doc.get("mask") else None
        return cls(spec, background, config)


def _tuples(value):
    """JSON lists back to the tuples a frozen config holds."""
    return tuple(_tuples(v) for v in value) if isinstance(value, list) else value


@dataclass
class SyntheticStream:
    """Endless training batches: (preprocessed images, int labels (B, max_length)); batch i depends only on (seed, i)."""

    synthesizer: Synthesizer
    batch_size: int
    seed: int = 0
    start: int = 0
    _step: int = field(init=False, default=0)

    def __iter__(self):
        step = self.start
        while True:
            images, texts = self.synthesizer.render_batch(self.batch_size, (self.seed, step))
            yield preprocess(images, self.synthesizer.spec.ink), self.synthesizer.labels(texts)
            step += 1

    def dataset(self, prefetch: int = 4):
        """A tf.data pipeline that renders in a background thread while the model trains."""
        import tensorflow as tf

        spec = self.synthesizer.spec
        spec = (
            tf.TensorSpec((self.batch_size, spec.height, spec.width, 1), tf.float32),
            tf.TensorSpec((self.batch_size, spec.max_length), tf.int32),
        )
        return tf.data.Dataset.from_generator(lambda: iter(self), output_signature=spec).prefetch(prefetch)


POOL_CHUNK = 1000  # captchas per rendering task: seeds are per chunk, so any number of workers renders the same pool


def _render_chunk(spec: CaptchaSpec, background: np.ndarray | None, config: SynthConfig, n: int, seed) -> tuple[np.ndarray, np.ndarray]:
    """One pool chunk, preprocessed: runs in a worker process (the glyph cache lives on between its chunks)."""
    synth = Synthesizer(spec, background, config)
    images, texts = synth.render_batch(n, seed)
    return preprocess(images, spec.ink), synth.labels(texts)


@dataclass
class SyntheticPool:
    """Synthetic captchas rendered once, then drawn from by a training run (by every stage, in a pipeline).

    On this machine's two cores, rendering a batch in a thread beside training slows each step
    by about as much as the step itself costs (5.5 against 9.5 steps/s), and the default
    pipeline draws some 270,000 synthetic captchas. Rendering fewer, all at once in worker
    processes while nothing else runs, and reusing them, leaves training the cores alone.
    """

    x: np.ndarray  # (N, H, W, 1) preprocessed
    labels: np.ndarray  # (N, max_length) int32, PAD after a shorter text
    refined_by: str | None = None  # the refiner x has been passed through (None: raw synthetic); see refiner.refine_pool

    def batches(self, batch_size: int, seed: int = 0, start: int = 0):
        """Endless (x, labels) batches, each pass over the pool in a new order; batch i depends only on (seed, i)."""
        n = len(self.x)
        if n == 0:
            raise ValueError("the synthetic pool is empty")
        order, order_epoch = None, None
        step = start
        while True:
            first, parts, missing = step * batch_size, [], batch_size
            while missing:
                epoch, offset = divmod(first, n)
                if epoch != order_epoch:
                    order, order_epoch = np.random.default_rng((seed, epoch, 3)).permutation(n), epoch
                take = min(missing, n - offset)
                parts.append(order[offset : offset + take])
                first, missing = first + take, missing - take
            idx = np.concatenate(parts)
            yield self.x[idx], self.labels[idx]
            step += 1


def render_pool(synth: Synthesizer, n: int, seed: int = 0, workers: int | None = None,
                progress=None, chunk: int = POOL_CHUNK) -> SyntheticPool:
    """Render n synthetic captchas in `workers` processes (default: one per core); the same pool for any worker count.

    progress: called with the number of captchas of each finished chunk.
    """
    # (index, size, seed) of each chunk
    chunks = [(k, min(chunk, n - k * chunk), (seed, 888_888_888, k)) for k in range((n + chunk - 1) // chunk)]
    spec, config = synth.spec, synth.config
    background = None if synth.background is None else np.asarray(synth.background)
    x = np.empty((n, spec.height, spec.width, 1), np.float32)
    labels = np.empty((n, spec.max_length), np.int32)

    def store(k, size, result):
        x[k * chunk : k * chunk + size], labels[k * chunk : k * chunk + size] = result
        if progress:
            progress(size)

    workers = min(workers or os.cpu_count() or 1, len(chunks))
    if workers <= 1 or not _spawn_can_start():
        for k, size, chunk_seed in chunks:
            store(k, size, _render_chunk(spec, background, config, size, chunk_seed))
        return SyntheticPool(x, labels)
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed
    from concurrent.futures.process import BrokenProcessPool

    done = set()
    try:
        # spawn, not fork: the parent runs TensorFlow's thread pools, which a forked child must not inherit.
        with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
            futures = {pool.submit(_render_chunk, spec, background, config, size, chunk_seed): (k, size, chunk_seed)
                       for k, size, chunk_seed in chunks}
            for future in as_completed(futures):
                store(*futures[future][:2], future.result())
                done.add(futures[future])
    except BrokenProcessPool:
        # A main script without `if __name__ == "__main__":` starts its work again in each worker,
        # which then fails; the chunks left are rendered here instead (each from its own seed, so
        # the pool is the same).
        print("synthetic pool: worker processes failed to start; rendering in this process", file=sys.stderr)
        for k, size, chunk_seed in chunks:
            if (k, size, chunk_seed) not in done:
                store(k, size, _render_chunk(spec, background, config, size, chunk_seed))
    return SyntheticPool(x, labels)


def _spawn_can_start() -> bool:
    """A spawned worker first re-runs the parent's main script; one read from stdin cannot be re-run."""
    main_file = getattr(sys.modules.get("__main__"), "__file__", None)
    return main_file is None or Path(main_file).is_file()


def render_pool_with_bar(synth: Synthesizer, n: int, seed: int = 0, show: bool = True) -> SyntheticPool:
    """render_pool behind a progress bar (a pool of 64,000 takes about a minute on two cores)."""
    from tqdm import tqdm

    with tqdm(total=n, desc="synth pool", unit="captcha", disable=not show, leave=False, dynamic_ncols=True) as bar:
        return render_pool(synth, n, seed=seed, progress=bar.update)


def training_batches(synth: Synthesizer, batch_size: int, seed: int, start: int = 0,
                     pool: SyntheticPool | None = None, pool_size: int = 0, progress: bool = True):
    """The synthetic batches of a training run from batch `start` on: from `pool` if given, else from a
    pool of `pool_size` rendered here by `synth`'s background and config (the same one again on resume),
    else rendered in a background thread.
    """
    if pool is None and pool_size:
        pool = render_pool_with_bar(synth, pool_size, seed=seed, show=progress)
    if pool is not None:
        return pool.batches(batch_size, seed=seed, start=start)
    return iter(SyntheticStream(synth, batch_size, seed=seed, start=start).dataset())


def write_dataset(synth: Synthesizer, n: int, out_dir: str | os.PathLike, seed: int, progress=None) -> dict:
    """Write n captchas as OUT/<index>.jpg plus OUT/labels.json; returns the labels."""
    from .files import write_atomic, write_json_atomic

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    labels = {}
    width = max(6, len(str(n - 1)))
    for k in range(n):
        text = synth.random_text(rng)
        name = f"{k:0{width}d}.{'png' if synth.config.lossless else 'jpg'}"
        write_atomic(out / name, synth.render_jpeg(text, rng))
        labels[name] = text
        if progress:
            progress(1)
    write_json_atomic(out / "labels.json", labels)
    return labels
