"""Challenge files and bad input: every bad entry is one line naming the file, the rest is read."""

import base64
import io
import json

import numpy as np
import pytest
from PIL import Image

from simcaptcha.challenges import load_captchas
from simcaptcha.files import InputError, write_atomic


def jpeg_bytes(size=(100, 50)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, (200, 0, 30)).save(buf, "JPEG")
    return buf.getvalue()


def test_reads_challenge_folder(challenge_dir):
    result = load_captchas([challenge_dir])
    assert len(result.captchas) == 40 and not result.errors
    assert result.images().shape == (40, 50, 100, 3)
    assert len(set(result.names())) == 40


def test_bad_entries_are_reported_and_skipped(tmp_path):
    good = base64.b64encode(jpeg_bytes()).decode()
    doc = {
        "images": [
            {"name": "good", "jpg_base64": good},
            {"jpg_base64": good},
            {"name": "nob64"},
            {"name": "badb64", "jpg_base64": "***not base64***"},
            {"name": "notimage", "jpg_base64": base64.b64encode(b"hello world").decode()},
            {"name": "toolarge", "jpg_base64": base64.b64encode(jpeg_bytes((1100, 20))).decode()},
        ]
    }
    path = tmp_path / "challenge-x"
    path.write_text(json.dumps(doc))
    result = load_captchas([path])
    assert [c.name for c in result.captchas] == ["good"]
    assert len(result.errors) == 5
    assert all(str(path) in e for e in result.errors)
    joined = "\n".join(result.errors)
    for expected in ["missing name", "missing jpg_base64", "bad base64", "not a readable image", "1100x20"]:
        assert expected in joined


def test_bad_files_do_not_stop_good_ones(tmp_path, challenge_dir):
    (challenge_dir / "not-json").write_text("this is not json")
    (challenge_dir / "no-images").write_text(json.dumps({"pictures": []}))
    result = load_captchas([challenge_dir])
    assert len(result.captchas) == 40
    assert any("not-json: not a JSON challenge file" in e for e in result.errors)
    assert any('no-images: no "images" list' in e for e in result.errors)


def test_missing_path_and_empty_folder(tmp_path):
    with pytest.raises(InputError, match="no such file"):
        load_captchas([tmp_path / "absent"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="empty"):
        load_captchas([tmp_path / "empty"])


def test_image_folder_is_read(tmp_path):
    (tmp_path / "a.jpg").write_bytes(jpeg_bytes())
    (tmp_path / "b.png").write_bytes(b"garbage")
    result = load_captchas([tmp_path])
    assert [c.name for c in result.captchas] == ["a"]
    assert "b.png" in result.errors[0]


def test_a_transparent_ground_is_read_as_a_white_page(tmp_path):
    """Black text on a transparent ground (as PNG and GIF captchas are served) stays black on white, not black on black."""
    rgba = Image.new("RGBA", (60, 30), (0, 0, 0, 0))  # transparent pixels that store black
    rgba.paste((20, 20, 20, 255), (10, 10, 30, 20))  # opaque dark text
    rgba.save(tmp_path / "a.png")
    rgba.convert("LA").save(tmp_path / "b.png")
    palette = Image.new("P", (60, 30), 0)
    palette.putpalette([0, 0, 0, 20, 20, 20] + [0] * 762)
    palette.paste(1, (10, 10, 30, 20))
    palette.save(tmp_path / "c.gif", transparency=0)
    Image.new("RGB", (60, 30), (0, 0, 0)).save(tmp_path / "d.png")  # opaque black stays black
    images = {c.name: c.image for c in load_captchas([tmp_path]).captchas}
    for name in "abc":
        assert images[name].shape == (30, 60, 3), name
        assert (images[name][0, 0] == 255).all() and (images[name][15, 20] == 20).all(), name
    assert (images["d"] == 0).all()
    # the Python API reads the same pixels from the image, from its bytes and from an RGBA array
    from simcaptcha.solver import to_rgb

    for source in (rgba, (tmp_path / "a.png").read_bytes(), np.asarray(rgba)):
        assert np.array_equal(to_rgb(source, (60, 30)), images["a"])


def test_write_atomic_leaves_no_temp_files(tmp_path):
    write_atomic(tmp_path / "x.bin", b"abc")
    write_atomic(tmp_path / "x.bin", b"def")
    assert (tmp_path / "x.bin").read_bytes() == b"def"
    assert [p.name for p in tmp_path.iterdir()] == ["x.bin"]
    assert (tmp_path / "x.bin").stat().st_mode & 0o044  # readable by others, like any written file


def test_real_hackmit_files_read_cleanly(hackmit):
    result = load_captchas([hackmit / "challenges" / "challenge-14"])
    labels = json.loads((hackmit / "dev-labels.json").read_text())
    assert len(result.captchas) == 1000 and not result.errors
    assert set(result.names()) == set(labels)
    assert np.asarray(result.images()).dtype == np.uint8
