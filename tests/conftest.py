"""Shared fixtures: small synthetic challenge files, and the real HackMIT data where ../shared has it."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from simcaptcha import quiet

quiet.tensorflow()  # imported once, without its start-up chatter

HACKMIT = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "hackmit"


@pytest.fixture(scope="session")
def hackmit() -> Path:
    if not (HACKMIT / "challenges").is_dir():
        pytest.skip("real HackMIT data not present in ../shared/data/hackmit")
    return HACKMIT


@pytest.fixture(scope="session")
def spec():
    """HackMIT's captchas: 100x50, 4 characters of 0-9a-z."""
    from simcaptcha.spec import CaptchaSpec

    return CaptchaSpec.from_flags(50, 100, "4", "0-9a-z")


@pytest.fixture(scope="session")
def background() -> np.ndarray:
    """A background like a contest user's: 4 stripes and two thin white lines."""
    from simcaptcha.synth import striped_background

    bg = striped_background(np.random.default_rng(3), 50, 100)
    bg[10, 5:95] = 250
    bg[12:40, 30] = 250
    return bg


@pytest.fixture(scope="session")
def synthesizer(spec, background):
    from simcaptcha.synth import Synthesizer

    return Synthesizer(spec, background)


def make_challenge(synthesizer, n: int, seed: int) -> tuple[dict, dict]:
    """A challenge document of n synthetic captchas and their labels."""
    from simcaptcha.challenges import encode_challenge

    rng = np.random.default_rng(seed)
    items, labels = [], {}
    for k in range(n):
        text = synthesizer.random_text(rng)
        name = f"{seed:04d}{k:028x}"
        items.append((name, synthesizer.render_jpeg(text, rng)))
        labels[name] = text
    return encode_challenge(items), labels


@pytest.fixture
def challenge_dir(tmp_path, synthesizer) -> Path:
    """A folder with two good challenge files of 20 captchas each."""
    folder = tmp_path / "challenges"
    folder.mkdir()
    all_labels = {}
    for i in range(2):
        doc, labels = make_challenge(synthesizer, 20, seed=i)
        (folder / f"challenge-{i}").write_text(json.dumps(doc))
        all_labels.update(labels)
    (tmp_path / "labels.json").write_text(json.dumps(all_labels))
    return folder


@pytest.fixture
def server(challenge_dir):
    """A contest server on loopback serving challenge_dir's files and judging against its labels (30 to pass)."""
    from .contest_server import ContestServer

    docs = [p.read_bytes() for p in sorted(challenge_dir.iterdir())]
    answers = json.loads((challenge_dir.parent / "labels.json").read_text())
    with ContestServer(docs, answers, {"img1": b"\xff\xd8fakejpeg"}, threshold=30) as s:
        yield s


def assert_only_normalization_differs(adapted, trained) -> None:
    """`adapted` holds `trained`'s learnt weights exactly, and other normalization statistics (AdaBN)."""
    learnt = {id(w) for w in adapted.trainable_weights}
    pairs = list(zip(adapted.weights, trained.weights))
    assert all(np.array_equal(a.numpy(), b.numpy()) for a, b in pairs if id(a) in learnt)  # nothing trained
    assert any(not np.allclose(a.numpy(), b.numpy()) for a, b in pairs if id(a) not in learnt)
