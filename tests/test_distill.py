"""Distillation: a student learns a teacher's readings, the run folder resumes, and the CLI runs end to end."""

from __future__ import annotations

import json

import numpy as np
from typer.testing import CliRunner

from simcaptcha.classifier import ClassifierConfig, build_classifier, predict_probs
from simcaptcha.cli import app
from simcaptcha.distill import DistillConfig, distill_classifier


def agreement(a, b, x):
    return float((predict_probs(a, x).argmax(-1) == predict_probs(b, x).argmax(-1)).mean())


def test_student_learns_the_teachers_readings(tmp_path, synthesizer, spec):
    import keras

    keras.utils.set_random_seed(1)
    teacher = build_classifier(spec, ClassifierConfig(filters=(4, 8), dense=8, bottleneck=4))
    from simcaptcha.preprocess import preprocess

    images, _ = synthesizer.render_batch(256, seed=5)
    x = preprocess(images)
    cfg = DistillConfig(steps=150, batch_size=32, width=0.25, shift=0, eval_every=10_000, checkpoint_every=50)
    distill_classifier(cfg, teacher, spec, x, tmp_path / "student", progress=False, log=lambda *_: None)
    student = keras.models.load_model(tmp_path / "student" / "classifier.keras", compile=False)
    fresh = build_classifier(spec, ClassifierConfig(width=0.25))
    # A random teacher's picks are arbitrary: only learning them makes the student agree.
    assert agreement(student, teacher, x) > agreement(fresh, teacher, x) + 0.2
    assert json.loads((tmp_path / "student" / "config.json").read_text())["steps"] == 150
    # resuming a finished run trains nothing more and keeps the weights
    before = [w.copy() for w in student.get_weights()]
    distill_classifier(cfg, teacher, spec, x, tmp_path / "student", resume=True, progress=False, log=lambda *_: None)
    after = keras.models.load_model(tmp_path / "student" / "classifier.keras", compile=False).get_weights()
    assert all(np.array_equal(a, b) for a, b in zip(before, after))


def test_distill_command_end_to_end(tmp_path, challenge_dir, spec):
    from simcaptcha.runs import save_model_atomic

    teacher = build_classifier(spec, ClassifierConfig(filters=(4, 8), dense=8, bottleneck=4))
    save_model_atomic(teacher, tmp_path / "teacher.keras", spec)
    r = CliRunner().invoke(app, ["distill", str(challenge_dir), "-o", str(tmp_path / "fast"), "--teacher", str(tmp_path / "teacher.keras"),
                                 "--steps", "3", "--width", "0.25", "--conv1-stride", "2", "--synthetic", "64",
                                 "--eval-real", str(challenge_dir / "challenge-1"), "--eval-labels", str(challenge_dir.parent / "labels.json")])
    assert r.exit_code == 0, r.output
    assert "real_captcha_acc" in r.output and (tmp_path / "fast" / "classifier.keras").is_file()
    r = CliRunner().invoke(app, ["solve", str(challenge_dir), "-o", str(tmp_path / "s.json"), "--model", str(tmp_path / "fast")])
    assert r.exit_code == 0 and "solved 40 captchas" in r.output, r.output


def test_a_ctc_teacher_is_distilled_column_by_column(tmp_path):
    import keras

    from simcaptcha.classifier import is_ctc
    from simcaptcha.preprocess import preprocess
    from simcaptcha.spec import CaptchaSpec
    from simcaptcha.synth import Synthesizer

    spec = CaptchaSpec.from_flags(32, 96, "3-5", "a-f")
    synth = Synthesizer(spec)
    keras.utils.set_random_seed(2)
    teacher = build_classifier(spec, ClassifierConfig(filters=(4, 8), dense=8, bottleneck=4, head="ctc"))
    output = teacher.get_layer("ctc")
    output.kernel.assign(output.kernel * 40.0)  # a random teacher with sure, varied column readings
    images, _ = synth.render_batch(64, seed=2)
    x = preprocess(images)
    pool = synth.render_batch(16, seed=3)
    synthetic = (preprocess(pool[0]), synth.labels(pool[1]))
    cfg = DistillConfig(steps=80, batch_size=16, width=0.5, filters=(4, 8), shift=0, eval_every=10_000, checkpoint_every=20,
                        synthetic_fraction=0.25)
    distill_classifier(cfg, teacher, spec, x, tmp_path / "student", synthetic=synthetic, progress=False, log=lambda *_: None)
    student = keras.models.load_model(tmp_path / "student" / "classifier.keras", compile=False)
    assert is_ctc(student, spec) and student.outputs[0].shape[1:] == teacher.outputs[0].shape[1:]
    fresh = build_classifier(spec, ClassifierConfig(width=0.5, filters=(4, 8), head="ctc"))
    # the student's column distributions are closer to the teacher's (cross-entropy) than a fresh network's
    target = predict_probs(teacher, x)

    def cross_entropy(model):
        return float(-(target * np.log(predict_probs(model, x) + 1e-9)).sum(-1).mean())

    assert cross_entropy(student) < cross_entropy(fresh) - 0.01
    assert agreement(student, teacher, x) > agreement(fresh, teacher, x)
