"""The one-command pipeline, end to end with tiny step counts; pseudo-label filtering on its own."""

import json

import keras
import numpy as np
import pytest
from typer.testing import CliRunner

from simcaptcha.classifier import ADAPTED_ENTRY
from simcaptcha.cli import app
from simcaptcha.estimate import model_calibration
from simcaptcha.runs import model_entry
from simcaptcha.selftrain import agreeing_pseudo_labels, class_balance_weights, pseudo_label_accuracy, reweight

from .conftest import assert_only_normalization_differs


ALPHABET = "0123456789abcdefghijklmnopqrstuvwxyz"


@pytest.fixture(autouse=True)
def quick_refiner_stage(monkeypatch):
    """The refiner stage's pretraining and domain-gap critics at a few steps, as its other steps here:
    tests/test_domaingap.py checks the gap score and its alarms themselves."""
    from dataclasses import replace

    import simcaptcha.pipeline as pipeline

    full = pipeline.Pipeline.simgan_config
    quick = dict(pretrain_refiner_steps=2, pretrain_disc_steps=2, gap_steps=4, gap_critics=1, gap_size=32)
    monkeypatch.setattr(pipeline.Pipeline, "simgan_config", lambda self: replace(full(self), **quick))


def one_hot_probs(texts, confidence):
    probs = np.full((len(texts), 4, 36), (1 - confidence) / 35)
    for i, t in enumerate(texts):
        probs[i, np.arange(4), [ALPHABET.index(c) for c in t]] = confidence
    return probs


def test_pseudo_labels_need_agreement_and_confidence():
    x = np.zeros((3, 50, 100, 1), np.float32)
    a = one_hot_probs(["abcd", "abcd", "1234"], 0.99)
    b = np.concatenate([one_hot_probs(["abcd"], 0.99), one_hot_probs(["abce"], 0.99), one_hot_probs(["1234"], 0.5)])
    kept = agreeing_pseudo_labels(x, ["n0", "n1", "n2"], a, b, threshold=0.9, alphabet=ALPHABET, min_chars=2)
    # n0: all four agree; n1: the last character disagrees; n2: view b is unsure of everything
    assert kept.names == ["n0", "n1"] and kept.texts == ["abcd", "abc?"] and kept.considered == 3
    assert kept.labels[1, 3] == -1 and kept.known_chars == 7
    acc = pseudo_label_accuracy(kept, {"n0": "abcd", "n1": "abzz"})
    assert acc["known_chars"] == 7 and acc["char_precision"] == 6 / 7
    assert acc["full_captchas"] == 1 and acc["full_captcha_precision"] == 1.0
    assert pseudo_label_accuracy(kept, {"other": "abcd"})["char_precision"] is None


def test_class_balance_undoes_a_shared_bias():
    # 36 classes drawn uniformly; the classifier reads a third of the true "l"s (21) as "i" (18), a little unsure
    rng = np.random.default_rng(0)
    truth = rng.integers(0, 36, (3000, 4))
    probs = np.full((3000, 4, 36), 0.02 / 35)
    np.put_along_axis(probs, truth[..., None], 0.98, axis=-1)
    biased = (truth == 21) & (rng.random(truth.shape) < 0.34)
    probs[biased, 21], probs[biased, 18] = 0.3, 0.7
    probs /= probs.sum(-1, keepdims=True)
    assert (probs.argmax(-1) == truth).mean() < 0.995
    w = class_balance_weights(probs)
    assert w[21] > w[18]  # the under-picked class is weighted up against the one that takes its glyphs
    fixed = reweight(probs, w)
    np.testing.assert_allclose(fixed.sum(-1), 1.0, rtol=1e-6)
    assert (fixed.argmax(-1) == truth).mean() > 0.999


def test_class_balance_stays_finite_when_a_class_is_never_read():
    # a reader that never reads class 0 (a tiny or degenerate run): its weight grows every pass, but stays finite
    rng = np.random.default_rng(1)
    probs = rng.dirichlet(np.ones(36), (200, 4))
    probs[..., 0] = 0.0
    probs /= probs.sum(-1, keepdims=True)
    for ctc, p in ((False, probs), (True, np.concatenate([probs * 0.5, np.full((200, 4, 1), 0.5)], -1))):
        w = class_balance_weights(p, ctc=ctc)
        assert np.isfinite(w).all() and w[0] == w.max()
        fixed = reweight(p, w)
        assert np.isfinite(fixed).all()
        np.testing.assert_allclose(fixed.sum(-1), 1.0, rtol=1e-5)


def test_class_balance_for_ctc_moves_characters_not_blanks():
    # CTC frames (N, T, 36 + blank): each text of 4 characters at frames 1, 3, 5, 7, blank between.
    # The reader takes a third of the zeros (class 26) for o (class 14): balancing must read them as
    # zeros again without changing how many characters each captcha reads.
    from simcaptcha.classifier import ctc_best_path

    rng = np.random.default_rng(0)
    truth = rng.integers(0, 36, (3000, 4))
    probs = np.full((3000, 9, 37), 0.02 / 36)
    probs[:, :, 36] = 0.98
    for k, t in enumerate((1, 3, 5, 7)):
        probs[np.arange(3000), t, 36] = 0.02 / 36
        probs[np.arange(3000), t, truth[:, k]] = 0.98
    biased = (truth == 26) & (rng.random(truth.shape) < 0.34)
    rows, ks = np.nonzero(biased)
    frames = 2 * ks + 1
    probs[rows, frames, 26], probs[rows, frames, 14] = 0.3, 0.68
    probs /= probs.sum(-1, keepdims=True)

    def reads(p):
        return [[c for c, _ in r] for r in ctc_best_path(p)[0]]

    before = reads(probs)
    assert np.mean([r == list(t) for r, t in zip(before, truth)]) < 0.97
    w = class_balance_weights(probs, ctc=True, stop_within=3.0)
    assert w.shape == (36,) and w[26] > w[14]
    fixed = reweight(probs, w)
    np.testing.assert_allclose(fixed.sum(-1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(fixed[..., 36], probs[..., 36], rtol=1e-5)  # the blank keeps its probability
    after = reads(fixed)
    assert all(len(r) == 4 for r in after)
    assert np.mean([r == list(t) for r, t in zip(after, truth)]) > 0.995


def test_whole_text_pseudo_labels_for_ctc():
    from simcaptcha.selftrain import agreeing_texts
    from simcaptcha.spec import CaptchaSpec

    spec = CaptchaSpec.from_flags(40, 120, "3-5", "a-z")
    x = np.zeros((4, 40, 120, 1), np.float32)
    texts_a, texts_b = ["abc", "abcd", "xyz", "ab"], ["abc", "abce", "xyz", "ab"]
    conf_a, conf_b = np.array([0.9, 0.9, 0.9, 0.9]), np.array([0.9, 0.9, 0.05, 0.9])
    kept = agreeing_texts(x, ["n0", "n1", "n2", "n3"], texts_a, conf_a, texts_b, conf_b, 0.5, spec)
    # n1 disagrees, n2 is unsure (0.05 ** (1/3) < 0.5), n3 is shorter than the spec allows
    assert kept.names == ["n0"] and kept.texts == ["abc"]
    assert kept.labels.shape == (1, 5) and list(kept.labels[0]) == [0, 1, 2, -1, -1]


def test_unknown_characters_are_left_out_of_the_loss(tmp_path, spec):
    from simcaptcha.classifier import ClassifierConfig, train_classifier
    from simcaptcha.synth import Synthesizer

    x = np.zeros((8, 50, 100, 1), np.float32)
    y = np.full((8, 4), -1, np.int32)  # nothing known: the real half of each batch adds no loss
    cfg = ClassifierConfig(steps=2, batch_size=4, filters=(4, 8), dense=8, bottleneck=4, eval_every=2, val_size=8)
    metrics = train_classifier(cfg, Synthesizer(spec), tmp_path, extra_data=(x, y), extra_fraction=0.5, progress=False, log=lambda *_: None)
    assert (tmp_path / "classifier.keras").is_file() and "val/synthetic_char_acc" in metrics


def test_pipeline_end_to_end(tmp_path, challenge_dir, monkeypatch):
    import simcaptcha.pipeline as pipeline

    # Tiny models rarely agree on two characters of a captcha; keep every captcha so the rounds train.
    agree = pipeline.agreeing_pseudo_labels
    monkeypatch.setattr(pipeline, "agreeing_pseudo_labels", lambda *a, **k: agree(*a, **{**k, "min_chars": 0}))
    held_out = challenge_dir.parent / "held"
    held_out.mkdir()
    (challenge_dir / "challenge-1").rename(held_out / "challenge-1")
    args = [
        "pipeline", str(challenge_dir), str(held_out), "-o", str(tmp_path / "out"),
        "--eval-real", str(held_out), "--eval-labels", str(challenge_dir.parent / "labels.json"),
        "--refiner-steps", "2", "--classifier-steps", "4", "--raw-view-steps", "3", "--selftrain-steps", "2", "--min-pseudo-labels", "1", "--synthetic-pool", "300", "--width", "0.5", "--calibration-captchas", "100", "--rounds", "2", "--threshold", "0",
    ]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    out = tmp_path / "out"
    report = json.loads((out / "report.json").read_text())
    assert report["training_captchas"] == 20  # the held-out file never reaches training
    assert len(report["rounds"]) == 2
    pseudo = report["pseudo_labels"]
    assert pseudo["considered"] == 20 and pseudo["kept"] == 20
    assert sorted(report["rounds"][0]["class_weights"]) == ["a", "b"]  # each view's prior correction is reported
    assert pseudo["held_out"]["considered"] == 20
    for f in ["selftrain_1_a/classifier.keras", "selftrain_1_b/classifier.keras", "selftrain_2_a/classifier.keras", "model/classifier.keras", "model/refiner.keras", "model/mask.png", "solutions.json", "refiner/samples/latest.png"]:
        assert (out / f).is_file(), f
    assert len(json.loads((out / "solutions.json").read_text())["solutions"]) == 40
    assert set(report["stage_seconds"]) >= {"look", "synth", "refine-train", "solve"}
    assert json.loads((out / "pipeline.json").read_text())["synthetic_pool"] == 300
    for view in ["classifier_refined", "classifier_raw", "selftrain_2_a"]:  # --width reaches both views and their rounds
        model = keras.models.load_model(out / view / "classifier.keras", compile=False)
        assert model.get_layer("conv_0").get_config()["filters"] == 8, view
    # the final model averages both views, and is scored on the held-out captchas
    assert report["final"]["averaged_views"] is True and 0 <= report["final"]["val/real_captcha_acc"] <= 1
    # the final model carries its accuracy calibration; the pipeline prints and reports the label-free estimate
    calibration = model_calibration(out / "model/classifier.keras")
    # (AdaBN is on by default: the calibration captchas are read with their own normalization statistics)
    assert calibration is not None and calibration.source == "100 refined synthetic captchas, normalized on them" and not calibration.student
    assert 0 <= report["estimated_accuracy"] <= 1 and 0 <= report["final"]["val/real_estimated_acc"] <= 1
    assert "estimated accuracy without labels" in result.output
    final = keras.models.load_model(out / "model/classifier.keras", compile=False)
    assert {"member_0", "member_1"} <= {layer.name for layer in final.layers}
    assert model_entry(out / "model/classifier.keras", ADAPTED_ENTRY, "AdaBN record") == {"captchas": 20}  # the file says so
    # AdaBN: the final model's members keep their views' trained weights but normalize with statistics measured
    # on the real captchas, while the view files keep the trained statistics
    assert_only_normalization_differs(final.get_layer("member_0"), keras.models.load_model(out / "selftrain_2_a/classifier.keras", compile=False))

    # resume adds a round to the finished run without training the earlier stages again
    report["stage_seconds"]["self-train 2"] = 1000.0  # marks the earlier run's time of the round resumed below
    (out / "report.json").write_text(json.dumps(report))
    result = CliRunner().invoke(app, [*args[:-2], "--rounds", "3", "--threshold", "0", "--real-fraction", "0.75", "--erase", "2", "--resume"])
    assert result.exit_code == 0, result.output
    assert "train (refined): done before, kept" in result.output
    assert "self-train 1: done before, kept" in result.output
    resumed = json.loads((out / "report.json").read_text())
    assert len(resumed["rounds"]) == 3
    assert json.loads((out / "pipeline.json").read_text())["selftrain_fraction"] == 0.75
    round_3 = json.loads((out / "selftrain_3_a" / "config.json").read_text())
    assert round_3["extra_erase"] == 2 and round_3["extra_erase_side"] >= 1  # the new round erases boxes
    # kept stages report the earlier run's time and pseudo-label figures, not the ~0 s of skipping them
    for stage in ["refine-train", "train (refined)", "train (raw view)", "self-train 1"]:
        assert resumed["stage_seconds"][stage] == report["stage_seconds"][stage]
    assert resumed["rounds"][0] == report["rounds"][0]
    # round 2 trained its refined view in the first run and its raw view now: both times count
    assert resumed["stage_seconds"]["self-train 2"] > 1000.0
    assert resumed["seconds_this_run"] <= resumed["total_seconds"]

    # resuming a finished run trains nothing, so it renders no synthetic pool either
    result = CliRunner().invoke(app, [*args[:-2], "--rounds", "3", "--threshold", "0", "--real-fraction", "0.75", "--resume"])
    assert result.exit_code == 0, result.output
    assert "synth: done before, kept" in result.output and "synth pool" not in result.output
    assert json.loads((out / "report.json").read_text())["stage_seconds"]["synth"] == resumed["stage_seconds"]["synth"]

    # resumed with another --width, the next views are fresh classifiers of that width, not fine-tuned
    result = CliRunner().invoke(app, [*args[:-2], "--threshold", "0", "--rounds", "4", "--width", "0.75", "--student-steps", "3", "--resume"])
    assert result.exit_code == 0, result.output
    assert result.output.count("learns from scratch") == 2  # round 3's raw view and round 4's refined view
    for view in ["selftrain_3_b", "selftrain_4_a"]:
        model = keras.models.load_model(out / view / "classifier.keras", compile=False)
        assert model.get_layer("conv_0").get_config()["filters"] == 12, view
        assert json.loads((out / view / "config.json").read_text())["steps"] == 3
    assert json.loads((out / "report.json").read_text())["final"]["averaged_views"] is True

    # fresh students, each on the confident reads of the real captchas by the model before it; the last is the final model
    students = [*args[:-2], "--threshold", "0", "--rounds", "4", "--width", "0.75", "--student-steps", "3", "--resume",
                "--real-students", "2", "--real-student-steps", "3"]
    result = CliRunner().invoke(app, students)
    assert result.exit_code == 0, result.output
    assert "self-train 4: done before, kept" in result.output and "final model: student 2" in result.output
    report = json.loads((out / "report.json").read_text())
    assert [s["considered"] for s in report["students"]] == [20, 20] and report["students"][1]["held_out"]["considered"] == 20
    assert report["final"]["averaged_views"] is False
    seeds = set()
    for i in (1, 2):
        config = json.loads((out / f"round_4_student_{i}" / "config.json").read_text())
        assert config["steps"] == 3 and config["extra_shift"] == 2
        seeds.add(config["seed"])
    assert len(seeds) == 2
    final = keras.models.load_model(out / "model/classifier.keras", compile=False)
    last = keras.models.load_model(out / "round_4_student_2/classifier.keras", compile=False)
    assert_only_normalization_differs(final, last)  # the last student's weights, its normalization adapted (AdaBN)
    # the final model knows it is a student, and solving with it warns that its estimate runs high
    assert model_calibration(out / "model/classifier.keras").student and "a real student" in result.output
    held_out_line = next(line for line in result.output.splitlines() if line.startswith("held-out real captchas: read"))
    assert "a real student" in held_out_line  # the pipeline's own held-out line warns too, not only solve's
    # resumed again, the students are kept
    result = CliRunner().invoke(app, students)
    assert result.exit_code == 0, result.output
    assert "student 1: done before, kept" in result.output and "student 2: done before, kept" in result.output
    assert json.loads((out / "report.json").read_text())["students"] == report["students"]
    # a student with too few sure reads to learn from is skipped, and the one before it stays the final model
    result = CliRunner().invoke(app, [*students[:-4], "--real-students", "3", "--real-student-steps", "3", "--min-pseudo-labels", "1000"])
    assert result.exit_code == 0, result.output
    assert "student 3: too few real captchas" in result.output and "final model: student 2" in result.output
    assert not (out / "round_4_student_3" / "classifier.keras").exists()
    # more rounds: the student learns again, from the new views
    result = CliRunner().invoke(app, [*students[:-7], "--rounds", "5", "--student-steps", "3", "--resume", "--real-students", "1", "--real-student-steps", "3"])
    assert result.exit_code == 0, result.output
    assert "student 1: done before" not in result.output and (out / "round_5_student_1" / "classifier.keras").is_file()


def write_captcha_folder(folder, spec, n, seed, ink="light"):
    """n captchas of `spec` as a user's folder: PNGs named after their texts; light text over random stripes,
    dark text over light grounds of their own, or (mixed) dark text on some light grounds and light text on dark ones."""
    from PIL import Image

    from simcaptcha.synth import SynthConfig, Synthesizer

    folder.mkdir(parents=True)
    config = SynthConfig(rotation=15.0)
    if ink == "dark":
        config = SynthConfig(rotation=15.0, ground_colours=((230, 235, 245), (245, 240, 225)), ink_colours=((50, 80, 150), (140, 50, 70)))
    if ink == "mixed":
        config = SynthConfig(rotation=15.0, ground_colours=((230, 235, 245), (40, 30, 90)), ink_colours=((50, 80, 150), (235, 230, 200)))
    images, texts = Synthesizer(spec, config=config).render_batch(n, seed)
    for k, (image, text) in enumerate(zip(images, texts)):
        Image.fromarray(image).save(folder / f"{text}_{k}.png")


@pytest.mark.parametrize("size,length,alphabet,head,background,ink", [
    ((160, 60), "5", "a-z0-9", "slots", "fitted", "dark"),  # fixed length: the slot head; dark ink, found by itself
    ((128, 48), "4-6", "a-z", "ctc", "stripes", "light"),  # a length range: the CTC head
    ((120, 40), "4", "0-9", "slots", "fitted", "mixed"),  # text lighter than the ground on some captchas, darker on others
])
def test_pipeline_runs_on_other_captchas_with_flags_only(tmp_path, size, length, alphabet, head, background, ink):
    from simcaptcha.runs import model_spec
    from simcaptcha.spec import CaptchaSpec

    spec = CaptchaSpec.from_flags(size[1], size[0], length, alphabet, ink)
    real, held = tmp_path / "real", tmp_path / "held"
    write_captcha_folder(real, spec, 24, seed=1, ink=ink)
    write_captcha_folder(held, spec, 8, seed=2, ink=ink)
    out = tmp_path / "out"
    args = ["pipeline", str(real), "-o", str(out), "--length", length, "--alphabet", alphabet, "--background", background, "--head", head,
            "--eval-real", str(held), "--eval-labels", str(held),  # labels from the file names
            "--refiner-steps", "2", "--classifier-steps", "3", "--raw-view-steps", "2", "--selftrain-steps", "2",
            "--synthetic-pool", "64", "--width", "0.25", "--calibration-captchas", "64", "--rounds", "1", "--threshold", "0", "--min-pseudo-labels", "1",
            "--all-fonts"]  # choosing fonts trains three critics per font: tests/test_look.py checks it on its own
    if ink == "light":
        args += ["--ink", "light"]  # light glyphs over multicoloured stripes: no one ground colour to measure ink against
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert f"reading {spec.describe()}" in result.output
    assert CaptchaSpec.load(out) == spec and model_spec(out / "model" / "classifier.keras") == spec
    assert json.loads((out / "classifier_refined" / "config.json").read_text())["head"] == head
    assert (out / "synth.json").is_file() and (out / "refiner" / "synth.json").is_file() and (out / "look.json").is_file()
    report = json.loads((out / "report.json").read_text())
    assert report["synthesizer"] == background
    assert report["final"]["averaged_views"] is (head == "slots")  # CTC views are not averaged
    assert report["spec"] == spec.to_dict() and 0 <= report["final"]["val/real_captcha_acc"] <= 1
    # solve reads the model's spec back: no flags
    solved = tmp_path / "s.json"
    result = CliRunner().invoke(app, ["solve", str(held), "-o", str(solved), "--model", str(out / "model")])
    assert result.exit_code == 0, result.output
    answers = json.loads(solved.read_text())["solutions"]
    assert len(answers) == 8 and all(set(a["solution"]) <= set(spec.alphabet) for a in answers)
    assert "estimated accuracy without labels" in result.output  # the model carries its calibration
    result = CliRunner().invoke(app, ["evaluate", str(solved), "--labels", str(held)])
    assert result.exit_code == 0 and "captcha accuracy" in result.output
    assert "label-free estimate from solve" in result.output


def test_the_synthetic_pool_is_cut_to_what_the_machine_holds():
    from simcaptcha.pipeline import MIN_POOL, pool_that_fits
    from simcaptcha.spec import CaptchaSpec

    gib = 2**30
    hackmit, large = CaptchaSpec.from_flags(50, 100, "4", "a-z"), CaptchaSpec.from_flags(100, 300, "5", "a-z0-9")
    assert pool_that_fits(64_000, hackmit, 15_000, 24 * gib) == 64_000  # this machine: HackMIT's pool as asked
    assert pool_that_fits(64_000, hackmit, 15_000, None) == 64_000  # memory unknown: as asked
    assert pool_that_fits(0, large, 20_000, gib) == 0  # no pool asked, none kept
    cut = pool_that_fits(64_000, large, 20_000, 16 * gib)
    assert MIN_POOL <= cut < 64_000
    assert 2 * 4 * 300 * 100 * cut + 20_000 * 300 * 100 * 7 <= 0.5 * 16 * gib  # the pool twice (raw, refined) and the real captchas fit
    assert pool_that_fits(64_000, large, 20_000, 4 * gib) == 0  # too little room for a useful pool: batches rendered as drawn


def test_pipeline_refuses_mixed_sizes_naming_each(tmp_path):
    from PIL import Image

    folder = tmp_path / "mixed"
    folder.mkdir()
    Image.new("RGB", (100, 50)).save(folder / "a.png")
    Image.new("RGB", (160, 60)).save(folder / "b.png")
    result = CliRunner().invoke(app, ["pipeline", str(folder), "-o", str(tmp_path / "out")])
    assert result.exit_code != 0 and "Traceback" not in result.output
    assert "100x50" in result.output and "160x60" in result.output and "a.png" in result.output and "--resize" in result.output
