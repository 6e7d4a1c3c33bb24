"""Preprocessing, background estimation and the synthesizer."""

import json
import subprocess
import sys

import numpy as np
import pytest

from simcaptcha.spec import CaptchaSpec
from simcaptcha.preprocess import estimate_background, line_mask, preprocess, text_is_darker, to_uint8
from simcaptcha.synth import SynthConfig, Synthesizer, SyntheticStream, default_fonts, render_pool, write_dataset


def test_alphabet_round_trip(spec):
    assert spec.decode(spec.encode("a0z9")) == "a0z9"
    assert not spec.is_valid("ABCD") and not spec.is_valid("abc")
    with pytest.raises(ValueError):
        spec.encode("ab!d")


def test_preprocess_separates_white_from_stripes():
    rgb = np.zeros((50, 100, 3), np.uint8)
    rgb[:, :50] = (200, 0, 30)  # saturated red stripe
    rgb[:, 50:] = (120, 180, 0)  # green stripe
    rgb[20:30, 10:20] = 250  # white stroke
    x = preprocess(rgb)
    assert x.shape == (50, 100, 1) and x.dtype == np.float32
    assert x[25, 15, 0] > 0.9 and x[5, 5, 0] < -0.7 and x[5, 80, 0] < -0.4
    # the mean of luma (BT.601, as JPEG stores it) and the minimum channel, scaled to [-1, 1]
    luma = rgb.astype(np.float64) @ np.array([0.299, 0.587, 0.114])
    assert np.allclose(x[..., 0], (luma + rgb.min(-1)) / 255.0 - 1.0, atol=1e-5)
    assert np.abs(to_uint8(x).astype(int) - (luma + rgb.min(-1)) / 2).max() <= 0.5 + 1e-3
    with pytest.raises(ValueError):
        preprocess(np.zeros((40, 100, 4), np.uint8))


def test_mixed_ink_turns_each_captcha_to_bright_text_on_a_ground_at_minus_one():
    rgb = np.zeros((2, 40, 60, 3), np.uint8)
    rgb[0] = 50  # dark ground, pale text (grey levels: inverting them is an exact turn of the network's scale)
    rgb[0, 10:30, 10:20] = 220
    rgb[0, 35, :] = 0  # a black line: beyond the ground on the other side from the text
    rgb[1] = 255 - rgb[0]  # the same captcha with its colours inverted: dark text on a pale ground
    assert text_is_darker(rgb).tolist() == [False, True]
    x = preprocess(rgb, "mixed")
    assert x.shape == (2, 40, 60, 1) and x.dtype == np.float32 and -1 <= x.min() and x.max() <= 1
    assert np.allclose(x[0], x[1], atol=1e-5)  # either polarity, one input
    assert np.allclose(x[0, 0, 0], -1) and x[0, 20, 15, 0] > 0  # ground at -1, text bright
    assert np.allclose(x[0, 35], -1)  # the line is cut off at the ground
    assert np.allclose(preprocess(rgb[1], "mixed"), x[1])  # one captcha as in a batch
    assert np.allclose(preprocess(rgb, "light"), -preprocess(rgb, "dark"))  # the fixed polarities are unchanged by it


def test_paired_colours_are_drawn_together(spec):
    pairs = SynthConfig(reference_size=(100, 50), ground_colours=((30, 30, 90), (235, 225, 200)),
                        ink_colours=((235, 235, 210), (40, 40, 40)), lossless=True, char_fonts=(), char_scale=(), open_four=0.0)
    images, _ = Synthesizer(spec, None, pairs).render_batch(40, seed=5)
    pale_ground = images[:, 0, 0].mean(-1) > 128
    assert 5 < pale_ground.sum() < 35
    assert (text_is_darker(images) == pale_ground).all()  # pale grounds carry dark text, dark grounds pale text


def test_background_estimate_recovers_lines(background, spec):
    # The median needs every pixel free of characters in most captchas (real ones: at most 49%
    # covered). Centred placement spreads them over more rows than this fixture's baselines do.
    images, _ = Synthesizer(spec, background, SynthConfig(anchored=False)).render_batch(200, seed=1)
    estimate = estimate_background(images)
    truth = line_mask(background)
    found = line_mask(estimate)
    # every true line pixel is found, and nothing farther than one pixel from a line (JPEG blurs them)
    assert found[truth].mean() > 0.95
    near = truth.copy()
    for axis in (0, 1):
        for shift in (-1, 1):
            near |= np.roll(truth, shift, axis=axis)
    assert (found & ~near).sum() <= 3


def test_synth_is_seeded_and_shaped(synthesizer, spec):
    a, ta = synthesizer.render_batch(8, seed=5)
    b, tb = synthesizer.render_batch(8, seed=5)
    c, tc = synthesizer.render_batch(8, seed=6)
    assert a.shape == (8, 50, 100, 3) and a.dtype == np.uint8
    assert np.array_equal(a, b) and ta == tb
    assert ta != tc
    assert all(spec.is_valid(t) for t in ta)


def test_synth_draws_the_mask_lines(synthesizer, background):
    images, _ = synthesizer.render_batch(20, seed=2)
    lines = line_mask(background)
    # line pixels stay white in (nearly) every captcha; they are not characters
    assert (images.min(-1)[:, lines] > 150).mean() > 0.9


def test_characters_land_in_their_quarter(background, spec):
    synth = Synthesizer(spec, background, SynthConfig(rotation=0))
    images, _ = synth.render_batch(64, seed=4)
    ink = (preprocess(images)[..., 0] - preprocess(background[None])[..., 0]) > 1.0
    profile = ink.mean(axis=(0, 1))  # ink per column
    centers = [int(c) for c in SynthConfig().x_centers]
    gaps = [(a + b) // 2 for a, b in zip(centers, centers[1:])]
    assert min(profile[c] for c in centers) > max(profile[g] for g in gaps)


def test_each_font_renders(background, spec):
    for font in default_fonts():
        images, _ = Synthesizer(spec, background, SynthConfig(fonts=(font,))).render_batch(2, seed=0)
        assert (images.min(-1) > 200).sum() > 100, font
    assert len(default_fonts()) >= 2


def test_missing_font_is_a_clear_error(background, spec):
    with pytest.raises(FileNotFoundError, match="nofont.ttf"):
        Synthesizer(spec, background, SynthConfig(fonts=("nofont.ttf",)))


def test_stream_batches_are_reproducible(synthesizer):
    x1, y1 = next(iter(SyntheticStream(synthesizer, 4, seed=3, start=7)))
    it = iter(SyntheticStream(synthesizer, 4, seed=3, start=6))
    next(it)
    x2, y2 = next(it)
    assert x1.shape == (4, 50, 100, 1) and y1.shape == (4, 4)
    assert np.array_equal(x1, x2) and np.array_equal(y1, y2)


def test_pool_is_the_same_for_any_worker_count(background, spec):
    one = render_pool(Synthesizer(spec, background), 20, seed=4, workers=1, chunk=6)
    two = render_pool(Synthesizer(spec, background), 20, seed=4, workers=2, chunk=6)  # worker processes
    assert one.x.shape == (20, 50, 100, 1) and one.labels.shape == (20, 4)
    assert np.array_equal(one.x, two.x) and np.array_equal(one.labels, two.labels)
    assert not np.array_equal(one.x[:6], one.x[6:12])  # each chunk has its own seed
    # a chunk is what the synthesizer renders for that chunk's seed
    images, texts = Synthesizer(spec, background).render_batch(6, (4, 888_888_888, 1))
    assert np.array_equal(one.x[6:12], preprocess(images)) and [spec.decode(row) for row in one.labels[6:12]] == texts


def test_pool_renders_in_process_when_the_main_script_cannot_be_rerun(background, monkeypatch, spec):
    # spawned workers re-run the main script first; `python - <<EOF` has none to re-run
    monkeypatch.setattr(sys.modules["__main__"], "__file__", "<stdin>", raising=False)
    pool = render_pool(Synthesizer(spec, background), 8, seed=4, workers=2, chunk=4)
    alone = render_pool(Synthesizer(spec, background), 8, seed=4, workers=1, chunk=4)
    assert np.array_equal(pool.x, alone.x) and np.array_equal(pool.labels, alone.labels)


def test_pool_renders_in_process_when_workers_fail_to_start(tmp_path, spec):
    # without a main guard, each spawned worker re-runs the script, tries to start workers of its
    # own and dies: the pool is rendered in the parent instead, the same as with one worker
    script = tmp_path / "unguarded.py"
    script.write_text(
        "import numpy as np\n"
        "from simcaptcha.spec import legacy_spec\n"
        "from simcaptcha.synth import Synthesizer, render_pool\n"
        "pool = render_pool(Synthesizer(legacy_spec()), 8, seed=4, workers=2, chunk=4)\n"
        f"np.savez({str(tmp_path / 'pool.npz')!r}, x=pool.x, labels=pool.labels)\n"
    )
    run = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    assert "rendering in this process" in run.stderr
    alone = render_pool(Synthesizer(spec), 8, seed=4, workers=1, chunk=4)
    saved = np.load(tmp_path / "pool.npz")
    assert np.array_equal(saved["x"], alone.x) and np.array_equal(saved["labels"], alone.labels)


def test_pool_batches_cover_every_captcha_each_pass_and_resume(background, spec):
    pool = render_pool(Synthesizer(spec, background), 10, seed=1, workers=1)
    batches = pool.batches(4, seed=2)
    drawn = [next(batches) for _ in range(5)]  # 20 draws: two passes over 10 captchas
    rows = {pool.x[i].tobytes(): tuple(pool.labels[i]) for i in range(10)}
    seen = [(x.tobytes(), tuple(y)) for b in drawn for x, y in zip(*b)]
    assert all(rows[x] == y for x, y in seen)  # images keep their labels
    assert len({x for x, _ in seen[:10]}) == 10 and len({x for x, _ in seen[10:]}) == 10
    assert [x for x, _ in seen[:10]] != [x for x, _ in seen[10:]]  # a new order each pass
    resumed = next(pool.batches(4, seed=2, start=3))
    assert np.array_equal(resumed[0], drawn[3][0]) and np.array_equal(resumed[1], drawn[3][1])


def test_write_dataset(tmp_path, synthesizer):
    labels = write_dataset(synthesizer, 5, tmp_path / "out", seed=0)
    saved = json.loads((tmp_path / "out" / "labels.json").read_text())
    assert saved == labels and len(saved) == 5
    assert all((tmp_path / "out" / name).is_file() for name in saved)


def test_char_fonts_restrict_shapes_and_fall_back(spec):
    synth = Synthesizer(spec, config=SynthConfig())
    g_fonts = synth.char_fonts["g"]
    assert g_fonts and all(any(n in f for n in ("GilliusADF", "OpenSans", "Karla", "Cabin")) for f in g_fonts)
    assert len(g_fonts) < len(synth.fonts)
    # fonts of the user's own that match none of the names: the char is drawn from all of them
    dejavu = [f for f in default_fonts() if "DejaVu" in f]
    assert Synthesizer(spec, config=SynthConfig(fonts=tuple(dejavu))).char_fonts["g"] == dejavu


def test_variety_draws_some_characters_with_the_other_fonts(spec, monkeypatch):
    import simcaptcha.synth as synth_module

    fonts = default_fonts()
    one, others = tuple(fonts[:1]), tuple(fonts[1:])
    plain = Synthesizer(spec, config=SynthConfig(fonts=one, char_fonts=()))
    unused = Synthesizer(spec, config=SynthConfig(fonts=one, char_fonts=(), variety=0.0, variety_fonts=others))
    mixed = Synthesizer(spec, config=SynthConfig(fonts=one, char_fonts=(), variety=0.5, variety_fonts=others))
    assert np.array_equal(plain.render_batch(8, (3, 1))[0], unused.render_batch(8, (3, 1))[0])  # variety 0: the same draws
    drawn = []
    glyph = synth_module._glyph
    monkeypatch.setattr(synth_module, "_glyph", lambda font, *args: drawn.append(font) or glyph(font, *args))
    rng = np.random.default_rng(0)
    for _ in range(20):
        plain.render_image("abcde", rng)
    assert set(drawn) == set(one)
    drawn.clear()
    for _ in range(20):
        mixed.render_image("abcde", rng)
    share = np.mean([f in others for f in drawn])
    assert 0.3 < share < 0.7, share


def test_open_four_leaves_a_gap_at_the_top():
    from simcaptcha.synth import _open_four

    ink = np.asarray(_open_four(24, 2)) > 128
    rows, cols = np.nonzero(ink)
    top = ink[rows.min() : rows.min() + 3, cols.min() : cols.max() + 1]
    # the top rows hold two separate strokes (arm and stem) with background between them
    runs = np.diff(np.concatenate([[0], top.any(0).astype(int), [0]]))
    assert (runs == 1).sum() == 2


def test_stretch_and_height_scale_change_the_glyph():
    from simcaptcha.synth import _glyph, _place

    glyph = _glyph(default_fonts()[0], 24, "l", 2)

    def extent(im, axis):
        return np.ptp(np.nonzero(np.asarray(im).max(axis) > 128)[0])

    assert extent(_place(glyph, 0, 1, 0.7), 1) < 0.8 * extent(glyph, 1)
    assert extent(_place(glyph, 0, 1.5, 1), 0) > extent(glyph, 0)
    assert extent(_place(glyph, 90, 1, 1), 1) < 0.5 * extent(glyph, 1)  # rotated a quarter turn, the bar lies flat


def test_noise_lines_cross_the_characters(spec):
    from simcaptcha.synth import striped_background

    bg = striped_background(np.random.default_rng(3), 50, 100)
    bg[14:42, 5:95:3] = (255, 205, 205)  # pinkish vertical lines, as a line over a red stripe looks
    lines = line_mask(bg)
    assert lines.sum() > 500

    def white_on_lines(on_top):
        images, _ = Synthesizer(spec, bg, SynthConfig(lines_on_top=on_top, line_ink=None)).render_batch(40, seed=6)
        return (images.min(-1)[:, lines] > 240).mean()

    # drawn after the text, a line stays pink where a white character crosses it; drawn before, the ink covers it
    assert white_on_lines(True) < 0.01 < white_on_lines(False)


def test_noise_lines_are_redrawn_in_line_ink(spec):
    from simcaptcha.preprocess import whiteness
    from simcaptcha.synth import striped_background

    bg = striped_background(np.random.default_rng(3), 50, 100)
    bg[10:12, 5:95] = (255, 255, 170)  # a horizontal line, tinted yellow by a stripe as JPEG does
    lines = line_mask(bg)

    def line_whiteness(line_ink):
        images, _ = Synthesizer(spec, bg, SynthConfig(line_ink=line_ink)).render_batch(20, seed=6)
        return np.median(whiteness(images)[:, lines])

    # redrawn near-white wherever it runs, a line leaves no darker seam in a character it crosses
    tinted, white = line_whiteness(None), line_whiteness(250)
    assert white > 230 and white - tinted > 20


def test_after_warm_up_rendering_draws_no_new_glyph(spec):
    # Every glyph stays cached: a stream that keeps redrawing evicted glyphs renders far slower.
    from simcaptcha.synth import _glyph

    synth = Synthesizer(spec)
    synth.warm_up()
    misses = _glyph.cache_info().misses
    synth.render_batch(64, seed=3)
    assert _glyph.cache_info().misses == misses


def _ink_box(synth, char):
    """(left, top, right, bottom) of one character drawn alone in the first place."""
    from simcaptcha.challenges import decode_image

    ink = decode_image(synth.render_jpeg(char, np.random.default_rng(0))).min(-1) > 160
    rows, cols = np.nonzero(ink)
    return cols.min(), rows.min(), cols.max(), rows.max()


def test_anchored_glyphs_start_at_one_edge_and_stand_on_one_baseline(spec):
    # As the contest drew them (PIL text): wide and narrow glyphs share a left edge, short and
    # tall ones a bottom row, and descenders reach below it.
    fixed = dict(rotation=0, x_jitter=0, baseline_range=(35.0, 35.0), width_scale=(1.0, 1.0))
    synth = Synthesizer(spec, config=SynthConfig(fonts=(default_fonts()[0],), **fixed))
    m, i, a, h, p = (_ink_box(synth, c) for c in "miahp")
    assert abs(m[0] - i[0]) <= 1 and m[2] - i[2] > 8  # same left edge, the m reaches right
    assert abs(a[3] - h[3]) <= 1 and abs(a[3] - 35) <= 2 and h[1] < a[1] - 3  # one baseline, h taller
    assert p[3] > a[3] + 3  # the descender hangs below
    # centred placement (the old way) starts a wide glyph further left and sets short ones higher
    centred = Synthesizer(spec, config=SynthConfig(fonts=(default_fonts()[0],), anchored=False, y_range=(30.0, 30.0), **fixed))
    m, i, a, h = (_ink_box(centred, c) for c in "miah")
    assert i[0] - m[0] > 4 and h[3] - a[3] > 1


@pytest.mark.parametrize("size,length,alphabet", [((160, 60), "5", "a-z0-9"), ((120, 40), "4-6", "0-9A-F")])
def test_synth_renders_any_spec(size, length, alphabet):
    spec = CaptchaSpec.from_flags(size[1], size[0], length, alphabet)
    synth = Synthesizer(spec)
    images, texts = synth.render_batch(30, seed=2)
    assert images.shape == (30, size[1], size[0], 3)
    assert all(spec.is_valid(t) for t in texts)
    assert {len(t) for t in texts} == set(range(spec.min_length, spec.max_length + 1))
    labels = synth.labels(texts)
    assert labels.shape == (30, spec.max_length)
    assert [spec.decode(row[row >= 0]) for row in labels] == texts
    # the characters spread over the width: ink left and right of the middle
    ink = (preprocess(images)[..., 0] > 0.6).mean(axis=(0, 1))
    assert ink[: size[0] // 3].sum() > 0 and ink[-size[0] // 3 :].sum() > 0


def test_synthesizer_round_trips_through_its_run_folder(tmp_path, spec, background):
    synth = Synthesizer(spec, background, SynthConfig(rotation=10.0))
    synth.save(tmp_path)
    again = Synthesizer.load(tmp_path)
    assert again.spec == spec and again.config == synth.config
    a, ta = synth.render_batch(4, seed=1)
    b, tb = again.render_batch(4, seed=1)
    assert ta == tb and np.array_equal(a, b)
