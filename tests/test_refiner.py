"""Refiner and discriminator shapes, losses, the history buffer, and refine-train with kill + resume."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import tensorflow as tf
from typer.testing import CliRunner

from simcaptcha.cli import app
from simcaptcha.refiner import (
    ImageHistoryBuffer,
    RefinerConfig,
    build_discriminator,
    build_refiner,
    discriminator_loss,
    refiner_adversarial_loss,
    self_regularization_loss,
)
from simcaptcha.runs import RunDir

TINY = RefinerConfig(features=4, blocks=1, disc_features=4)


def test_refiner_keeps_shape_and_range():
    refiner = build_refiner(TINY)
    x = tf.random.uniform((3, 50, 100, 1), -1, 1)
    y = refiner(x)
    assert y.shape == (3, 50, 100, 1)
    assert float(tf.reduce_max(tf.abs(y))) <= 1.0
    assert [l.name for l in refiner.layers if "block" in l.name and "skip" in l.name] == ["block_0_skip"]


def test_discriminator_outputs_a_patch_grid():
    disc = build_discriminator(TINY)
    logits = disc(tf.zeros((2, 50, 100, 1)))
    assert logits.shape[0] == 2 and logits.shape[-1] == 1
    assert logits.shape[1] * logits.shape[2] > 100  # many local patches, not one global verdict


def test_losses():
    x = tf.zeros((2, 4, 4, 1))
    assert float(self_regularization_loss(x, x)) == 0.0
    assert abs(float(self_regularization_loss(x, x + 0.5)) - 0.5) < 1e-6
    confident_real = tf.fill((2, 3, 3, 1), 10.0)
    confident_fake = tf.fill((2, 3, 3, 1), -10.0)
    assert float(refiner_adversarial_loss(confident_real)) < 1e-3
    assert float(refiner_adversarial_loss(confident_fake)) > 5
    assert float(discriminator_loss(confident_real, confident_fake)) < 1e-3
    assert float(discriminator_loss(confident_fake, confident_real)) > 10
    # averaged over patches: one wrong patch of nine costs a ninth
    mixed = tf.concat([tf.fill((1, 1, 1, 1), -10.0), tf.fill((1, 1, 8, 1), 10.0)], axis=2)
    assert abs(float(refiner_adversarial_loss(mixed)) - 10 / 9) < 0.01


def test_history_buffer_mixes_half_old_half_new():
    buf = ImageHistoryBuffer(capacity=10, seed=0)
    first = np.full((4, 2, 2, 1), 1.0)
    assert np.array_equal(buf.mix(first), first)  # empty buffer: passes through while filling
    assert buf.size == 2
    second = np.full((4, 2, 2, 1), 2.0)
    out = buf.mix(second)
    assert out.shape == second.shape
    assert (out[:2] == 2.0).all() and (out[2:] == 1.0).all()  # first half new, second half from history
    assert buf.size == 4
    for value in range(3, 20):
        buf.mix(np.full((4, 2, 2, 1), float(value)))
    assert buf.size == 10  # capacity holds; new images replaced old ones at random places
    assert set(np.unique(buf.state())) - {1.0, 2.0}
    restored = ImageHistoryBuffer(capacity=10)
    restored.restore(buf.state())
    assert np.array_equal(restored.state(), buf.state())
    with pytest.raises(ValueError):
        ImageHistoryBuffer(0)


def tiny_args(real, out):
    return [
        "refine-train", "--real", str(real), "-o", str(out), "--steps", "6", "--batch-size", "4",
        "--features", "4", "--blocks", "1", "--pretrain-refiner", "3", "--pretrain-disc", "2",
        "--history-size", "16", "--sample-every", "5", "--checkpoint-every", "2", "--seed", "1",
        "--gap-steps", "4", "--gap-critics", "1", "--gap-size", "32",  # tests/test_domaingap.py checks the score itself
    ]


def test_refine_train_and_refine(tmp_path, challenge_dir):
    result = CliRunner().invoke(app, [*tiny_args(challenge_dir, tmp_path / "run"), "--synthetic-pool", "12"])
    assert result.exit_code == 0, result.output
    run = tmp_path / "run"
    assert (run / "refiner.keras").is_file() and (run / "mask.png").is_file()
    config = json.loads((run / "config.json").read_text())
    assert config["steps"] == 6 and config["synthetic_pool"] == 12
    assert (run / "samples" / "latest.png").is_file()
    assert any((run / "logs").iterdir())

    CliRunner().invoke(app, ["synth", "5", "-o", str(tmp_path / "syn"), "--mask", str(run / "mask.png")])
    result = CliRunner().invoke(app, ["refine", str(tmp_path / "syn"), "-o", str(tmp_path / "ref"), "--refiner", str(run / "refiner.keras")])
    assert result.exit_code == 0, result.output
    labels = json.loads((tmp_path / "ref" / "labels.json").read_text())
    assert len(labels) == 5 and all((tmp_path / "ref" / k).is_file() for k in labels)
    assert list(labels.values()) == list(json.loads((tmp_path / "syn" / "labels.json").read_text()).values())


def test_refine_train_resumes_after_kill(tmp_path, challenge_dir):
    out = tmp_path / "run"
    args = tiny_args(challenge_dir, out)
    args[args.index("6")] = "40"  # long enough to be killed part way
    cmd = [sys.executable, "-c", "from simcaptcha.cli import main; main()", *args]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 240
    run = RunDir(out)
    while time.time() < deadline and not run.has_checkpoint():
        time.sleep(0.2)
    time.sleep(1.0)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert run.has_checkpoint(), "no checkpoint was written before the kill"
    with np.load(run.checkpoint_path) as data:
        killed_at = int(data["step"])
    assert 0 < killed_at < 45 and not (out / "refiner.keras").exists()

    result = CliRunner().invoke(app, ["refine-train", "--real", str(challenge_dir), "-o", str(out), "--resume"])
    assert result.exit_code == 0, result.output
    assert f"resuming from step {killed_at} of 45" in result.output
    with np.load(run.checkpoint_path) as data:
        assert int(data["step"]) == 45  # 3 + 2 pretraining steps + 40 adversarial ones, none repeated or lost
        assert data["extra/history"].shape[0] > 0
    assert (out / "refiner.keras").is_file()


def test_refine_train_errors(tmp_path, challenge_dir):
    r = CliRunner().invoke(app, ["refine-train", "--real", str(tmp_path / "absent"), "-o", str(tmp_path / "o")])
    assert r.exit_code != 0 and "no such file" in r.output
    bad = tmp_path / "wrong-size"
    bad.mkdir()
    from PIL import Image

    Image.new("RGB", (64, 64)).save(bad / "a.png")
    Image.new("RGB", (100, 50)).save(bad / "b.png")
    r = CliRunner().invoke(app, ["refine-train", "--real", str(bad), "-o", str(tmp_path / "o")])
    assert r.exit_code != 0 and "64x64" in r.output and "100x50" in r.output and "Traceback" not in r.output
    (bad / "b.png").unlink()  # one captcha: too few to estimate a background from
    r = CliRunner().invoke(app, ["refine-train", "--real", str(bad), "-o", str(tmp_path / "o")])
    assert r.exit_code != 0 and "at least 3 captchas" in r.output and "Traceback" not in r.output


def test_refined_pool_holds_its_refiners_output_and_needs_a_refiner(tmp_path, spec, background):
    from simcaptcha.classifier import ClassifierConfig, train_classifier
    from simcaptcha.refiner import refine_images, refine_pool
    from simcaptcha.synth import Synthesizer, render_pool

    refiner = build_refiner(TINY)
    synth = Synthesizer(spec, background)
    pool = render_pool(synth, 6, seed=1, workers=1)
    refined = refine_pool(pool, refiner, "refiner.keras", batch_size=4)  # two batches, the last one short
    assert refined.refined_by == "refiner.keras" and pool.refined_by is None
    assert np.allclose(refined.x, refine_images(refiner, pool.x), atol=1e-5)
    assert not np.allclose(refined.x, pool.x) and np.array_equal(refined.labels, pool.labels)
    cfg = ClassifierConfig(steps=2, batch_size=4, eval_every=2, val_size=4)
    with pytest.raises(ValueError, match="refined by"):
        train_classifier(cfg, synth, tmp_path / "run", pool=refined, progress=False, log=lambda *_: None)


def test_a_run_that_renders_its_own_pool_refines_it_once(tmp_path, spec, monkeypatch):
    import keras

    import simcaptcha.classifier as classifier
    from simcaptcha.classifier import ClassifierConfig, train_classifier
    from simcaptcha.refiner import refine_pool
    from simcaptcha.synth import Synthesizer, render_pool

    refiner = build_refiner(TINY)
    synth = Synthesizer(spec)
    cfg = ClassifierConfig(steps=2, batch_size=4, eval_every=2, val_size=4, width=0.25, synthetic_pool=8, seed=3)
    given = refine_pool(render_pool(synth, 8, seed=cfg.seed, workers=1), refiner, "r")
    train_classifier(cfg, synth, tmp_path / "given", refiner=refiner, pool=given, progress=False, log=lambda *_: None)

    calls = []
    monkeypatch.setattr(classifier, "refine_pool", lambda *a, **k: calls.append(a) or refine_pool(*a, **k))
    train_classifier(cfg, synth, tmp_path / "own", refiner=refiner, progress=False, log=lambda *_: None)
    assert len(calls) == 1
    weights = [keras.models.load_model(tmp_path / d / "classifier.keras", compile=False).get_weights() for d in ("given", "own")]
    assert all(np.allclose(a, b, atol=1e-5) for a, b in zip(*weights))
