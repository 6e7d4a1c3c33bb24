"""The label-free accuracy estimate: a certainty threshold measured where labels are free, carried by the model."""

import json
import zipfile
from dataclasses import replace

import numpy as np
import pytest
from typer.testing import CliRunner

from simcaptcha.cli import app
from simcaptcha.estimate import (CALIBRATION_ENTRY, METHODS, NEGATIVE_ENTROPY, TOP_PROBABILITIES, AccuracyCalibration, calibrate,
                                 caveat, certainty, model_calibration)
from simcaptcha.files import InputError
from simcaptcha.spec import CaptchaSpec

from .conftest import assert_only_normalization_differs


def readings(rng, spec, n, right_share, sharp=8.0):
    """n captchas' slot probabilities and true texts: the share read right are sure, the rest unsure and wrong."""
    texts, probs = [], []
    for i in range(n):
        idx = rng.integers(0, spec.num_classes, spec.max_length)
        texts.append(spec.decode(idx))
        right = i < round(right_share * n)
        read = idx if right else (idx + 1) % spec.num_classes
        logits = rng.normal(0, 0.3, (spec.max_length, spec.num_classes))
        logits[np.arange(spec.max_length), read] += sharp if right else 1.5
        p = np.exp(logits)
        probs.append(p / p.sum(-1, keepdims=True))
    return np.stack(probs).astype(np.float32), texts


def test_threshold_learned_on_one_set_estimates_another():
    spec = CaptchaSpec(50, 100, 4, 4, "0123456789abcdefghij")
    rng = np.random.default_rng(0)
    probs, texts = readings(rng, spec, 400, 0.7)
    calibration = calibrate(probs, texts, spec, "400 synthetic captchas")
    assert calibration.source_accuracy == pytest.approx(0.7)
    # another set, read right far more often: the share above the threshold follows it
    other, other_texts = readings(rng, spec, 300, 0.9)
    assert calibration.estimate(other) == pytest.approx(0.9, abs=0.02)
    assert calibration.estimate(other[:0]) is None
    # a sure reading has certainty near 0, an unsure one far below
    assert certainty(other[:1])[0] > certainty(other[-1:])[0]


def test_calibration_round_trips_and_rejects_nonsense():
    c = AccuracyCalibration(-1.25, "10 synthetic captchas", 0.5)
    assert c.method == TOP_PROBABILITIES
    assert AccuracyCalibration.from_dict(json.loads(json.dumps(c.to_dict()))) == c
    # a calibration saved before the method was chosen, with or without its name, is read with negative entropy
    old = {"threshold": -0.889, "source": "2000 refined synthetic captchas", "source_accuracy": 0.9075}
    for doc in [old, {**old, "method": NEGATIVE_ENTROPY}]:
        assert AccuracyCalibration.from_dict(doc).method == NEGATIVE_ENTROPY
    for bad in [[], {"threshold": "x", "source_accuracy": 0.5}, {"threshold": 1.0, "source_accuracy": 2.0},
                {"threshold": float("nan"), "source_accuracy": 0.5}, {"threshold": 1.0, "source_accuracy": 0.5, "method": "other"}]:
        with pytest.raises(InputError):
            AccuracyCalibration.from_dict(bad)


def test_each_method_thresholds_its_own_certainty():
    spec = CaptchaSpec(50, 100, 4, 4, "0123456789abcdefghij")
    probs, texts = readings(np.random.default_rng(3), spec, 200, 0.6, sharp=3.0)
    # the top-probability certainty is the log of the captcha's confidence (product of its slots' top probabilities)
    assert np.allclose(certainty(probs), np.log(probs.max(-1).astype(np.float64)).sum(-1), atol=1e-5)
    assert not np.allclose(certainty(probs), certainty(probs, NEGATIVE_ENTROPY))
    with pytest.raises(ValueError, match="unknown certainty"):
        certainty(probs, "other")
    thresholds = {}
    for method in METHODS:
        calibration = calibrate(probs, texts, spec, "200 synthetic captchas", method)
        assert calibration.method == method and calibration.source_accuracy == pytest.approx(0.6)
        assert calibration.estimate(probs) == pytest.approx(0.6)  # on its own captchas, the share it read right
        # the threshold belongs to its method: the calibration reads captchas with that method's certainty
        assert np.array_equal(calibration.sure(probs), certainty(probs, method) > calibration.threshold)
        thresholds[method] = calibration.threshold
    assert thresholds[NEGATIVE_ENTROPY] != pytest.approx(thresholds[TOP_PROBABILITIES])


def tiny_run(tmp_path, spec):
    """A synthesizer saved as tmp_path/run and a tiny classifier trained on it: (synthesizer, its classifier.keras)."""
    from simcaptcha.classifier import ClassifierConfig, train_classifier
    from simcaptcha.synth import Synthesizer

    synth = Synthesizer(spec)
    synth.save(tmp_path / "run")
    train_classifier(ClassifierConfig(steps=2, batch_size=8, width=0.25, synthetic_pool=64), synth, tmp_path / "clf", progress=False)
    return synth, tmp_path / "clf" / "classifier.keras"


def test_calibrate_command_adds_the_calibration_and_solve_prints_the_estimate(tmp_path, spec):
    synth, model = tiny_run(tmp_path, spec)
    before = model.read_bytes()
    out = tmp_path / "calibrated" / "classifier.keras"
    result = CliRunner().invoke(app, ["calibrate", str(tmp_path / "run"), "--model", str(model), "-o", str(out), "--captchas", "100"])
    assert result.exit_code == 0, result.output
    assert model.read_bytes() == before  # the input is not touched
    calibration = model_calibration(out)
    assert calibration is not None and calibration.source == "100 synthetic captchas"
    # the weights are the same; calibrating again replaces the entry instead of adding a second one
    again = tmp_path / "again.keras"
    assert CliRunner().invoke(app, ["calibrate", str(tmp_path / "run"), "--model", str(out), "-o", str(again), "--captchas", "100",
                                    "--seed", "3"]).exit_code == 0
    with zipfile.ZipFile(again) as a, zipfile.ZipFile(model) as m:
        assert [i.filename for i in a.infolist()].count(CALIBRATION_ENTRY) == 1
        weights = [n for n in m.namelist() if n.endswith(".h5")]
        assert weights and all(a.read(n) == m.read(n) for n in weights)
    images = tmp_path / "images"
    images.mkdir()
    from PIL import Image

    for k, image in enumerate(synth.render_batch(6, 5)[0]):
        Image.fromarray(image).save(images / f"c{k}.png")
    result = CliRunner().invoke(app, ["solve", str(images), "-o", str(tmp_path / "s.json"), "--model", str(out)])
    assert result.exit_code == 0, result.output
    assert "estimated accuracy without labels" in result.output
    assert "estimated_accuracy" in json.loads((tmp_path / "s.confidence.json").read_text())
    # a model without a calibration says so instead of guessing
    result = CliRunner().invoke(app, ["solve", str(images), "-o", str(tmp_path / "t.json"), "--model", str(model)])
    assert result.exit_code == 0 and "no accuracy estimate" in result.output
    # a calibration entry that is not one is refused in one line
    broken = tmp_path / "broken.keras"
    from simcaptcha.runs import copy_model_with_entries

    copy_model_with_entries(model, broken, {CALIBRATION_ENTRY: {"threshold": "high"}})
    with pytest.raises(InputError, match="calibration"):
        model_calibration(broken)


def test_a_ctc_calibration_says_its_estimate_is_rough():
    spec = CaptchaSpec(40, 120, 2, 4, "abc")
    rng = np.random.default_rng(1)
    probs = rng.dirichlet(np.ones(spec.num_classes + 1), size=(50, 12)).astype(np.float32)  # (N, T, classes + blank)
    calibration = calibrate(probs, ["ab"] * 50, spec, "50 synthetic captchas")
    assert calibration.head == "ctc" and "CTC" in caveat(probs, spec)
    assert AccuracyCalibration.from_dict(calibration.to_dict()) == calibration
    slots = rng.dirichlet(np.ones(spec.num_classes), size=(50, spec.max_length))
    assert caveat(slots, CaptchaSpec(40, 120, 4, 4, "abc")) is None  # a slot model's estimate needs no warning


def test_a_real_students_calibration_says_its_estimate_runs_high():
    spec = CaptchaSpec(40, 120, 4, 4, "abc")
    slots = np.random.default_rng(2).dirichlet(np.ones(spec.num_classes), size=(50, spec.max_length))
    calibration = calibrate(slots, ["abca"] * 50, spec, "50 refined synthetic captchas")
    assert not calibration.student and caveat(slots, spec, calibration) is None
    student = replace(calibration, student=True)
    assert "student" in caveat(slots, spec, student) and AccuracyCalibration.from_dict(student.to_dict()) == student
    assert AccuracyCalibration.from_dict({k: v for k, v in student.to_dict().items() if k != "student"}) == calibration
    with pytest.raises(InputError, match="student"):
        AccuracyCalibration.from_dict({**student.to_dict(), "student": "yes"})


def test_calibrating_with_the_captchas_own_normalization_leaves_the_model_as_it_was(spec, synthesizer):
    from simcaptcha.classifier import ClassifierConfig, build_classifier
    from simcaptcha.estimate import calibrate_on_synthetic

    model = build_classifier(spec, ClassifierConfig(filters=(4, 8), dense=8, bottleneck=4))
    norm = model.get_layer("bn_0")
    norm.moving_mean.assign(np.full(4, 5.0, np.float32))  # as if measured on captchas far from these
    before = [w.copy() for w in model.get_weights()]
    plain = calibrate_on_synthetic(model, synthesizer, captchas=40, seed=1)
    own = calibrate_on_synthetic(model, synthesizer, captchas=40, seed=1, own_normalization=True)
    assert all(np.array_equal(a, b) for a, b in zip(before, model.get_weights()))  # the statistics are put back
    assert own.source.endswith("normalized on them") and not plain.source.endswith("normalized on them")
    assert own.threshold != plain.threshold  # read with their own statistics, the captchas look otherwise to the model


def test_adapt_measures_the_normalization_on_real_captchas_and_calibrate_then_reads_synthetic_ones_normalized_on_them(tmp_path, spec):
    import keras
    from PIL import Image

    from simcaptcha.classifier import ADAPTED_ENTRY
    from simcaptcha.runs import model_entry

    synth, model = tiny_run(tmp_path, spec)
    before = model.read_bytes()
    real = tmp_path / "real"
    real.mkdir()
    for k, image in enumerate(synth.render_batch(12, 9)[0]):
        Image.fromarray(255 - image).save(real / f"c{k}.png")  # another look: the normalization has something to learn
    (real / "broken.png").write_bytes(b"not an image")
    out = tmp_path / "adapted"
    result = CliRunner().invoke(app, ["adapt", str(real), "--model", str(model), "-o", str(out), "--captchas", "10"])
    assert result.exit_code == 0, result.output
    assert "broken.png" in result.output and "measured on 10 real captchas" in result.output  # the bad file is one line
    assert model.read_bytes() == before and (out / "spec.json").is_file()
    assert model_entry(out / "classifier.keras", ADAPTED_ENTRY, "AdaBN record") == {"captchas": 10}
    assert_only_normalization_differs(keras.models.load_model(out / "classifier.keras", compile=False), keras.models.load_model(model, compile=False))
    # calibrating the adapted model normalizes the synthetic captchas on themselves, as the real ones were
    result = CliRunner().invoke(app, ["calibrate", str(tmp_path / "run"), "--model", str(out), "-o", str(tmp_path / "cal.keras"), "--captchas", "100"])
    assert result.exit_code == 0, result.output
    assert model_calibration(tmp_path / "cal.keras").source == "100 synthetic captchas, normalized on them"
    # the output folder may not hold the model it reads, and captchas of another size are refused in one line
    result = CliRunner().invoke(app, ["adapt", str(real), "--model", str(model), "-o", str(tmp_path / "clf")])
    assert result.exit_code != 0 and model.read_bytes() == before
    small = tmp_path / "small"
    small.mkdir()
    Image.new("RGB", (30, 20)).save(small / "x.png")
    result = CliRunner().invoke(app, ["adapt", str(small), "--model", str(model), "-o", str(tmp_path / "other")])
    assert result.exit_code != 0 and "30x20" in result.output
