"""Benchmark: synthetic captchas rendered per second on one core."""

import argparse
import os
import time

import numpy as np

from simcaptcha.spec import legacy_spec
from simcaptcha.synth import Synthesizer, striped_background

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("-n", type=int, default=3000, help="captchas to render")
    args = parser.parse_args()
    synth = Synthesizer(legacy_spec(), striped_background(np.random.default_rng(0), 50, 100))
    start = time.perf_counter()
    glyphs = synth.warm_up()  # every glyph drawn once; a training stream pays this once
    print(f"warm-up: {glyphs} glyphs drawn in {time.perf_counter() - start:.1f} s")
    start = time.perf_counter()
    synth.render_batch(args.n, seed=1)
    elapsed = time.perf_counter() - start
    print(f"synth: {args.n} captchas in {elapsed:.2f} s = {args.n / elapsed:.0f} captchas/s on one core")


if __name__ == "__main__":
    main()
