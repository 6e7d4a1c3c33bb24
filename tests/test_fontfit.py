"""Fonts chosen by what their readers read: the reading score, and the font the captchas were drawn with."""

from dataclasses import replace
from pathlib import Path

import numpy as np

from simcaptcha.fontfit import fonts_by_reads, reading_score
from simcaptcha.look import catalog_fonts
from simcaptcha.preprocess import preprocess
from simcaptcha.spec import CaptchaSpec
from simcaptcha.synth import SynthConfig, Synthesizer, default_fonts


def test_reading_score_prefers_sure_and_even_reads():
    classes = 4
    sure_even = [np.eye(classes)[[0, 1, 2, 3]], np.eye(classes)[[3, 2, 1, 0]]]
    assert np.isclose(reading_score(sure_even), 0.0)
    sure_skewed = [np.eye(classes)[[0, 0, 1, 2]], np.eye(classes)[[0, 0, 3, 0]]]  # a `0` read for other glyphs
    unsure_even = [np.full((4, classes), 0.25)]  # even, but knows nothing
    half_sure = [0.5 * np.eye(classes)[[0, 1, 2, 3]] + 0.125]
    assert 0.0 < reading_score(half_sure) < reading_score(unsure_even)
    assert 0.0 < reading_score(sure_skewed) < np.log(classes)
    assert np.isclose(reading_score(unsure_even), np.log(classes))
    assert np.isclose(reading_score([np.zeros((0, classes))]), 2 * np.log(classes))  # nothing read: the worst score
    assert reading_score([]) == float("inf")  # no captchas read: never chosen over a font that read some


def test_fonts_by_reads_keeps_the_font_the_captchas_were_drawn_with():
    spec = CaptchaSpec.from_flags(40, 120, "4", "a-z", "dark")
    drawn_with = default_fonts()[1]
    others = [f for f in catalog_fonts() if Path(f).name == "FreeMono.ttf"]  # thin and monospaced: another glyph shape
    cfg = SynthConfig(reference_size=(120, 40), glyph_box=64, font_size=(24, 26), anchored=False, y_range=(19.0, 21.0),
                      x_centers=(20.0, 46.0, 72.0, 98.0), rotation=5.0, ground_colours=((240, 240, 240),),
                      ink_colours=((40, 40, 40),), lossless=True, char_fonts=(), char_scale=(), open_four=0.0)
    real, _ = Synthesizer(spec, None, replace(cfg, fonts=(drawn_with,))).render_batch(400, seed=9)
    lines = []
    chosen, scores = fonts_by_reads(preprocess(real, "dark"), spec, cfg, [*others, drawn_with], keep=1, steps=250,
                                    width=0.5, pool=2000, n_real=400, head="slots", log=lines.append)
    assert len(others) == 1 and chosen == (drawn_with,)
    assert list(scores) == [Path(drawn_with).name, "FreeMono.ttf"]  # best first
    assert scores["FreeMono.ttf"]["score"] > scores[Path(drawn_with).name]["score"] + 0.1
    assert len(lines) == 3 and Path(drawn_with).name in lines[-1]
