"""The look of a site's captchas, estimated from its unlabelled images, and a synthesizer fitted to it.

Nothing here knows any site. From real captchas alone it measures:

- whether they share one fixed background (a site's mask, as HackMIT's) or each has its own;
- which pixels are ink: those far from the background (the shared one, or each captcha's own
  median colour); whether the ink is lighter or darker than the ground (the spec's `ink`), or
  lighter on some captchas and darker on others ("mixed");
- the colours of grounds and of ink, one pair per captcha;
- where the text sits: the band of rows and the span of columns the ink covers;
- whether the images were JPEG-compressed.

`fit_synth_config` turns that into a SynthConfig: font sizes are chosen by rendering probes
and matching their ink band to the real one, the character centres spread over the real
span, colours drawn from the real ones. Every estimate is saved (look.json) and printed.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace

import numpy as np

from .domaingap import average_ranks, gap_score
from .preprocess import estimate_background, preprocess, text_is_darker
from .spec import CaptchaSpec
from .synth import SynthConfig, Synthesizer, default_fonts

INK_DISTANCE = 60  # a pixel this far (max over R, G, B) from its background is ink
FIXED_MARGIN = 0.15  # a shared background explaining this much more of the pixels than each captcha's own colour is a fixed one
# How far fitted glyph shapes range about the fit: width stretch as multiples of the fitted one, height
# stretch (font sizes are then fitted so the band still matches), and the heaviest extra stroke in quarter
# pixels at 60 px of height (scaled with the captcha's height).
SHAPE_RANGE = {"width": (0.55, 1.3), "height": (0.7, 1.5), "stroke": 10}
BAND_ROW_SHARE = 0.06  # a row (column) is part of the text where at least this share of its pixels is ink: specks and thin lines are not
LOOK_SAMPLE = 2000  # captchas the look is measured on: the statistics settle long before
# Text darker than its ground on at least this share of the captchas and lighter on at least as many: "mixed" ink.
MIXED_SHARE = 0.1


@dataclass(frozen=True)
class Look:
    ink: str  # "light", "dark" (ink lighter or darker than the ground) or "mixed" (either, per captcha)
    fixed_background: bool  # one background shared by every captcha (then drawn from a mask)
    background_share: float  # share of pixels the shared background explains, mean over captchas
    own_share: float  # share of pixels each captcha's own median colour explains
    ink_share: float  # share of pixels that are ink
    ground_colours: tuple[tuple[int, int, int], ...]  # one per measured captcha (its median colour)
    ink_colours: tuple[tuple[int, int, int], ...]  # one per measured captcha (its ink's median colour), in the same order
    band: tuple[float, float, float, float]  # ink band height, px: 10th, 50th, 90th percentile; and its mean centre row
    span: tuple[float, float]  # mean first and last ink column
    jpeg: bool  # the real captchas were JPEG files
    columns: tuple[float, ...]  # share of ink in each column, mean over captchas (where characters usually stand)
    specks: float  # ink pixels per captcha in specks: small blobs with no other ink near them (noise dots)
    thin_runs: float  # vertical runs of ink at most 3 px high per captcha (thin lines across, and flat strokes)
    # Glyph height: quartiles of each column's ink extent (first to last ink row), thin lines and dots
    # opened away first; sizes of single glyphs, where the band is the union of all of them. (0, 0, 0): not measured.
    glyph_height: tuple[float, float, float] = (0.0, 0.0, 0.0)
    dark_share: float = 0.0  # share of captchas whose text is darker than their ground (preprocess.text_is_darker)

    def summary(self) -> str:
        kind = "a fixed background (mask)" if self.fixed_background else "a background of its own per captcha"
        ink = f"{self.ink} ink ({self.dark_share:.0%} of captchas with text darker than the ground)" if self.ink == "mixed" else f"{self.ink} ink"
        return (f"{ink} over {kind} (it explains {self.background_share:.0%} of pixels, each captcha's own colour "
                f"{self.own_share:.0%}); ink {self.ink_share:.1%} of pixels; "
                f"text band {self.band[0]:.0f}-{self.band[2]:.0f} px high around row {self.band[3]:.0f}, "
                f"columns {self.span[0]:.0f}-{self.span[1]:.0f}; glyphs {self.glyph_height[0]:.0f}-{self.glyph_height[2]:.0f} px high "
                f"(quartiles); {self.specks:.0f} speck pixels per captcha; "
                f"{'JPEG' if self.jpeg else 'lossless'} images")

    def to_dict(self) -> dict:
        return asdict(self)


def own_grounds(images: np.ndarray) -> np.ndarray:
    """(N, 1, 1, 3): each captcha's median colour, its ground where it has one of its own."""
    return np.median(images.reshape(len(images), -1, 3), axis=1).astype(np.uint8)[:, None, None, :]


def probe_ink(synth: Synthesizer, n: int, seed) -> np.ndarray:
    """(n, H, W) ink of `synth`'s captchas, measured against their own grounds as estimate_look does."""
    images, _ = synth.render_batch(n, seed)
    return _ink_masks(images, own_grounds(images))


def _ink_masks(images: np.ndarray, grounds: np.ndarray) -> np.ndarray:
    """(N, H, W) bool: pixels at least INK_DISTANCE from their ground (N, H, W, 3) or (N, 1, 1, 3)."""
    return np.abs(images.astype(np.int16) - grounds.astype(np.int16)).max(-1) >= INK_DISTANCE


def speck_pixels(ink: np.ndarray, radius: int = 3, most: int = 9) -> np.ndarray:
    """Per captcha: ink pixels with at most `most` ink pixels in the (2 radius + 1)^2 square around them (specks)."""
    n, h, w = ink.shape
    padded = np.pad(ink.astype(np.int32), ((0, 0), (radius + 1, radius), (radius + 1, radius)))
    table = padded.cumsum(1).cumsum(2)  # summed-area table: any window's ink count in four lookups
    k = 2 * radius + 1
    counts = table[:, k:, k:] - table[:, :-k, k:] - table[:, k:, :-k] + table[:, :-k, :-k]
    return (ink & (counts[:, :h, :w] <= most)).sum((1, 2))


def thin_runs(ink: np.ndarray) -> np.ndarray:
    """Per captcha: columns' runs of ink 1-3 px high (a thin line across the text makes one in every column it crosses)."""
    p = np.pad(ink, ((0, 0), (1, 4), (0, 0)))
    here = [p[:, 1 + k : p.shape[1] - 3 + k] for k in range(4)]  # ink at y, y+1, y+2, y+3
    start = here[0] & ~p[:, :-4]
    short = start & (~here[1] | (here[1] & ~here[2]) | (here[1] & here[2] & ~here[3]))
    return short.sum((1, 2))


def _opened(ink: np.ndarray, radius: int) -> np.ndarray:
    """Morphological opening by a (2 radius + 1) square: strokes stay, lines and dots thinner than it go."""
    def spread(mask, take):  # min (erode) or max (dilate) over the square, rows then columns
        for axis in (1, 2):
            p = np.pad(mask, [(0, 0)] + [(radius, radius) if a == axis else (0, 0) for a in (1, 2)], constant_values=take == np.min)
            n = mask.shape[axis]
            parts = [np.take(p, range(k, k + n), axis=axis) for k in range(2 * radius + 1)]
            mask = take(np.stack(parts), axis=0)
        return mask
    return spread(spread(ink, np.min), np.max)


def glyph_heights(ink: np.ndarray) -> np.ndarray:
    """(25th, 50th, 75th percentile) of the ink extent of every column holding ink once thin lines and dots are
    opened away (the opening scales with the captcha's height); zeros where no column holds any."""
    opened = _opened(ink, max(1, round(ink.shape[1] / 60)))
    h = ink.shape[1]
    has = opened.any(1)  # (N, W)
    top = opened.argmax(1)
    bottom = h - 1 - opened[:, ::-1, :].argmax(1)
    extent = (bottom - top + 1)[has]
    if not len(extent):
        return np.zeros(3)
    return np.percentile(extent, [25, 50, 75])


def _band_and_span(ink: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per captcha: first and last row and column that hold ink (rows/columns with at least 2% ink, to ignore specks)."""
    rows, cols = ink.mean(2) >= BAND_ROW_SHARE, ink.mean(1) >= BAND_ROW_SHARE
    n, h = rows.shape
    w = cols.shape[1]
    top = np.where(rows.any(1), rows.argmax(1), 0)
    bottom = np.where(rows.any(1), h - 1 - rows[:, ::-1].argmax(1), h - 1)
    left = np.where(cols.any(1), cols.argmax(1), 0)
    right = np.where(cols.any(1), w - 1 - cols[:, ::-1].argmax(1), w - 1)
    return top, bottom, left, right


def estimate_look(images: np.ndarray, jpeg: bool = False, sample: int = LOOK_SAMPLE, seed: int = 0) -> Look:
    """Measure the look of (N, H, W, 3) uint8 real captchas (see the module docstring)."""
    images = np.asarray(images)
    if len(images) > sample:
        images = images[np.random.default_rng(seed).choice(len(images), sample, replace=False)]
    shared = estimate_background(images[: min(len(images), 3000)])
    near_shared = np.abs(images.astype(np.int16) - shared.astype(np.int16)).max(-1) < INK_DISTANCE // 2
    background_share = float(near_shared.mean())
    own = own_grounds(images)
    near_own = np.abs(images.astype(np.int16) - own.astype(np.int16)).max(-1) < INK_DISTANCE // 2
    own_share = float(near_own.mean())
    fixed = background_share >= own_share + FIXED_MARGIN
    grounds = np.broadcast_to(shared, images.shape) if fixed else own
    ink = _ink_masks(images, grounds)
    luma = images.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)
    ground_luma = np.broadcast_to(grounds, images.shape).astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)
    darker = float(np.median((luma - ground_luma)[ink])) < 0 if ink.any() else False
    dark_share = float(text_is_darker(images).mean())
    mixed = MIXED_SHARE <= dark_share <= 1 - MIXED_SHARE
    ink_colours = []
    for k in range(len(images)):
        pixels = images[k][ink[k]]
        ink_colours.append(tuple(int(v) for v in np.median(pixels, 0)) if len(pixels) else tuple(int(v) for v in own[k, 0, 0]))
    top, bottom, left, right = _band_and_span(ink)
    height = bottom - top + 1
    return Look(
        ink="mixed" if mixed else "dark" if darker else "light",
        fixed_background=fixed,
        background_share=round(background_share, 4),
        own_share=round(own_share, 4),
        ink_share=round(float(ink.mean()), 4),
        ground_colours=tuple(tuple(int(v) for v in c) for c in own[:, 0, 0]),
        ink_colours=tuple(ink_colours),
        band=(float(np.percentile(height, 10)), float(np.median(height)), float(np.percentile(height, 90)),
              float(np.mean((top + bottom) / 2))),
        span=(float(left.mean()), float(right.mean())),
        jpeg=bool(jpeg),
        columns=tuple(round(float(v), 5) for v in ink.mean((0, 1))),
        specks=round(float(speck_pixels(ink).mean()), 2),
        thin_runs=round(float(thin_runs(ink).mean()), 2),
        glyph_height=tuple(round(float(v), 2) for v in glyph_heights(ink)),
        dark_share=round(dark_share, 4),
    )


def synthetic_band(synth: Synthesizer, n: int = 24, seed: int = 0) -> tuple[float, float, float]:
    """The ink band height (10th, 50th, 90th percentile, px) of `synth`'s captchas, measured as estimate_look does."""
    if synth.background is not None:
        images, _ = synth.render_batch(n, seed)
        ink = _ink_masks(images, np.broadcast_to(np.asarray(synth.background), images.shape))
    else:
        ink = probe_ink(synth, n, seed)
    top, bottom, _, _ = _band_and_span(ink)
    height = bottom - top + 1
    return float(np.percentile(height, 10)), float(np.median(height)), float(np.percentile(height, 90))


def fit_synth_config(look: Look, spec: CaptchaSpec, base: SynthConfig = SynthConfig(), log=print) -> SynthConfig:
    """A SynthConfig for captchas of this look: sizes in the spec's own pixels, the text placed where the real
    text is, font sizes chosen so the synthetic ink band matches the real one, the real grounds and inks."""
    w, h = spec.width, spec.height
    left, right = look.span
    length = spec.max_length
    pitch = max(1.0, (right - left) / length)  # columns per character
    centers = tuple(float(left + pitch * (i + 0.5)) for i in range(length))
    top_row = look.band[3] - look.band[1] / 2
    cfg = replace(
        base,
        reference_size=(w, h),
        glyph_box=int(2 * h),
        x_centers=centers,
        x_jitter=round(0.15 * pitch, 2),
        mid_width=round(0.8 * pitch, 2),
        anchored=False,  # centred on the band: the real text's baseline is not known
        y_range=(float(max(0, look.band[3] - 0.1 * look.band[1])), float(min(h, look.band[3] + 0.1 * look.band[1]))),
        ink_colours=look.ink_colours if not look.fixed_background else (),
        ground_colours=look.ground_colours if not look.fixed_background else (),
        jpeg_quality=base.jpeg_quality if look.jpeg else (100, 100),
        lossless=not look.jpeg,
        lines_on_top=look.fixed_background and base.lines_on_top,
        char_fonts=(), char_scale=(), open_four=0.0,  # HackMIT's glyph fixes: not for other sites
        width_scale=(0.85, 1.15), stroke=(0, 2),  # HackMIT's heavy, wide glyphs: not for other sites
    )
    # Noise dots: as many as leave the real captchas' speck pixels (measured the same way on a probe).
    if look.specks > 0:
        probe = Synthesizer(spec, None, replace(cfg, dots=10.0, font_size=(4, 4)))
        per_dot = float(speck_pixels(probe_ink(probe, 16, 77)).mean()) / 10.0
        cfg = replace(cfg, dots=round(look.specks / per_dot, 2) if per_dot > 0 else 0.0)
    # Thin lines across the text: as many as explain the real captchas' thin runs beyond what the glyphs make.
    runs = {}
    for arcs in (0.0, 1.0):
        probe = Synthesizer(spec, None, replace(cfg, arcs=arcs, dots=0.0))
        runs[arcs] = float(thin_runs(probe_ink(probe, 24, 53)).mean())
    per_arc = runs[1.0] - runs[0.0]
    excess = look.thin_runs - runs[0.0] - cfg.dots * 0.5  # a dot's edge rows count as a run or two
    cfg = replace(cfg, arcs=round(float(np.clip(excess / per_arc, 0.0, 3.0)), 2) if per_arc > 0 else 0.0)
    cfg = _fit_band_sizes(look, spec, cfg, top_row)
    # Glyph width: the horizontal stretch whose ink share matches the real one (condensed or wide lettering).
    shares = {}
    for stretch in np.arange(0.45, 1.31, 0.085):
        probe = Synthesizer(spec, None, replace(cfg, width_scale=(0.9 * stretch, 1.1 * stretch)))
        shares[float(stretch)] = float(probe_ink(probe, 12, 31).mean())
    stretch = min(shares, key=lambda v: abs(shares[v] - look.ink_share))
    # The fit gets the mean shape; the real glyphs' own shapes (a font no one has, warped per glyph) lie around
    # it. Glyphs drawn over a wide range of widths, heights and weights about the fit teach a reader shapes
    # it then finds in the real captchas: on the `captcha` style a synthetic-only reader read 58.9% of real
    # characters with these ranges against 29.5% with the fit alone (docs/results.md).
    w_lo, w_hi = SHAPE_RANGE["width"]
    h_lo, h_hi = SHAPE_RANGE["height"]
    cfg = replace(cfg, width_scale=(round(w_lo * stretch, 3), round(w_hi * stretch, 3)),
                  height_scale=(h_lo, h_hi),
                  stroke=(0, max(1, round(SHAPE_RANGE["stroke"] * h / 60))))
    cfg = _fit_band_sizes(look, spec, cfg, top_row)  # the tallest of the range must not widen the band: sizes again
    # Horizontal jitter: the one whose mean ink per column is closest to the real one (peaks at fixed places, or spread).
    real_profile = np.asarray(look.columns) / max(sum(look.columns), 1e-9)
    distance = {}
    for share in (0.05, 0.15, 0.25, 0.35, 0.5, 0.7):
        probe = Synthesizer(spec, None, replace(cfg, x_jitter=round(share * pitch, 2)))
        profile = probe_ink(probe, 48, 71).mean((0, 1))
        distance[share] = float(np.abs(profile / max(profile.sum(), 1e-9) - real_profile).sum())
    cfg = replace(cfg, x_jitter=round(min(distance, key=distance.get) * pitch, 2))
    log(f"fitted synthesizer: font sizes {cfg.font_size[0]}-{cfg.font_size[1]} px, stretched {cfg.width_scale[0]:.2f}-"
        f"{cfg.width_scale[1]:.2f} wide and {cfg.height_scale[0]:.2f}-{cfg.height_scale[1]:.2f} high, stroke +{cfg.stroke[0]}-{cfg.stroke[1]}/4 px, characters centred at columns "
        f"{', '.join(f'{c:.0f}' for c in centers)}, rows {cfg.y_range[0]:.0f}-{cfg.y_range[1]:.0f}, moved up to {cfg.x_jitter:g} px sideways, {cfg.dots:g} noise dots and {cfg.arcs:g} lines per captcha; "
        f"{len(cfg.ink_colours)} ink and ground colours from the real captchas")
    return cfg


def _fit_band_sizes(look: Look, spec: CaptchaSpec, cfg: SynthConfig, top_row: float) -> SynthConfig:
    """Font sizes whose ink band spans the real one (probes at a few sizes, upright)."""
    h = spec.height
    heights = {}
    for size in range(max(6, int(0.2 * h)), int(1.2 * h) + 1, max(1, h // 20)):
        probe = Synthesizer(spec, None, replace(cfg, font_size=(size, size), rotation=0.0))
        heights[size] = synthetic_band(probe, n=12, seed=size)[1]
    sizes = sorted(heights)

    def size_for(band_height: float) -> int:
        return min(sizes, key=lambda s: abs(heights[s] - band_height))

    lo, hi = size_for(look.band[0]), size_for(look.band[2])
    return replace(cfg, font_size=(min(lo, hi), max(lo, hi)), y_range=(top_row + 0.45 * look.band[1], top_row + 0.55 * look.band[1]))


def catalog_fonts() -> list[str]:
    """The shipped fonts and the wider catalog (regular, condensed, mono, serif, light: fonts/catalog)."""
    from importlib import resources

    folder = resources.files("simcaptcha.fonts.catalog")
    catalog = sorted(str(p) for p in folder.iterdir() if p.name.lower().endswith((".ttf", ".otf")))
    return default_fonts() + catalog


def mean_ranks(scores: np.ndarray) -> np.ndarray:
    """Each row's rank (0: lowest score) in every column of `scores` (items x judges), averaged over the
    columns; tied scores share their mean rank."""
    return np.mean([average_ranks(column) for column in scores.T], axis=0)


def choose_fonts(real_x: np.ndarray, spec: CaptchaSpec, cfg: SynthConfig, fonts: list[str], background=None,
                 n: int = 600, steps: int = 150, keep: int = 3, critics: int = 3, seed: int = 0,
                 log=print) -> tuple[tuple[str, ...], dict]:
    """The fonts whose synthetic captchas fresh critics find hardest to tell from the real ones.

    For each font, `n` captchas drawn with it alone are scored by `critics` fresh critics (seeds seed,
    seed + 1, ...; domaingap's ROC AUC, 0.5: indistinguishable) against real preprocessed captchas
    `real_x`. Each critic ranks the fonts, and the `keep` fonts of the best mean rank are kept: one
    critic's AUCs move by up to 0.15 with its seed, more than the fonts differ, and a critic that
    learns more slowly spreads its AUCs wider, so ranks average where AUCs do not (docs/results.md,
    7 December). Returns (chosen fonts, {font file name: {"auc": mean AUC,
    "rank": mean rank}}), best first.
    """
    from pathlib import Path

    real = real_x[np.random.default_rng((seed, 5)).permutation(len(real_x))[:n]]
    aucs = np.zeros((len(fonts), critics))
    for k, font in enumerate(fonts):
        synth = Synthesizer(spec, background, replace(cfg, fonts=(font,), char_fonts=()))
        images, _ = synth.render_batch(n, (seed, 4242, k))
        synthetic = preprocess(images, spec.ink)
        aucs[k] = [gap_score(real, synthetic, steps=steps, seed=seed + c, critics=1) for c in range(critics)]
    ranks = mean_ranks(aucs)
    order = sorted(range(len(fonts)), key=lambda k: (ranks[k], aucs[k].mean()))
    chosen = tuple(fonts[k] for k in order[:keep])
    named = {Path(fonts[k]).name: {"auc": round(float(aucs[k].mean()), 4), "rank": round(float(ranks[k]), 2)} for k in order}
    log(f"fonts by fit (mean rank of {critics} critics, and their mean ROC AUC; lower fits better): "
        + ", ".join(f"{name} {v['rank']:.1f} ({v['auc']:.3f})" for name, v in named.items()))
    log(f"fonts the critics keep ({keep}): " + ", ".join(Path(f).name for f in chosen))
    return chosen, named
