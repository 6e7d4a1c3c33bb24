"""The domain-gap score, label preservation and the refiner's health alarms, on data where the gap is known."""

from __future__ import annotations

import numpy as np

from simcaptcha.domaingap import GapReport, gap_score, health_alarms, label_preservation, measure_gap, roc_auc
from simcaptcha.preprocess import preprocess


def test_roc_auc():
    assert roc_auc(np.array([3.0, 4.0]), np.array([1.0, 2.0])) == 1.0
    assert roc_auc(np.array([1.0, 2.0]), np.array([3.0, 4.0])) == 0.0
    assert roc_auc(np.array([1.0, 1.0]), np.array([1.0, 1.0])) == 0.5
    rng = np.random.default_rng(0)
    assert abs(roc_auc(rng.normal(size=2000), rng.normal(size=2000)) - 0.5) < 0.05


def shifted(x, amount=0.5):
    return np.clip(x + amount, -1, 1).astype(np.float32)


def test_gap_score_sees_a_known_gap_and_no_gap(synthesizer):
    a = preprocess(synthesizer.render_batch(300, seed=1)[0])
    b = preprocess(synthesizer.render_batch(300, seed=2)[0])
    real = shifted(a)  # "real" captchas: the synthetic ones, brighter
    assert gap_score(real, b, steps=150, critics=1) > 0.9  # synthetic against real: easy to tell apart
    assert gap_score(real, shifted(b), steps=150, critics=1) < 0.7  # the same shift applied: hard to tell


def test_alarms_a_refiner_that_returns_its_input_and_stays_quiet_otherwise(synthesizer):
    a = preprocess(synthesizer.render_batch(300, seed=1)[0])
    b = preprocess(synthesizer.render_batch(300, seed=2)[0])
    real = shifted(a)
    frozen = measure_gap(real, b, b.copy(), steps=150, critics=1)  # a refiner that returns its input
    assert frozen.mean_change == 0 and frozen.refined_gap > 0.9
    assert any("returns its input" in line for line in health_alarms(frozen))
    working = measure_gap(real, b, shifted(b), steps=150, critics=1)  # a refiner that closed the gap
    assert working.refined_gap < working.synthetic_gap - 0.2
    assert health_alarms(working) == []
    # a refiner whose output a critic tells from real more easily than the unrefined captchas
    assert any("away from the real ones" in line for line in health_alarms(GapReport(0.80, 0.95, 0.05)))
    assert not any("away from the real ones" in line for line in health_alarms(GapReport(0.80, 0.81, 0.05)))


def test_label_and_discriminator_alarms():
    texts = ["ab12", "cd34", "ef56", "gh78"]
    read_all = lambda x: texts  # noqa: E731 - reads every synthetic captcha right
    kept = label_preservation(lambda x: texts if x.mean() < 0 else ["zzzz"] * 4, -np.ones((4, 1)), np.ones((4, 1)), texts)
    assert kept == {"synthetic_acc": 1.0, "refined_acc": 0.0, "kept": 0.0}
    assert label_preservation(read_all, np.zeros((4, 1)), np.zeros((4, 1)), texts)["kept"] == 1.0
    report = GapReport(0.9, 0.6, 0.05, kept_labels=0.5)
    assert any("destroys labels" in line for line in health_alarms(report))
    # moved toward the real captchas, the raw reader fails on them, but a reader of refined captchas learns them:
    # the labels are there (the second style: 51% kept, refined view 53.1% against raw 53.7%; refined beat raw by 12 points)
    assert not any("destroys labels" in line for line in health_alarms(GapReport(0.96, 0.87, 0.05, kept_labels=0.51, learnable=0.99)))
    assert any("learns 40%" in line for line in health_alarms(GapReport(0.96, 0.87, 0.05, kept_labels=0.51, learnable=0.4)))
    assert any("wins outright" in line for line in health_alarms(None, [0.01] * 60))
    assert health_alarms(None, [0.01] * 40 + [0.5] + [0.01] * 40) == []


def test_refine_train_reports_the_gap(tmp_path, synthesizer, background):
    from simcaptcha.preprocess import save_background
    from simcaptcha.simgan import SimGANConfig, train_refiner

    save_background(background, tmp_path / "mask.png")
    real = shifted(preprocess(synthesizer.render_batch(200, seed=3)[0]))
    cfg = SimGANConfig(steps=4, pretrain_refiner_steps=2, pretrain_disc_steps=2, batch_size=8, features=4, blocks=1,
                       disc_features=4, history_size=32, sample_every=100,
                       gap_every=3, gap_steps=20, gap_size=100, gap_critics=1)
    lines = []
    result = train_refiner(cfg, real, synthesizer, tmp_path / "run", progress=False, log=lines.append)
    import json

    gap = json.loads((tmp_path / "run" / "gap.json").read_text())
    assert 0.0 <= gap["synthetic_gap"] <= 1.0 and gap["mean_change"] >= 0 and "alarms" in gap
    assert result["gap"]["refined_gap"] == gap["refined_gap"]
    assert any(line.startswith("domain gap") for line in lines)
    assert (tmp_path / "run" / "samples" / "latest.png").is_file()
