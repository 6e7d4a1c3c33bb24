"""Batch solving on a local Ray instance gives the plain solver's answers, bad entries included."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("ray")

from simcaptcha.challenges import load_captchas  # noqa: E402
from simcaptcha.raybatch import solve_with_ray  # noqa: E402
from simcaptcha.solver import solve_loaded  # noqa: E402

from .conftest import make_challenge  # noqa: E402


def test_ray_solves_a_few_hundred_captchas_like_the_plain_solver(tmp_path, synthesizer):
    import ray

    folder = tmp_path / "challenges"
    folder.mkdir()
    for i in range(3):
        doc, _ = make_challenge(synthesizer, 100, seed=10 + i)
        if i == 1:
            doc["images"].append({"name": "../escape", "jpg_base64": doc["images"][0]["jpg_base64"]})
            doc["images"].append(dict(doc["images"][0]))  # a repeated name
        (folder / f"challenge-{i}").write_text(json.dumps(doc))
    (folder / "broken").write_text("{not json")
    plain = solve_loaded(load_captchas([folder]), None)
    try:
        on_ray = solve_with_ray([folder], None, batch_size=128, actors=1)
    finally:
        ray.shutdown()
    assert len(on_ray.solutions) == len(plain.solutions) == 300
    assert [(s.name, s.text) for s in on_ray.solutions] == [(s.name, s.text) for s in plain.solutions]
    assert max(abs(a.confidence - b.confidence) for a, b in zip(on_ray.solutions, plain.solutions)) < 1e-5
    # the shipped model's calibration reaches Ray's actors: the same label-free estimate
    assert on_ray.estimated_accuracy() is not None and on_ray.estimated_accuracy() == plain.estimated_accuracy()
    assert sorted(e.split(":")[0] for e in on_ray.errors) == sorted(e.split(":")[0] for e in plain.errors)
    assert len(on_ray.errors) == 3  # the bad name, the repeated name, the broken file
