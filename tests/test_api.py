"""The shipped sample, the Python API, and ONNX export: what a new user runs first."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

import simcaptcha
from simcaptcha.challenges import load_captchas
from simcaptcha.cli import app

from .conftest import HACKMIT

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "examples" / "hackmit"
runner = CliRunner()


@pytest.fixture(scope="module")
def shipped():
    return simcaptcha.load()


def test_readme_first_command_solves_the_shipped_sample(tmp_path):
    # The README's first line: solve the sample with the shipped model, then score it.
    out = tmp_path / "solutions.json"
    r = runner.invoke(app, ["solve", str(SAMPLE), "-o", str(out)])
    assert r.exit_code == 0, r.output
    answers = {e["name"]: e["solution"] for e in json.loads(out.read_text())["solutions"]}
    labels = json.loads((SAMPLE / "labels.json").read_text())
    assert set(answers) == set(labels) and len(labels) == 40
    right = sum(answers[n] == t for n, t in labels.items())
    assert right >= 36, f"{right} of 40"  # the shipped model reads 38 of them (96.6% on all of challenge-14)
    r = runner.invoke(app, ["evaluate", str(out), "--labels", str(SAMPLE / "labels.json")])
    assert r.exit_code == 0 and f"captcha accuracy:   {right / 40:.2%}" in r.output


def test_api_reads_bytes_paths_pil_and_arrays_alike(shipped):
    path = ROOT / "examples" / "captcha.jpg"
    data = path.read_bytes()
    pil = Image.open(io.BytesIO(data))
    array = np.asarray(pil.convert("RGB"))
    answers = [shipped.solve(x) for x in (data, path, str(path), pil, array)]
    assert len({a.text for a in answers}) == 1
    assert answers[0].char_probs.shape == (4, 36)
    np.testing.assert_allclose(answers[0].char_probs.sum(-1), 1.0, rtol=1e-4)
    assert answers[0].confidence == pytest.approx(float(answers[0].char_probs.max(-1).prod()), rel=1e-5)
    d = answers[0].to_dict(top=2)
    assert d["text"] == answers[0].text and len(d["chars"]) == 4 and d["chars"][0][0]["char"] == d["text"][0]
    batch = shipped.solve_batch([data, array])
    assert [a.text for a in batch] == [answers[0].text] * 2


def test_api_names_what_is_wrong_with_an_input(shipped):
    bad = [(b"", "empty"), (b"not an image", "not a readable image"), (np.zeros((60, 160, 3), np.uint8), "160x60"),
           (np.zeros((50, 100, 3), np.float32), "uint8"), (12, "cannot read a captcha from a int"),
           (Image.new("RGB", (30, 20)), "30x20"), ("/nonexistent.png", "no such file")]
    for image, words in bad:
        with pytest.raises(ValueError, match=words):
            shipped.solve(image)


def test_examples_script_runs():
    proc = subprocess.run([sys.executable, str(ROOT / "examples" / "solve_api.py")], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "captcha.jpg: nsca" in proc.stdout and "sample: " in proc.stdout
    assert "cuInit" not in proc.stderr and "oneDNN" not in proc.stderr  # quiet start-up


def real_captchas(hackmit_dir: Path | None):
    """All 1,000 of challenge-14 where ../shared has them, else the 40 of the sample."""
    source = hackmit_dir / "challenges" / "challenge-14" if hackmit_dir else SAMPLE
    return load_captchas([source]).images()


def test_onnx_gives_the_same_answers_as_keras(tmp_path, shipped):
    pytest.importorskip("onnxruntime")
    r = runner.invoke(app, ["export", "-o", str(tmp_path / "model.onnx")])
    assert r.exit_code == 0, r.output
    onnx_solver = simcaptcha.load(tmp_path / "model.onnx")
    assert onnx_solver.backend == "onnx"
    rgb = real_captchas(HACKMIT if (HACKMIT / "challenges").is_dir() else None)
    pk, po = shipped.probabilities(rgb), onnx_solver.probabilities(rgb)
    assert np.abs(pk - po).max() < 1e-4
    assert [a.text for a in onnx_solver.solve_batch(rgb)] == [a.text for a in shipped.solve_batch(rgb)]
    # solve --model model.onnx writes the same answers as the Keras model
    for model, name in [(tmp_path / "model.onnx", "o.json"), (None, "k.json")]:
        args = ["solve", str(SAMPLE), "-o", str(tmp_path / name)] + (["--model", str(model)] if model else [])
        assert runner.invoke(app, args).exit_code == 0
    assert json.loads((tmp_path / "o.json").read_text()) == json.loads((tmp_path / "k.json").read_text())
    # the shipped model's accuracy calibration travels into the ONNX file: the same estimate
    assert onnx_solver.calibration is not None and onnx_solver.calibration == shipped.calibration
    estimates = [json.loads((tmp_path / n).with_suffix(".confidence.json").read_text())["estimated_accuracy"] for n in ("o.json", "k.json")]
    assert estimates[0] == estimates[1]


def test_onnx_solving_imports_no_tensorflow(tmp_path):
    pytest.importorskip("onnxruntime")
    assert runner.invoke(app, ["export", "-o", str(tmp_path / "m.onnx")]).exit_code == 0
    code = ("import sys, simcaptcha; s = simcaptcha.load(sys.argv[1]); a = s.solve(sys.argv[2]); "
            "print(a.text, 'tensorflow' in sys.modules, 'keras' in sys.modules)")
    proc = subprocess.run([sys.executable, "-c", code, str(tmp_path / "m.onnx"), str(ROOT / "examples" / "captcha.jpg")],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["nsca", "False", "False"]


def test_onnx_models_for_other_captchas_are_refused(tmp_path):
    onnx = pytest.importorskip("onnx")
    from simcaptcha.classifier import ClassifierConfig, build_classifier
    from simcaptcha.export import to_onnx
    from simcaptcha.onnx_backend import SPEC_KEY

    from simcaptcha.spec import legacy_spec

    proto = to_onnx(build_classifier(legacy_spec(), ClassifierConfig(filters=(4, 8), dense=8)), legacy_spec())
    spec = json.loads(next(p.value for p in proto.metadata_props if p.key == SPEC_KEY))
    spec["alphabet"] = "0123456789"
    onnx.helper.set_model_props(proto, {SPEC_KEY: json.dumps(spec)})
    (tmp_path / "other.onnx").write_bytes(proto.SerializeToString())
    (tmp_path / "junk.onnx").write_bytes(b"not onnx")
    # the spec says 10 classes, the model gives 36: not a model of that spec
    for name, words in [("other.onnx", "expected one output of shape (N, 4, 10)"), ("junk.onnx", "cannot load the ONNX model")]:
        r = runner.invoke(app, ["solve", str(SAMPLE), "-o", str(tmp_path / "s.json"), "--model", str(tmp_path / name)])
        assert r.exit_code == 1 and words in r.output, r.output


def test_the_shipped_fast_model_reads_the_sample():
    pytest.importorskip("onnxruntime")
    fast = simcaptcha.load("fast")
    assert fast.backend == "onnx" and fast.source.endswith("fast.onnx")
    sample = load_captchas([SAMPLE])
    labels = json.loads((SAMPLE / "labels.json").read_text())
    answers = fast.solve_batch([c.image for c in sample.captchas])
    right = sum(a.text == labels[c.name] for c, a in zip(sample.captchas, answers))
    assert right >= 34, f"{right} of 40"  # 37 of them when it was shipped (95.0% of all of challenge-14)


def test_a_ctc_model_exports_to_onnx_with_its_spec(tmp_path):
    """A CTC recognizer of another spec: exported, read by ONNX Runtime with its spec, same probabilities as Keras."""
    pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    from simcaptcha.classifier import ClassifierConfig, build_classifier, predict_probs
    from simcaptcha.export import export_onnx
    from simcaptcha.preprocess import preprocess
    from simcaptcha.runs import save_model_atomic
    from simcaptcha.spec import CaptchaSpec
    from simcaptcha.synth import Synthesizer

    spec = CaptchaSpec.from_flags(48, 128, "4-6", "a-z")
    model = build_classifier(spec, ClassifierConfig(filters=(4, 8, 8), dense=8, bottleneck=4))
    save_model_atomic(model, tmp_path / "m" / "classifier.keras", spec)
    assert export_onnx(tmp_path / "m", tmp_path / "m.onnx")["length"] == "4-6"
    solver = simcaptcha.load(tmp_path / "m.onnx")
    assert solver.backend == "onnx" and solver.spec == spec
    images, _ = Synthesizer(spec).render_batch(5, seed=3)
    np.testing.assert_allclose(solver.probabilities(images), predict_probs(model, preprocess(images)), atol=1e-5)
    keras_solver = simcaptcha.load(tmp_path / "m")
    assert [a.text for a in solver.solve_batch(images)] == [a.text for a in keras_solver.solve_batch(images)]


@pytest.mark.parametrize("height, width", [(48, 128), (33, 65)])  # an even and an odd number of pixels
def test_mixed_ink_models_export_with_their_per_captcha_preprocessing(tmp_path, height, width):
    """ONNX computes preprocess(ink="mixed") in its graph (a median by TopK): same input, same probabilities."""
    pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    from simcaptcha.classifier import ClassifierConfig, build_classifier, predict_probs
    from simcaptcha.export import export_onnx
    from simcaptcha.preprocess import preprocess, text_is_darker
    from simcaptcha.runs import save_model_atomic
    from simcaptcha.spec import CaptchaSpec
    from simcaptcha.synth import SynthConfig, Synthesizer

    spec = CaptchaSpec.from_flags(height, width, "4", "0-9", "mixed")
    model = build_classifier(spec, ClassifierConfig(filters=(4, 8), dense=8, bottleneck=4))
    save_model_atomic(model, tmp_path / "m" / "classifier.keras", spec)
    export_onnx(tmp_path / "m", tmp_path / "m.onnx")
    solver = simcaptcha.load(tmp_path / "m.onnx")
    assert solver.spec.ink == "mixed"
    pairs = SynthConfig(reference_size=(width, height), ground_colours=((30, 30, 90), (235, 225, 200)),
                        ink_colours=((235, 235, 210), (40, 40, 40)), lossless=True)
    images, _ = Synthesizer(spec, None, pairs).render_batch(8, seed=4)
    assert 0 < text_is_darker(images).sum() < 8  # both kinds in the batch
    np.testing.assert_allclose(solver.probabilities(images), predict_probs(model, preprocess(images, "mixed")), atol=1e-5)
