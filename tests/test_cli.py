"""CLI smoke tests: tiny inputs into tmp_path; artefacts exist and load; bad input is one line, no traceback."""

import json

import numpy as np
from PIL import Image
from typer.testing import CliRunner

from simcaptcha.cli import app

runner = CliRunner()


def run(*args):
    result = runner.invoke(app, [str(a) for a in args])
    assert "Traceback" not in result.output, result.output
    return result


def test_extract_mask_synth_preview(tmp_path, challenge_dir):
    r = run("extract", challenge_dir, "-o", tmp_path / "real")
    assert r.exit_code == 0 and "read 40 captchas" in r.output
    assert len(list((tmp_path / "real").glob("*.jpg"))) == 40

    r = run("mask", tmp_path / "real", "-o", tmp_path / "mask.png")
    assert r.exit_code == 0, r.output
    assert Image.open(tmp_path / "mask.png").size == (100, 50)

    r = run("synth", 12, "-o", tmp_path / "syn", "--mask", tmp_path / "mask.png", "--seed", 3)
    assert r.exit_code == 0, r.output
    labels = json.loads((tmp_path / "syn" / "labels.json").read_text())
    assert len(labels) == 12
    first = (tmp_path / "syn" / "000000.jpg").read_bytes()
    run("synth", 12, "-o", tmp_path / "syn2", "--mask", tmp_path / "mask.png", "--seed", 3)
    assert (tmp_path / "syn2" / "000000.jpg").read_bytes() == first

    r = run("preview", challenge_dir, "--mask", tmp_path / "mask.png", "-o", tmp_path / "sheet.png", "--count", 4)
    assert r.exit_code == 0 and Image.open(tmp_path / "sheet.png").width > 400


def test_bad_inputs_are_one_line(tmp_path, challenge_dir):
    (challenge_dir / "broken").write_text("{not json")
    r = run("extract", challenge_dir, "-o", tmp_path / "out")
    assert r.exit_code == 0 and "broken: not a JSON challenge file" in r.output

    r = run("extract", tmp_path / "absent", "-o", tmp_path / "out")
    assert r.exit_code != 0 and "no such file" in r.output

    (tmp_path / "empty").mkdir()
    r = run("mask", tmp_path / "empty", "-o", tmp_path / "m.png")
    assert r.exit_code != 0 and "empty" in r.output

    only_bad = tmp_path / "bad"
    only_bad.mkdir()
    (only_bad / "c").write_text(json.dumps({"images": [{"name": "x", "jpg_base64": "%%%"}]}))
    r = run("extract", only_bad, "-o", tmp_path / "out2")
    assert r.exit_code != 0 and "bad base64" in r.output and "no usable captcha" in r.output

    r = run("synth", 2, "-o", tmp_path / "s", "--size", "100x50", "--font", tmp_path / "missing.ttf")
    assert r.exit_code != 0 and "missing.ttf" in r.output


def test_real_hackmit_mask_has_thin_lines(tmp_path, hackmit):
    r = run("mask", hackmit / "challenges" / "challenge-0", "-o", tmp_path / "mask.png")
    assert r.exit_code == 0, r.output
    from simcaptcha.preprocess import line_mask

    lines = line_mask(np.asarray(Image.open(tmp_path / "mask.png")))
    # a few thin lines: hundreds of pixels, not characters smeared over the image
    assert 100 < lines.sum() < 600
