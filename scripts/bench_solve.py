"""Benchmark: captchas solved per second after start-up (preprocess + predict + decode), and start-up time.

    python scripts/bench_solve.py ../shared/data/hackmit/challenges               # the shipped model, Keras
    python scripts/bench_solve.py CHALLENGES --model model.onnx                   # an exported model, ONNX Runtime
    python scripts/bench_solve.py CHALLENGES --model A --model B.onnx             # several, side by side in one run

Each model is timed in one process: --repeat passes over the captchas, the best reported (absolute
times drift between runs on a shared machine; compare models within one run). Start-up is
measured in a fresh process: from `import simcaptcha` to the first answer of one captcha.
Without paths, 5,000 synthetic captchas are solved.
"""

import argparse
import subprocess
import sys
import time

import numpy as np

from simcaptcha.challenges import Captcha, LoadResult, load_captchas
from simcaptcha.solver import Solver, solve_loaded

STARTUP = """
import sys, time
start = time.perf_counter()
import simcaptcha
solver = simcaptcha.load(sys.argv[1] if sys.argv[1] != "-" else None)
solver.solve(sys.argv[2])
print(time.perf_counter() - start)
"""


def startup_seconds(model, image_path) -> float:
    out = subprocess.run([sys.executable, "-c", STARTUP, model or "-", str(image_path)], capture_output=True, text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("paths", nargs="*", help="challenge files to solve (default: 5,000 synthetic captchas)")
    parser.add_argument("--model", action="append", default=None, help="model folder, classifier.keras or model.onnx (repeatable; default: the shipped model)")
    parser.add_argument("--repeat", type=int, default=3, help="timed passes; the best is reported")
    args = parser.parse_args()
    if args.paths:
        loaded = load_captchas(args.paths)
    else:
        from simcaptcha.spec import legacy_spec
        from simcaptcha.synth import Synthesizer, striped_background

        images, _ = Synthesizer(legacy_spec(), striped_background(np.random.default_rng(0), 50, 100)).render_batch(5000, seed=0)
        loaded = LoadResult([Captcha(f"{i:032x}", im, "synthetic") for i, im in enumerate(images)])
    from pathlib import Path

    example = Path(__file__).resolve().parents[1] / "examples" / "captcha.jpg"
    n = len(loaded.captchas)
    for model in args.model or [None]:
        solver = Solver.load(model)
        solve_loaded(LoadResult(loaded.captchas[:600]), solver)  # warm-up: tracing and caches
        best = float("inf")
        for _ in range(args.repeat):
            start = time.perf_counter()
            solve_loaded(loaded, solver)
            best = min(best, time.perf_counter() - start)
        print(f"{model or 'shipped model'} ({solver.backend}): {n} captchas in {best:.2f} s = {n / best:,.0f} captchas/s "
              f"after start-up; start-up (import to first answer) {startup_seconds(model, example):.1f} s")


if __name__ == "__main__":
    main()
