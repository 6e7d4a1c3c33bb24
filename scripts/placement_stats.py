"""Where characters sit on real captchas and on synthetic ones, side by side (no label used).

Real captchas are read by a classifier (the shipped one by default); only those it reads with
high confidence are measured, and its reading says which character stands where. For the first
character: its left ink edge by glyph width (placement from a left edge keeps it the same for
narrow and wide glyphs; centred placement moves wide ones left), and its top and bottom rows by
glyph height (glyphs on a baseline share a bottom row, descenders go below). For the last one:
its right edge by width. Then the ink per 5-column band over the whole captcha.

    python scripts/placement_stats.py ../shared/data/hackmit/challenges/challenge-{0..5} --mask runs/x/mask.png
"""

import argparse
import os

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from simcaptcha.preprocess import line_mask, load_background, whiteness  # noqa: E402
from simcaptcha.synth import SynthConfig, Synthesizer  # noqa: E402

WIDTHS = {"narrow": "ijl1", "mid": "aceosxz", "wide": "mw"}
HEIGHTS = {"short": "acemnorsuvwxz", "tall": "bdfhklt", "digit": "0123456789", "descender": "gjpqy"}
INK = 0.7  # whiteness (0-1) a character pixel reaches


def placement(images: np.ndarray, texts: list[str], lines: np.ndarray) -> tuple[dict, np.ndarray]:
    """{measure: (mean, sd)} and the mean ink per 5-column band."""
    ink = (whiteness(images) / 255.0 > INK) & ~lines
    columns = ink.sum(1) >= 2
    left = np.argmax(columns, 1)
    right = columns.shape[1] - 1 - np.argmax(columns[:, ::-1], 1)
    first = np.array([t[0] for t in texts])
    last = np.array([t[-1] for t in texts])
    out = {}
    for group, chars in WIDTHS.items():
        a, b = np.isin(first, list(chars)), np.isin(last, list(chars))
        out[f"first char's left edge, {group}"] = (left[a].mean(), left[a].std())
        out[f"last char's right edge, {group}"] = (right[b].mean(), right[b].std())
    top, bottom = np.full(len(images), np.nan), np.full(len(images), np.nan)
    for n in range(len(images)):  # the 7 columns from the left edge hold the first character only
        rows = np.nonzero(ink[n, :, left[n] : left[n] + 7].any(1))[0]
        if len(rows):
            top[n], bottom[n] = rows[0], rows[-1]
    for group, chars in HEIGHTS.items():
        a = np.isin(first, list(chars))
        out[f"first char's top row, {group}"] = (np.nanmean(top[a]), np.nanstd(top[a]))
        out[f"first char's bottom row, {group}"] = (np.nanmean(bottom[a]), np.nanstd(bottom[a]))
    bands = ink.sum(1).mean(0)
    return out, bands.reshape(-1, 5).sum(1)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("challenges", nargs="+", help="real challenge files or folders (unlabelled)")
    parser.add_argument("--mask", required=True, help="the user's background (simcaptcha mask)")
    parser.add_argument("--model", default=None, help="classifier that reads the real captchas (default: shipped)")
    parser.add_argument("--min-confidence", type=float, default=0.95, help="measure real captchas read at least this sure")
    parser.add_argument("-n", type=int, default=5000, help="synthetic captchas to measure")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--centred", action="store_true", help="synthetic glyphs placed by their centre (anchored=False)")
    args = parser.parse_args()

    from simcaptcha.challenges import load_captchas
    from simcaptcha.solver import Solver, solve_loaded

    solver = Solver.load(args.model)
    background = load_background(args.mask, solver.spec.size)
    lines = line_mask(background)
    loaded = load_captchas(args.challenges)
    image_of = {c.name: c.image for c in loaded.captchas}
    solved = solve_loaded(loaded, solver).solutions  # as `simcaptcha solve` reads them
    sure = [s for s in solved if s.confidence >= args.min_confidence]
    real = np.stack([image_of[s.name] for s in sure])
    real_stats, real_bands = placement(real, [s.text for s in sure], lines)
    synth = Synthesizer(solver.spec, background, SynthConfig(anchored=not args.centred))
    images, synth_texts = synth.render_batch(args.n, seed=args.seed)
    synth_stats, synth_bands = placement(images, synth_texts, lines)

    print(f"real: {len(sure)} of {len(solved)} captchas read with confidence >= {args.min_confidence}; synthetic: {args.n}")
    print(f"{'pixels (mean ± sd)':40s} {'real':>13s} {'synthetic':>13s}")
    for key, (mean, sd) in real_stats.items():
        s_mean, s_sd = synth_stats[key]
        print(f"{key:40s} {mean:6.1f} ± {sd:4.1f} {s_mean:6.1f} ± {s_sd:4.1f}")
    print("ink per 5-column band, real:     ", " ".join(f"{v:3.0f}" for v in real_bands))
    print("ink per 5-column band, synthetic:", " ".join(f"{v:3.0f}" for v in synth_bands))


if __name__ == "__main__":
    main()
