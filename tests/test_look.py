"""The look estimate and the synthesizer fitted to it, on captchas whose look is known."""

from pathlib import Path

import numpy as np

from simcaptcha.look import choose_fonts, estimate_look, fit_synth_config, mean_ranks, synthetic_band
from simcaptcha.preprocess import preprocess, text_is_darker
from simcaptcha.spec import CaptchaSpec
from simcaptcha.synth import SynthConfig, Synthesizer, default_fonts

DARK_ON_LIGHT = SynthConfig(reference_size=(160, 60), glyph_box=100, font_size=(34, 40), anchored=False, y_range=(28.0, 32.0),
                            x_centers=(25.0, 52.0, 80.0, 108.0, 135.0), ground_colours=((235, 240, 250), (250, 245, 230)),
                            ink_colours=((60, 90, 160), (150, 60, 90)), lossless=True, char_fonts=(), char_scale=(), open_four=0.0)


def test_a_fixed_light_background_is_found(spec, synthesizer):
    images, _ = synthesizer.render_batch(120, seed=1)
    look = estimate_look(images, jpeg=True)
    assert look.fixed_background and look.ink == "light" and look.jpeg
    assert look.background_share > look.own_share


def test_dark_ink_on_grounds_of_their_own(tmp_path):
    spec = CaptchaSpec.from_flags(60, 160, "5", "a-z", "dark")
    images, _ = Synthesizer(spec, None, DARK_ON_LIGHT).render_batch(120, seed=2)
    look = estimate_look(images)
    assert not look.fixed_background and look.ink == "dark" and not look.jpeg
    assert all(min(c) > 200 for c in look.ground_colours)  # light grounds
    assert np.mean([max(c) < 200 for c in look.ink_colours]) > 0.8  # darker inks
    assert 4 < look.span[0] < 30 and 130 < look.span[1] < 158  # the text spans where it was drawn (centres 25-135)
    # the fitted synthesizer draws ink bands of the real height, dark on light, as the network then sees bright text
    cfg = fit_synth_config(look, spec, SynthConfig(fonts=DARK_ON_LIGHT.fonts), log=lambda *_: None)
    fitted = Synthesizer(spec, None, cfg)
    assert abs(synthetic_band(fitted, n=40)[1] - look.band[1]) <= 0.15 * look.band[1]
    drawn, _ = fitted.render_batch(20, seed=3)
    real_x, syn_x = preprocess(images[:20], "dark"), preprocess(drawn, "dark")
    assert np.median(real_x) < -0.5 and np.median(syn_x) < -0.5  # grounds dark, text bright
    assert abs(float((real_x > 0).mean()) - float((syn_x > 0).mean())) < 0.1


def test_text_lighter_on_some_captchas_and_darker_on_others_is_mixed_ink():
    spec = CaptchaSpec.from_flags(60, 160, "5", "a-z", "mixed")
    mixed = SynthConfig(**{**DARK_ON_LIGHT.__dict__, "ground_colours": ((235, 240, 250), (40, 30, 90), (250, 245, 230)),
                           "ink_colours": ((60, 90, 160), (230, 230, 200), (150, 60, 90))})
    images, _ = Synthesizer(spec, None, mixed).render_batch(120, seed=2)
    look = estimate_look(images)
    assert look.ink == "mixed" and 0.5 < look.dark_share < 0.85 and "mixed ink" in look.summary()
    # the fitted synthesizer draws the measured ground and ink of one captcha together: both polarities, none invisible
    cfg = fit_synth_config(look, spec, SynthConfig(fonts=DARK_ON_LIGHT.fonts), log=lambda *_: None)
    drawn, _ = Synthesizer(spec, None, cfg).render_batch(60, seed=3)
    assert 0.4 < text_is_darker(drawn).mean() < 0.95
    real_x, syn_x = preprocess(images[:60], "mixed"), preprocess(drawn, "mixed")
    assert np.median(real_x) == -1 and np.median(syn_x) == -1  # grounds at -1, text bright
    assert abs(float((real_x > -0.5).mean()) - float((syn_x > -0.5).mean())) < 0.1
    # one polarity throughout is not mixed
    assert estimate_look(Synthesizer(spec, None, DARK_ON_LIGHT).render_batch(60, seed=4)[0]).ink == "dark"


def test_choose_fonts_finds_the_font_the_captchas_were_drawn_with():
    spec = CaptchaSpec.from_flags(40, 120, "4", "a-z", "dark")
    fonts = default_fonts()[:3]
    cfg = SynthConfig(reference_size=(120, 40), glyph_box=64, font_size=(24, 26), anchored=False, y_range=(19.0, 21.0),
                      x_centers=(20.0, 46.0, 72.0, 98.0), rotation=5.0, ground_colours=((240, 240, 240),),
                      ink_colours=((40, 40, 40),), lossless=True, char_fonts=(), char_scale=(), open_four=0.0)
    real, _ = Synthesizer(spec, None, replace_fonts(cfg, fonts[1])).render_batch(300, seed=9)
    chosen, scores = choose_fonts(preprocess(real, "dark"), spec, cfg, fonts, n=300, steps=120, keep=1, critics=2,
                                  log=lambda *_: None)
    assert chosen == (fonts[1],) and len(scores) == 3
    best = scores[Path(fonts[1]).name]
    assert best["rank"] == 0 and all(v["rank"] > 0 and v["auc"] > best["auc"] for k, v in scores.items() if v is not best)


def test_fonts_are_ranked_by_each_critic_so_a_slow_critic_does_not_decide():
    # fonts x critics: the second critic learnt less for every font; font 0 is best for critics 1 and 3,
    # font 1 only for the slow critic, whose low AUCs would win a mean of AUCs
    aucs = np.array([[0.90, 0.80, 0.91], [0.95, 0.60, 0.96], [0.97, 0.82, 0.98]])
    assert aucs.mean(axis=1).argmin() == 1
    ranks = mean_ranks(aucs)
    assert ranks.argmin() == 0 and np.allclose(ranks, [1 / 3, 2 / 3, 2])
    assert np.allclose(mean_ranks(np.array([[0.5], [0.5], [0.7]])), [0.5, 0.5, 2])  # ties share their rank


def replace_fonts(cfg, font):
    from dataclasses import replace

    return replace(cfg, fonts=(font,))


def test_noise_dots_and_lines_are_drawn_in_the_ink_colour_and_measured():
    from dataclasses import replace

    from simcaptcha.look import _ink_masks, own_grounds, speck_pixels, thin_runs

    spec = CaptchaSpec.from_flags(60, 160, "5", "a-z", "dark")
    plain = Synthesizer(spec, None, DARK_ON_LIGHT)
    noisy = Synthesizer(spec, None, replace(DARK_ON_LIGHT, dots=20.0, arcs=1.0))
    (a, _), (b, _) = plain.render_batch(16, seed=4), noisy.render_batch(16, seed=4)

    def ink(images):
        return _ink_masks(images, own_grounds(images))

    assert speck_pixels(ink(b)).mean() > speck_pixels(ink(a)).mean() + 20  # dots are specks
    assert thin_runs(ink(b)).mean() > thin_runs(ink(a)).mean() + 50  # a line across makes a thin run per column
    inks = {tuple(c) for c in DARK_ON_LIGHT.ink_colours}
    for seed in range(4):  # one captcha each: the same glyphs, then the noise on top
        (one, _), (two, _) = plain.render_batch(1, seed), noisy.render_batch(1, seed)
        changed = two[0][(one[0] != two[0]).any(-1)]
        assert len(changed) > 30 and np.mean([tuple(p) in inks for p in changed]) > 0.9  # what was added is ink-coloured


def test_tall_narrow_glyphs_are_measured_and_the_fit_ranges_about_them():
    """Captchas drawn with tall, narrow glyphs: the look measures their height, and the fitted synthesizer draws
    glyphs over a range of widths that holds the drawn ones, in a band as high as theirs."""
    from dataclasses import replace

    from simcaptcha.look import glyph_heights, probe_ink

    spec = CaptchaSpec.from_flags(60, 160, "5", "a-z", "dark")
    drawn = replace(DARK_ON_LIGHT, font_size=(30, 36), height_scale=(1.3, 1.5), width_scale=(0.55, 0.65), dots=0.0)
    images, _ = Synthesizer(spec, None, drawn).render_batch(150, seed=5)
    look = estimate_look(images)
    plain = replace(drawn, height_scale=(1.0, 1.0))
    assert look.glyph_height[1] > 1.1 * glyph_heights(probe_ink(Synthesizer(spec, None, plain), 150, 5))[1]  # taller than unstretched
    cfg = fit_synth_config(look, spec, SynthConfig(fonts=DARK_ON_LIGHT.fonts), log=lambda *_: None)
    assert cfg.width_scale[0] < 0.6 < cfg.width_scale[1]  # the drawn width lies in the fitted range
    assert cfg.height_scale[0] < 1.0 < cfg.height_scale[1]
    assert abs(synthetic_band(Synthesizer(spec, None, cfg), n=40)[1] - look.band[1]) <= 0.15 * look.band[1]
