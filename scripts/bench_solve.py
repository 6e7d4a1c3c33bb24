"""Benchmark: captchas solved per second after start-up (preprocess + predict + decode), on this CPU.

Uses the shipped model unless --model is given; the captchas are synthetic unless challenge files are given.
"""

import argparse
import time

import numpy as np

from simcaptcha import quiet
from simcaptcha.challenges import Captcha, LoadResult, load_captchas
from simcaptcha.solver import load_classifier, solve_loaded
from simcaptcha.synth import Synthesizer, striped_background

quiet.tensorflow()  # TensorFlow without its start-up chatter


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("paths", nargs="*", help="challenge files to solve (default: 5,000 synthetic captchas)")
    parser.add_argument("--model", default=None, help="model folder or classifier.keras (default: the shipped model)")
    parser.add_argument("--repeat", type=int, default=3, help="timed passes; the best is reported")
    args = parser.parse_args()
    if args.paths:
        loaded = load_captchas(args.paths)
    else:
        images, _ = Synthesizer(striped_background(np.random.default_rng(0))).render_batch(5000, seed=0)
        loaded = LoadResult([Captcha(f"{i:032x}", im, "synthetic") for i, im in enumerate(images)])
    model = load_classifier(args.model)
    solve_loaded(LoadResult(loaded.captchas[:600]), model)  # start-up: tracing and warm caches
    best = float("inf")
    for _ in range(args.repeat):
        start = time.perf_counter()
        solve_loaded(loaded, model)
        best = min(best, time.perf_counter() - start)
    n = len(loaded.captchas)
    print(f"solve: {n} captchas in {best:.2f} s = {n / best:.0f} captchas/s after start-up")


if __name__ == "__main__":
    main()
