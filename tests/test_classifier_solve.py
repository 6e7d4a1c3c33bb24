"""Classifier factory and training (tiny), solve/evaluate through the CLI, bad input and a missing model."""

import json

import keras
import numpy as np
import pytest
from typer.testing import CliRunner

from simcaptcha.classifier import (ClassifierConfig, accuracy, adapt_batchnorm, average_classifiers, build_classifier, cpu_has_bfloat16, decode_probs, erase_randomly,
                                   head_windows, predict_probs, resolve_precision, shift_randomly, with_precision)
from simcaptcha.files import InputError
from simcaptcha.cli import app
from simcaptcha.solver import SolveResult, Solution, accuracy_by_confidence, evaluate

runner = CliRunner()

SHIPPED_MODEL_FLOOR = 0.95  # challenge-14 captcha accuracy of simcaptcha/models, measured 96.6%


def test_classifier_has_four_named_heads(spec):
    model = build_classifier(spec, ClassifierConfig(filters=(4, 8), dense=8))
    out = model(np.zeros((2, 50, 100, 1), np.float32))
    assert [o.shape for o in out] == [(2, 36)] * 4
    assert model.output_names == ["char_0", "char_1", "char_2", "char_3"]
    np.testing.assert_allclose(np.asarray(out[0]).sum(-1), 1.0, rtol=1e-5)


def test_width_scales_channels_and_hidden_units(spec):
    small = ClassifierConfig(filters=(4, 8), dense=8, bottleneck=4)
    base, wide = build_classifier(spec, small), build_classifier(spec, ClassifierConfig(filters=(4, 8), dense=8, bottleneck=4, width=2.0))
    assert [wide.get_layer(n).get_config()["filters"] for n in ["conv_0", "conv_1", "bottleneck"]] == [8, 16, 8]
    assert wide.get_layer("features").get_config()["units"] == 16
    assert wide.count_params() > 3 * base.count_params()


def test_head_windows_follow_character_places():
    centers = (17, 43, 67, 88)
    windows = head_windows(12, 6, centers, 100)
    assert windows[0][0] == 0 and windows[-1][1] == 12
    assert [lo for lo, _ in windows] == sorted(lo for lo, _ in windows)
    padded = head_windows(12, 6, centers, 100, pad=3)  # centred: every character sits at the same column of its window
    assert [lo for lo, _ in padded] == [round(cx / 100 * 12) for cx in (17, 43, 67, 88)]


def test_shared_head_reads_every_window_with_the_same_weights(spec):
    # A fixed initialisation: with an unlucky random one every unit of the tiny dense layer can be
    # dead for both windows, and then both read the same (it happened once in a CI run).
    keras.utils.set_random_seed(0)
    model = build_classifier(spec, ClassifierConfig(filters=(4, 8), dense=8, shared_head=True))
    assert model.output_names == ["char_0", "char_1", "char_2", "char_3"]
    assert len([l for l in model.layers if l.name.startswith("features")]) == 1
    separate = build_classifier(spec, ClassifierConfig(filters=(4, 8), dense=8, shared_head=False))
    assert model.count_params() < separate.count_params()
    x = np.zeros((1, 50, 100, 1), np.float32)
    x[:, 10:40, 10:24] = 1.0  # a glyph-sized blob at the first character's place only
    out = [np.asarray(o) for o in model(x)]
    assert not np.allclose(out[0], out[1])  # the windows read different columns


def test_average_classifiers_averages_each_head(spec):
    small = ClassifierConfig(filters=(4, 8), dense=8)
    a, b = build_classifier(spec, small), build_classifier(spec, small)  # two random initialisations
    x = np.random.default_rng(0).uniform(-1, 1, (3, 50, 100, 1)).astype(np.float32)
    pa, pb = predict_probs(a, x), predict_probs(b, x)
    assert not np.allclose(pa, pb)
    both = average_classifiers([a, b])
    assert both.output_names == ["char_0", "char_1", "char_2", "char_3"]
    np.testing.assert_allclose(predict_probs(both, x), (pa + pb) / 2, atol=1e-6)


def test_predict_probs_does_not_keep_models_alive(spec):
    import gc
    import weakref

    model = build_classifier(spec, ClassifierConfig(filters=(4, 8), dense=8))
    x = np.zeros((2, 50, 100, 1), np.float32)
    np.testing.assert_allclose(predict_probs(model, x), predict_probs(model, x))  # the second call reuses the compiled pass
    alive = weakref.ref(model)
    del model
    gc.collect()
    assert alive() is None  # a pipeline loads dozens of models; each must be freed once dropped


def test_shift_randomly_moves_each_image_within_range():
    rng = np.random.default_rng(0)
    x = rng.random((64, 12, 20, 1)).astype(np.float32)
    assert shift_randomly(x, 0, rng) is x
    moved = shift_randomly(x, 2, rng)
    assert moved.shape == x.shape
    offsets = set()
    for a, b in zip(x, moved):
        # the interior of the moved image is the original, displaced by one (dy, dx) in [-2, 2]
        found = [(dy, dx) for dy in range(-2, 3) for dx in range(-2, 3)
                 if np.array_equal(b[2:-2, 2:-2], a[2 - dy:10 - dy, 2 - dx:18 - dx])]
        assert len(found) == 1
        offsets.add(found[0])
    assert len(offsets) > 10  # not one shift for the whole batch


def test_erase_randomly_sets_small_boxes_to_the_ground():
    rng = np.random.default_rng(0)
    x = np.full((32, 60, 160, 1), -0.8, np.float32)
    x[:, 20:40, 10:150] = 0.9  # a band of ink over a ground of -0.8
    before = x.copy()
    erased = erase_randomly(x, 4, 10, rng)
    assert np.array_equal(x, before)  # the input is left as it was
    changed = erased != x
    assert changed.any()
    assert np.all(erased[changed] == -0.8)  # erased pixels take the ground's value
    assert changed.reshape(32, -1).sum(1).max() <= 4 * 10 * 10  # four boxes of at most 10 x 10
    assert np.array_equal(erase_randomly(x, 0, 10, rng), x)


def test_decode_and_accuracy(spec):
    probs = np.full((2, 4, 36), 0.01)
    probs[0, :, 10] = 0.9  # "aaaa"
    probs[1, :, 1] = 0.5  # "1111"
    texts, conf = decode_probs(probs, spec)
    assert texts == ["aaaa", "1111"] and conf[0] > conf[1]
    assert accuracy(["aaaa", "1112"], ["aaaa", "1111"]) == (0.5, 0.875)


def test_synth_vs_real_counts_misreads_per_true_character():
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "scripts" / "synth_vs_real.py"
    spec = importlib.util.spec_from_file_location("synth_vs_real", path)
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    stats = script.per_char_errors([("ilia", "llia"), ("i0aa", "ioaa")], "0123456789abcdefghijklmnopqrstuvwxyz")
    seen, read_as = stats["i"]
    assert (seen, read_as.total(), read_as.most_common()) == (3, 1, [("l", 1)])
    counts = {c: (seen, read_as.total()) for c, (seen, read_as) in stats.items()}
    assert counts["a"] == (3, 0) and counts["0"] == (1, 1) and counts["z"] == (0, 0)
    assert script.error_rate(*stats["i"]) == pytest.approx(1 / 3) and script.error_rate(*stats["z"]) == 0.0


def test_evaluate_counts_and_confusions():
    ev = evaluate({"x": "ab12", "y": "ab12"}, {"x": "ab12", "y": "ab1z", "z": "0000"})
    assert ev.count == 3 and ev.missing == 1
    assert ev.captcha_accuracy == pytest.approx(1 / 3)
    assert ev.per_position[3] == pytest.approx(1 / 3)
    assert ("z", "2", 1) in ev.confusions


def test_accuracy_by_confidence_scores_the_most_confident_first():
    labels = {"a": "aaaa", "b": "bbbb", "c": "cccc", "d": "dddd", "e": "eeee"}
    answers = {"a": "aaaa", "b": "bbbx", "c": "cccc", "d": "dddd"}  # e unanswered: not scored
    confidences = {"a": 0.9, "b": 0.95, "c": 0.5}  # d has none: ranks last
    rows = accuracy_by_confidence(answers, labels, confidences, shares=(0.25, 0.5, 1.0))
    assert rows == [(0.25, 1, 0.0), (0.5, 2, 0.5), (1.0, 4, 0.75)]
    with pytest.raises(Exception, match="no labelled answer"):
        accuracy_by_confidence({"z": "zzzz"}, labels, {})


def test_top_keeps_most_confident():
    r = SolveResult([Solution("a", "aaaa", 0.2), Solution("b", "bbbb", 0.9), Solution("c", "cccc", 0.5)])
    assert [s["name"] for s in r.contest_body(2)["solutions"]] == ["b", "c"]


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    """A classifier trained for a few steps through the CLI (accuracy is not the point here)."""
    out = tmp_path_factory.mktemp("model")
    result = runner.invoke(app, ["train", "-o", str(out), "--steps", "6", "--batch-size", "8", "--eval-every", "3", "--size", "100x50"])
    assert result.exit_code == 0, result.output
    return out


def test_train_writes_run_folder(tiny_model):
    assert (tiny_model / "classifier.keras").is_file()
    assert json.loads((tiny_model / "config.json").read_text())["steps"] == 6
    assert (tiny_model / "checkpoint.npz").is_file() and any((tiny_model / "logs").iterdir())


def test_train_resume_continues(tmp_path):
    out = tmp_path / "m"
    args = ["train", "-o", str(out), "--steps", "4", "--batch-size", "4", "--eval-every", "2", "--synthetic-pool", "10", "--size", "100x50"]
    assert runner.invoke(app, args).exit_code == 0
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["synthetic_pool"] == 10  # a resumed run renders the same pool again
    cfg["steps"] = 6  # extend the finished run, as a killed run would be continued
    del cfg["width"]  # a run saved before the width setting resumes at width 1
    (out / "config.json").write_text(json.dumps(cfg))
    result = runner.invoke(app, ["train", "-o", str(out), "--resume", "--size", "100x50"])
    assert result.exit_code == 0 and "resuming from step 4" in result.output
    with np.load(out / "checkpoint.npz") as data:
        assert int(data["step"]) == 6


def test_the_same_seed_trains_the_same_weights_and_another_seed_does_not(tmp_path):
    import keras

    weights = {}
    for name, seed in [("a", 3), ("b", 3), ("c", 4)]:
        out = tmp_path / name
        result = runner.invoke(app, ["train", "-o", str(out), "--steps", "4", "--batch-size", "4", "--eval-every", "4",
                                     "--size", "100x50", "--seed", str(seed)])
        assert result.exit_code == 0, result.output
        weights[name] = keras.models.load_model(out / "classifier.keras", compile=False).get_weights()
    assert all(np.array_equal(a, b) for a, b in zip(weights["a"], weights["b"]))  # a run is repeated bit for bit
    assert not all(np.array_equal(a, c) for a, c in zip(weights["a"], weights["c"]))


def test_adapt_batchnorm_measures_each_normalization_on_the_given_captchas(spec):
    cfg = ClassifierConfig(filters=(4, 8), dense=8, bottleneck=4)
    model = build_classifier(spec, cfg)
    x = np.random.default_rng(0).normal(0.5, 0.3, (24, spec.height, spec.width, 1)).astype(np.float32)
    before = predict_probs(model, x)
    assert adapt_batchnorm(model, x, batch_size=10) == 3  # two convolutions and the bottleneck, in batches of 10
    first = model.get_layer("bn_0")
    conv = np.asarray(keras.Model(model.inputs[0], model.get_layer("conv_0").output)(x)).reshape(-1, 4)
    np.testing.assert_allclose(np.asarray(first.moving_mean), conv.mean(0), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(np.asarray(first.moving_variance), conv.var(0), rtol=1e-3, atol=1e-6)
    # the later layers are measured behind the adapted ones: normalized, their inputs have mean 0 and variance 1
    last = model.get_layer("bn_bottleneck")
    inputs = np.asarray(keras.Model(model.inputs[0], last.input)(x)).reshape(-1, 4)
    normed = np.asarray(keras.Model(model.inputs[0], last.output)(x, training=False)).reshape(-1, 4)
    standard = (normed - np.asarray(last.beta)) / np.asarray(last.gamma)
    np.testing.assert_allclose(standard.mean(0), 0.0, atol=1e-3)
    np.testing.assert_allclose(standard.var(0), inputs.var(0) / (inputs.var(0) + last.epsilon), rtol=1e-3)
    assert not np.allclose(before, predict_probs(model, x))  # the readings follow the new statistics
    # an averaged ensemble is adapted member by member; no captchas, nothing changes
    ensemble = average_classifiers([build_classifier(spec, cfg), build_classifier(spec, cfg)])
    assert adapt_batchnorm(ensemble, x) == 6
    kept = [w.copy() for w in ensemble.get_weights()]
    assert adapt_batchnorm(ensemble, x[:0]) == 0 and all(np.array_equal(a, b) for a, b in zip(kept, ensemble.get_weights()))


def test_with_precision_copies_weights_and_keeps_outputs_float32(spec):
    model = build_classifier(spec, ClassifierConfig(filters=(4, 8), dense=8, bottleneck=4))
    assert with_precision(model, "float32") is model
    fast = with_precision(model, "bfloat16")
    policies = {layer.name: layer.dtype_policy.name for layer in fast.layers}
    assert policies["conv_0"] == "mixed_bfloat16" and all(policies[n] == "float32" for n in model.output_names)
    assert all(w.dtype == "float32" for w in fast.weights)
    for a, b in zip(model.get_weights(), fast.get_weights()):
        np.testing.assert_array_equal(a, b)
    x = np.random.default_rng(0).random((4, 50, 100, 1), np.float32)
    for a, b in zip(model(x), fast(x)):  # the same network, computed at bfloat16's 8-bit mantissa
        assert b.dtype == "float32"
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-3)


def test_resolve_precision():
    assert resolve_precision("float32") == "float32" and resolve_precision("bfloat16") == "bfloat16"
    import tensorflow as tf

    native = cpu_has_bfloat16() and not tf.config.list_physical_devices("GPU")
    assert resolve_precision("auto") == ("bfloat16" if native else "float32")
    with pytest.raises(InputError, match="precision 'half'"):
        resolve_precision("half")


def test_bfloat16_training_saves_its_trained_weights_as_a_float32_model(tmp_path):
    import keras

    out = tmp_path / "m"
    result = runner.invoke(app, ["train", "-o", str(out), "--steps", "4", "--batch-size", "4", "--eval-every", "2", "--size", "100x50",
                                 "--precision", "bfloat16"])
    assert result.exit_code == 0, result.output
    assert json.loads((out / "config.json").read_text())["precision"] == "bfloat16"
    model = keras.models.load_model(out / "classifier.keras", compile=False)
    assert {layer.dtype_policy.name for layer in model.layers} == {"float32"}
    with np.load(out / "checkpoint.npz") as data:  # the steps' weights, not the ones the run started from
        for i, w in enumerate(model.get_weights()):
            np.testing.assert_array_equal(w, data[f"model/classifier/{i}"])


def test_solve_and_evaluate(tmp_path, tiny_model, challenge_dir):
    (challenge_dir / "broken").write_text("not json")
    out = tmp_path / "solutions.json"
    result = runner.invoke(app, ["solve", str(challenge_dir), "-o", str(out), "--model", str(tiny_model), "--top", "30"])
    assert result.exit_code == 0, result.output
    assert "broken: not a JSON challenge file" in result.output and "Traceback" not in result.output
    body = json.loads(out.read_text())
    assert len(body["solutions"]) == 30
    assert all(len(e["solution"]) == 4 for e in body["solutions"])
    confidences = json.loads((tmp_path / "solutions.confidence.json").read_text())["confidences"]
    values = [confidences[e["name"]] for e in body["solutions"]]
    assert values == sorted(values, reverse=True)

    result = runner.invoke(app, ["evaluate", str(out), "--labels", str(challenge_dir.parent / "labels.json")])
    assert result.exit_code == 0, result.output
    assert "captcha accuracy" in result.output and "per position" in result.output
    # solve's confidences beside the solutions are read without being named
    assert "most confident answers: 50% (15): " in result.output and "100% (30): " in result.output
    labels_args = ["evaluate", str(out), "--labels", str(challenge_dir.parent / "labels.json")]
    (tmp_path / "bad.json").write_text("[1, 2]")
    result = runner.invoke(app, [*labels_args, "--confidence", str(tmp_path / "bad.json")])
    assert result.exit_code != 0 and "bad.json: expected a JSON name -> confidence map" in result.output
    assert "Traceback" not in result.output
    (tmp_path / "solutions.confidence.json").unlink()
    result = runner.invoke(app, labels_args)
    assert result.exit_code == 0 and "most confident" not in result.output

    # a sheet of the misread captchas (a tiny model misreads nearly all): one row each, at most --sheet-max
    sheet = tmp_path / "misread.png"
    args = ["evaluate", str(out), "--labels", str(challenge_dir.parent / "labels.json"), "--sheet", str(sheet)]
    result = runner.invoke(app, [*args, "--captchas", str(challenge_dir), "--sheet-max", "3"])
    assert result.exit_code == 0, result.output
    assert "wrote 3 of " in result.output
    from PIL import Image

    three_rows = Image.open(sheet).size
    assert runner.invoke(app, [*args, "--captchas", str(challenge_dir), "--sheet-max", "1"]).exit_code == 0
    assert Image.open(sheet).size == (three_rows[0], three_rows[1] // 3)
    result = runner.invoke(app, args)
    assert result.exit_code != 0 and "--sheet needs --captchas" in result.output and "Traceback" not in result.output


def test_ensemble_command_builds_a_model_solve_reads(tmp_path, tiny_model, challenge_dir):
    out = tmp_path / "ensemble"
    r = runner.invoke(app, ["ensemble", str(tiny_model), str(tiny_model / "classifier.keras"), "-o", str(out)])
    assert r.exit_code == 0, r.output
    assert "average of 2 classifiers" in r.output
    r = runner.invoke(app, ["solve", str(challenge_dir), "-o", str(tmp_path / "s.json"), "--model", str(out)])
    assert r.exit_code == 0, r.output
    single = runner.invoke(app, ["solve", str(challenge_dir), "-o", str(tmp_path / "one.json"), "--model", str(tiny_model)])
    assert single.exit_code == 0, single.output
    # the average of a model with itself answers exactly as the model does
    assert json.loads((tmp_path / "s.json").read_text()) == json.loads((tmp_path / "one.json").read_text())
    r = runner.invoke(app, ["ensemble", str(tiny_model), str(tmp_path / "missing"), "-o", str(tmp_path / "bad")])
    assert r.exit_code != 0 and "missing: no classifier model" in r.output and "Traceback" not in r.output
    assert not (tmp_path / "bad").exists()


def test_solve_errors(tmp_path, challenge_dir):
    r = runner.invoke(app, ["solve", str(challenge_dir), "-o", str(tmp_path / "s.json"), "--model", str(tmp_path / "nomodel")])
    assert r.exit_code != 0 and "no classifier model" in r.output and "Traceback" not in r.output
    (tmp_path / "empty").mkdir()
    r = runner.invoke(app, ["solve", str(tmp_path / "empty")])
    assert r.exit_code != 0 and "empty" in r.output


def test_shipped_model_solves_hackmit(hackmit, tmp_path):
    from simcaptcha.solver import shipped_model_dir

    if not (shipped_model_dir() / "classifier.keras").is_file():
        pytest.skip("no shipped model in this checkout")
    out = tmp_path / "s.json"
    r = runner.invoke(app, ["solve", str(hackmit / "challenges" / "challenge-14"), "-o", str(out)])
    assert r.exit_code == 0, r.output
    answers = {e["name"]: e["solution"] for e in json.loads(out.read_text())["solutions"]}
    labels = json.loads((hackmit / "dev-labels.json").read_text())
    ev = evaluate(answers, labels)
    # Regression floor at the shipped model's measured accuracy (see README), not the 90% goal.
    assert ev.captcha_accuracy >= SHIPPED_MODEL_FLOOR, ev


def test_ctc_head_reads_any_length_and_decodes_best_path():
    from simcaptcha.classifier import char_probs, is_ctc
    from simcaptcha.spec import CaptchaSpec

    spec = CaptchaSpec.from_flags(40, 120, "4-6", "0-9A-F")
    model = build_classifier(spec, ClassifierConfig(filters=(4, 8, 8), dense=8, head="auto"))
    assert model.output_names == ["ctc"] and is_ctc(model, spec)
    probs = predict_probs(model, np.zeros((2, 40, 120, 1), np.float32))
    assert probs.shape == (2, 30, 17)  # a quarter of the columns; 16 classes and the blank
    # best path: repeats merge, blanks separate, a blank between two of the same keeps both
    p = np.full((1, 8, 17), 0.001)
    for t, k in enumerate([16, 10, 10, 16, 10, 3, 16, 16]):  # blank A A blank A 3 blank blank -> "AA3"
        p[0, t, k] = 0.9
    spec3 = CaptchaSpec.from_flags(40, 120, "3-6", "0-9A-F")  # texts of 3 too
    texts, conf = decode_probs(p, spec3)
    assert texts == ["AA3"] and 0 < conf[0] < 1
    assert len(decode_probs(p, spec)[0][0]) == 4  # 4-6: read along the likeliest path of 4
    rows = char_probs(p, spec3)[0]
    assert rows.shape == (3, 16) and np.allclose(rows.sum(-1), 1) and rows[2].argmax() == 3
    with pytest.raises(Exception, match="fixed number"):
        build_classifier(spec, ClassifierConfig(head="slots"))


def test_ctc_model_trains_saves_its_spec_and_solves_with_no_flags(tmp_path):
    """A tiny CTC recognizer of 3-5 characters: trained, saved with its spec inside, read back by solve."""
    from simcaptcha.classifier import train_classifier
    from simcaptcha.runs import model_spec
    from simcaptcha.solver import Solver
    from simcaptcha.spec import CaptchaSpec
    from simcaptcha.synth import Synthesizer, write_dataset

    spec = CaptchaSpec.from_flags(32, 96, "3-5", "a-f")
    synth = Synthesizer(spec)
    cfg = ClassifierConfig(steps=4, batch_size=8, filters=(4, 8), dense=8, bottleneck=4, eval_every=4, val_size=8)
    metrics = train_classifier(cfg, synth, tmp_path / "m", progress=False, log=lambda *_: None)
    assert "val/synthetic_captcha_acc" in metrics
    assert model_spec(tmp_path / "m" / "classifier.keras") == spec
    assert json.loads((tmp_path / "m" / "config.json").read_text())["head"] == "ctc"
    write_dataset(synth, 6, tmp_path / "imgs", seed=1)
    solver = Solver.load(tmp_path / "m")
    assert solver.spec == spec
    answers = solver.solve_batch(sorted((tmp_path / "imgs").glob("*.jpg")))
    assert len(answers) == 6 and all(set(a.text) <= set(spec.alphabet) for a in answers)
    assert all(a.char_probs.shape == (len(a.text), 6) for a in answers)
    out = tmp_path / "s.json"
    r = runner.invoke(app, ["solve", str(tmp_path / "imgs"), "-o", str(out), "--model", str(tmp_path / "m")])
    assert r.exit_code == 0, r.output
    assert len(json.loads(out.read_text())["solutions"]) == 6


def test_solve_names_a_size_the_model_does_not_read(tmp_path, tiny_model):
    from PIL import Image

    folder = tmp_path / "big"
    folder.mkdir()
    for i in range(2):
        Image.new("RGB", (160, 60), (i * 40, 0, 0)).save(folder / f"c{i}.png")
    out = tmp_path / "s.json"
    r = runner.invoke(app, ["solve", str(folder), "-o", str(out), "--model", str(tiny_model)])
    assert r.exit_code != 0 and "is 160x60, the model reads 100x50" in r.output and "Traceback" not in r.output
    r = runner.invoke(app, ["solve", str(folder), "-o", str(out), "--model", str(tiny_model), "--resize"])
    assert r.exit_code == 0, r.output
    assert len(json.loads(out.read_text())["solutions"]) == 2


def test_labels_from_file_names(tmp_path):
    from PIL import Image

    from simcaptcha.challenges import read_labels

    for name in ("abcd.png", "abcd_17.png", "x9y2.jpg"):
        Image.new("RGB", (20, 10)).save(tmp_path / name)
    labels, problems = read_labels(tmp_path)
    assert labels == {"abcd": "abcd", "abcd_17": "abcd", "x9y2": "x9y2"} and not problems


def test_auto_head_reads_moving_characters_with_ctc(spec):
    from dataclasses import replace

    import pytest

    from simcaptcha.classifier import character_drift, resolve_head
    from simcaptcha.files import InputError
    from simcaptcha.spec import CaptchaSpec
    from simcaptcha.synth import SynthConfig, Synthesizer

    hackmit = Synthesizer(spec)
    assert character_drift(hackmit) < 0.4 and resolve_head("auto", spec, hackmit) == "slots"
    moving = Synthesizer(spec, None, replace(SynthConfig(), x_jitter=15.0))  # characters wander over their neighbours' places
    assert character_drift(moving) > 0.4 and resolve_head("auto", spec, moving) == "ctc"
    assert resolve_head("slots", spec, moving) == "slots"  # asked for: kept
    assert resolve_head("auto", CaptchaSpec.from_flags(50, 100, "3-5", "a-z")) == "ctc"
    with pytest.raises(InputError):
        resolve_head("slots", CaptchaSpec.from_flags(50, 100, "3-5", "a-z"))


def test_ctc_reads_a_text_of_the_spec_length_along_the_likeliest_path():
    import itertools

    from simcaptcha.classifier import ctc_best_path, ctc_emits, ctc_viterbi_path
    from simcaptcha.spec import CaptchaSpec

    rng = np.random.default_rng(0)
    for _ in range(60):  # against every path of a few frames
        frames, chars = int(rng.integers(1, 6)), int(rng.integers(1, 4))
        p = rng.dirichlet(np.full(chars + 1, 0.5), frames)
        lo = int(rng.integers(0, 4))
        hi = lo + int(rng.integers(0, 2))
        scored = [(np.log(p[np.arange(frames), q]).sum(), q) for q in map(np.array, itertools.product(range(chars + 1), repeat=frames))
                  if lo <= ctc_emits(q[None], chars)[0].sum() <= hi]
        got = ctc_viterbi_path(p, lo, hi)
        if not scored:
            assert got is None
            continue
        assert got is not None and lo <= ctc_emits(got[None], chars)[0].sum() <= hi
        assert np.isclose(np.log(p[np.arange(frames), got]).sum(), max(s for s, _ in scored))
    # greedy reads "AB" where the spec wants 3 characters: the second-likeliest character of a blank frame fills in
    spec = CaptchaSpec.from_flags(40, 120, "3", "0-9A-F")
    p = np.full((1, 6, 17), 0.001)
    for t, (k, q) in enumerate([(10, 0.9), (16, 0.9), (11, 0.9), (16, 0.55), (16, 0.9), (16, 0.9)]):
        p[0, t, k] = q
    p[0, 3, 5] = 0.4  # a '5' half-hidden under the blank
    assert "".join(spec.alphabet[k] for k, _ in ctc_best_path(p)[0][0]) == "AB"
    texts, conf = decode_probs(p, spec)
    assert texts == ["AB5"] and conf[0] < np.prod(p[0].max(-1))  # the longer path is less likely than the greedy one
    assert decode_probs(p, CaptchaSpec.from_flags(40, 120, "2-3", "0-9A-F"))[0] == ["AB"]  # in range: the greedy read
