"""Hostile input and faults: nothing written outside the output folder, no input destroyed, one line, no traceback.

Challenge files come from servers and model files from users: every probe here asserts the exit
code, the one-line message, and that no good data was lost or overwritten.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from simcaptcha.challenges import load_captchas
from simcaptcha.cli import app
from simcaptcha.contest import ContestClient, ContestError
from simcaptcha.files import InputError, child_path, clean_stale_temps, write_atomic

from .conftest import make_challenge
from .contest_server import ContestServer

runner = CliRunner()
SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"


def run(*args):
    result = runner.invoke(app, [str(a) for a in args])
    assert "Traceback" not in result.output, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    return result


def run_script(name, *args, timeout=60):
    proc = subprocess.run([sys.executable, str(SCRIPTS / name), *map(str, args)], capture_output=True, text=True, timeout=timeout)
    assert "Traceback" not in proc.stderr, proc.stderr
    return proc


def tree(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*")}


def declared_png(width: int, height: int) -> bytes:
    """A PNG of a few hundred bytes whose header declares width x height pixels (a decompression bomb)."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    rows = zlib.compress(b"\0" * (width + 1) * 8)  # the first rows only
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", rows) + chunk(b"IEND", b"")


@pytest.fixture
def good_doc(synthesizer):
    doc, labels = make_challenge(synthesizer, 3, seed=7)
    return doc, labels


# -- names from input ------------------------------------------------------------------------------

BAD_NAMES = ["../../../../outside/pwned", "/abs/escape", "a\0b", "x" * 300, "", ".hidden", "..", "sub/dir", 17]


def test_extract_writes_nothing_outside_the_output_folder(tmp_path, good_doc):
    doc, _ = good_doc
    jpg = doc["images"][0]["jpg_base64"]
    doc["images"] += [{"name": n, "jpg_base64": jpg} for n in BAD_NAMES]
    work = tmp_path / "deep" / "er" / "work"
    work.mkdir(parents=True)
    (work / "challenge").write_text(json.dumps(doc))
    before = tree(tmp_path)
    r = run("extract", work / "challenge", "-o", work / "out")
    assert r.exit_code == 0, r.output
    written = tree(tmp_path) - before
    assert written == {"deep/er/work/out"} | {f"deep/er/work/out/{e['name']}.jpg" for e in doc["images"][:3]}
    assert not list(Path("/abs").glob("escape*")) and not (tmp_path / "outside").exists()
    skipped = [line for line in r.output.splitlines() if line.startswith("skipped:")]
    assert len(skipped) == len(BAD_NAMES)
    assert all("challenge entry" in line and ("bad name" in line or "missing name" in line) for line in skipped)
    assert "\0" not in r.output


def test_child_path_refuses_paths():
    for name in ["../x", "/etc/passwd", "a/b", "..", "", "a\0b"]:
        with pytest.raises(InputError):
            child_path("/tmp/out", name)
    assert child_path("/tmp/out", "abc.jpg") == Path("/tmp/out/abc.jpg")


def test_duplicate_names_keep_the_first_everywhere(tmp_path, synthesizer):
    doc, labels = make_challenge(synthesizer, 2, seed=1)
    first, second = doc["images"]
    doc["images"].append({"name": first["name"], "jpg_base64": second["jpg_base64"]})
    (tmp_path / "c").write_text(json.dumps(doc))
    result = load_captchas([tmp_path / "c"])
    assert result.names() == [first["name"], second["name"]]
    assert len(result.errors) == 1 and "duplicate name" in result.errors[0] and "entry 2" in result.errors[0]
    r = run("extract", tmp_path / "c", "-o", tmp_path / "out")
    assert r.exit_code == 0 and "duplicate name" in r.output
    assert (tmp_path / "out" / f"{first['name']}.jpg").read_bytes() == base64.b64decode(first["jpg_base64"])


# -- inputs are never overwritten ------------------------------------------------------------------


def test_an_output_that_is_an_input_is_refused_before_any_work(tmp_path, challenge_dir):
    challenge = challenge_dir / "challenge-0"
    original = challenge.read_bytes()
    r = run("solve", challenge, "-o", challenge)
    assert r.exit_code == 1 and "is one of the inputs" in r.output
    assert challenge.read_bytes() == original
    r = run("extract", challenge_dir, "-o", challenge_dir)
    assert r.exit_code == 1 and "holds input files" in r.output
    r = run("mask", challenge_dir, "-o", challenge)
    assert r.exit_code == 1 and challenge.read_bytes() == original


# -- one bad entry is one line; the rest is read ------------------------------------------------------


def test_decompression_bomb_and_wrong_sizes_are_refused_from_the_header(tmp_path, good_doc):
    import tracemalloc

    doc, _ = good_doc
    bomb = declared_png(10000, 10000)
    assert len(bomb) < 2_000  # small on disk, 100 MB once decoded
    doc["images"].append({"name": "bomb", "jpg_base64": base64.b64encode(bomb).decode()})
    (tmp_path / "c").write_text(json.dumps(doc))
    (tmp_path / "bomb.png").write_bytes(bomb)
    tracemalloc.start()
    result = load_captchas([tmp_path])
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert len(result.captchas) == 3
    assert sum("10000x10000" in e for e in result.errors) == 2
    assert peak < 100 * 2**20  # the pixels were never decoded


def test_nested_json_and_oversized_files_are_one_line(tmp_path, good_doc, monkeypatch):
    import simcaptcha.challenges as challenges

    doc, _ = good_doc
    (tmp_path / "good").write_text(json.dumps(doc))
    (tmp_path / "nested").write_text("[" * 100_000 + "]" * 100_000)
    result = load_captchas([tmp_path])
    assert len(result.captchas) == 3
    assert any("nested: JSON nested too deeply" in e for e in result.errors)
    monkeypatch.setattr(challenges, "MAX_CHALLENGE_BYTES", 100)
    result = load_captchas([tmp_path / "good"])
    assert not result.captchas and "more than the" in result.errors[0]


def test_evaluate_survives_bad_labels(tmp_path, challenge_dir):
    answers = {"solutions": [{"name": "a", "solution": "ab12"}, {"name": "b", "solution": "cd34"}]}
    (tmp_path / "s.json").write_text(json.dumps(answers))
    for labels, expected in [({"a": "ab", "b": None}, 0), (["a", "b"], None), ({"a": "ab12", "b": "cd3"}, 0)]:
        (tmp_path / "l.json").write_text(json.dumps(labels))
        r = run("evaluate", tmp_path / "s.json", "--labels", tmp_path / "l.json")
        if expected is None:
            assert r.exit_code == 1 and "name -> text map" in r.output
        else:
            assert r.exit_code == 0, r.output
    (tmp_path / "l.json").write_text(json.dumps({"a": "ab12", "b": "cd3"}))
    r = run("evaluate", tmp_path / "s.json", "--labels", tmp_path / "l.json")
    assert "captcha accuracy:   50.00%" in r.output


def test_read_only_or_occupied_output_is_one_line(tmp_path, challenge_dir):
    (tmp_path / "file").write_text("occupied")
    r = run("extract", challenge_dir, "-o", tmp_path / "file" / "out")
    assert r.exit_code == 1 and r.output.count("\n") <= 2 and "error:" in r.output
    (tmp_path / "folder").mkdir()
    r = run("solve", challenge_dir, "-o", tmp_path / "folder")
    assert r.exit_code == 1 and "is a folder" in r.output
    r = run("mask", challenge_dir, "-o", tmp_path / "m.png", "--limit", "-5")
    assert r.exit_code == 2


# -- models of the wrong shape -------------------------------------------------------------------


def tiny_model(heads: int, classes: int, path: Path) -> Path:
    import keras

    inputs = keras.Input((50, 100, 1))
    x = keras.layers.Flatten()(keras.layers.AveragePooling2D(10)(inputs))
    outputs = [keras.layers.Dense(classes, activation="softmax", name=f"char_{i}")(x) for i in range(heads)]
    keras.Model(inputs, outputs).save(path)
    return path


def test_models_of_the_wrong_shape_are_refused_in_one_line(tmp_path, challenge_dir):
    from simcaptcha.refiner import build_refiner

    cases = {
        "five heads": (tiny_model(5, 36, tmp_path / "five.keras"), "5 output heads"),
        "ten classes": (tiny_model(4, 10, tmp_path / "ten.keras"), "shape (10,)"),
    }
    build_refiner().save(tmp_path / "refiner.keras")
    cases["refiner"] = (tmp_path / "refiner.keras", "not a classifier")
    damaged = bytearray((tmp_path / "five.keras").read_bytes())
    damaged[len(damaged) // 2 : len(damaged) // 2 + 64] = b"\0" * 64
    (tmp_path / "crc.keras").write_bytes(bytes(damaged))
    cases["bad crc"] = (tmp_path / "crc.keras", "cannot load the classifier")
    (tmp_path / "text.keras").write_text("not a model")
    cases["not a model"] = (tmp_path / "text.keras", "cannot load the classifier")
    for what, (model, expected) in cases.items():
        r = run("solve", challenge_dir, "-o", tmp_path / "s.json", "--model", model)
        assert r.exit_code == 1 and expected in r.output, (what, r.output)
        assert not (tmp_path / "s.json").exists()
    r = run("train", "-o", tmp_path / "m", "--refiner", tmp_path / "five.keras", "--steps", 1, "--size", "100x50")
    assert r.exit_code == 1 and "not a refiner" in r.output


# -- interrupted writes --------------------------------------------------------------------------


def test_solutions_and_confidences_never_mismatch(tmp_path):
    from simcaptcha.solver import Solution, SolveResult, confidence_path_for, read_confidences, write_solutions

    out = tmp_path / "s.json"
    write_solutions(SolveResult([Solution("a", "ab12", 0.9), Solution("b", "cd34", 0.5)]), out)
    assert read_confidences(confidence_path_for(out), out) == {"a": 0.9, "b": 0.5}
    # A solve killed between its two writes: new confidences beside the old solutions.
    old = out.read_bytes()
    write_solutions(SolveResult([Solution("a", "zz12", 0.1)]), out)
    out.write_bytes(old)
    with pytest.raises(InputError, match="other solutions"):
        read_confidences(confidence_path_for(out), out)
    (tmp_path / "l.json").write_text(json.dumps({"a": "ab12", "b": "cd34"}))
    r = run("evaluate", out, "--labels", tmp_path / "l.json")
    assert r.exit_code == 0 and "warning:" in r.output and "most confident answers" not in r.output


def test_stale_temporary_files_are_cleaned(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True).stdout.strip()
    stale = tmp_path / f".x.json.{dead}.abc123.tmp"
    live = tmp_path / f".x.json.{os.getpid()}.def456.tmp"
    stale.write_text("half")
    live.write_text("being written")
    write_atomic(tmp_path / "x.json", b"{}")
    assert not stale.exists() and live.exists()
    live.unlink()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.json"]
    assert clean_stale_temps(tmp_path / "x.json") == 0


# -- the contest client against a misbehaving server --------------------------------------------------


def client(server, **kw):
    return ContestClient(server.url, "alice", **{"retries": 1, "backoff": 0.01, "timeout": 2.0, **kw})


def test_get_is_retried_on_5xx_then_succeeds(server):
    server.fault, server.fault_count = "5xx", 2
    assert json.loads(client(server, retries=2).challenge())["images"]
    assert server.gets == 3
    server.fault, server.fault_count, server.gets = "5xx", 10, 0
    with pytest.raises(ContestError, match="HTTP 503 after 2 tries"):
        client(server).challenge()
    assert server.gets == 2


@pytest.mark.parametrize("fault", ["close", "trickle", "hang"])
def test_broken_slow_and_hanging_replies_end_within_the_deadline(server, fault):
    server.fault = fault
    start = time.monotonic()
    with pytest.raises(ContestError, match="after 2 tries"):
        client(server).challenge()
    assert time.monotonic() - start < 2 * (2.0 + 1.0) + 1.0  # two tries of a 2 s deadline, and little more


def test_redirects_are_not_followed_off_the_base_url(server, challenge_dir):
    docs = [p.read_bytes() for p in sorted(challenge_dir.iterdir())]
    with ContestServer(docs, {}, {}) as other:
        server.fault, server.redirect_to = "redirect-off", other.url + "/u/alice/challenge"
        with pytest.raises(ContestError, match="outside"):
            client(server).challenge()
        assert other.gets == 0
    server.fault = "redirect-loop"
    with pytest.raises(ContestError, match="redirects in a row"):
        client(server).challenge()


def test_a_slow_post_is_sent_once_and_reported_as_unknown(server):
    server.fault, server.slow_post_seconds = "slow-post", 5.0
    with pytest.raises(ContestError, match="unknown outcome"):
        client(server, timeout=1.0).submit({"solutions": [{"name": "a", "solution": "ab12"}]})
    time.sleep(0.2)
    assert server.posts == 1


@pytest.mark.parametrize("fault", ["empty", "corrupt", "close"])
def test_download_force_never_replaces_a_good_file_with_a_bad_reply(tmp_path, server, fault):
    out = tmp_path / "dl"
    out.mkdir()
    good = (tmp_path / "challenges" / "challenge-0").read_bytes()
    (out / "challenge-0").write_bytes(good)
    server.fault = fault
    proc = run_script("download_challenges.py", "--url", server.url, "--user", "alice", "--count", 2, "-o", out,
                      "--force", "--retries", 0, "--timeout", 2)
    assert proc.returncode == 1
    assert (out / "challenge-0").read_bytes() == good
    assert not (out / "challenge-1").exists()
    assert len([l for l in proc.stderr.splitlines() if l.strip()]) == 2  # one line per file, both tried


def test_scripts_refuse_bad_arguments_in_one_line(tmp_path, server):
    proc = run_script("download_challenges.py", "--url", server.url, "--user", "a", "--count", -3, "-o", tmp_path)
    assert proc.returncode == 2 and "at least 1" in proc.stderr
    proc = run_script("submit.py", tmp_path, "--url", server.url, "--user", "a")
    assert proc.returncode == 1 and "is a folder" in proc.stderr
    (tmp_path / "empty.json").write_text(json.dumps({"solutions": []}))
    proc = run_script("submit.py", tmp_path / "empty.json", "--url", server.url, "--user", "a")
    assert proc.returncode == 1 and "no solutions" in proc.stderr
    assert server.posts == 0
