"""The Python API on the shipped sample: one captcha from a file, then a batch from the challenge file.

    python examples/solve_api.py
"""

import json
from pathlib import Path

import simcaptcha
from simcaptcha.challenges import load_captchas

HERE = Path(__file__).resolve().parent


def main():
    solver = simcaptcha.load()  # the shipped HackMIT model
    answer = solver.solve(HERE / "captcha.jpg")  # also bytes, a PIL image or a NumPy array
    print(f"captcha.jpg: {answer.text} (confidence {answer.confidence:.3f})")
    print("first character, top 3:", answer.to_dict(top=3)["chars"][0])

    sample = load_captchas([HERE / "hackmit"])
    labels = json.loads((HERE / "hackmit" / "labels.json").read_text())
    answers = solver.solve_batch([c.image for c in sample.captchas])
    right = sum(a.text == labels[c.name] for c, a in zip(sample.captchas, answers))
    print(f"sample: {right} of {len(answers)} read right")


if __name__ == "__main__":
    main()
