"""How well a synthesizer teaches: train a recognizer on its captchas alone, read labelled real ones.

Draws with a run folder's synth.json, optionally with some settings replaced (--set), trains a
recognizer for --steps on those synthetic captchas only (no refiner, no self-training) and prints
its captcha and character accuracy on labelled real captchas, which are used for that score only.
Compare synthesizer variants side by side in one sitting: absolute times drift between runs.

    python scripts/bench_synth_real.py --synth runs/p27_pyc2 --eval-real data/pycaptcha/test \\
        --eval-labels data/pycaptcha/test-labels.json --set height_scale=[0.7,1.6] --set stroke=[0,10]
"""

import argparse
import json
import tempfile
import time
from dataclasses import replace

import numpy as np

from simcaptcha import quiet


def parse_setting(text: str) -> tuple[str, object]:
    key, _, value = text.partition("=")
    if not key or not value:
        raise argparse.ArgumentTypeError(f"{text!r}: expected KEY=JSON, e.g. stroke=[0,6]")
    return key, json.loads(value)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--synth", required=True, help="run folder whose synth.json (and mask.png) to draw with")
    parser.add_argument("--set", dest="settings", action="append", type=parse_setting, default=[],
                        help="replace one SynthConfig setting, KEY=JSON (repeatable), e.g. width_scale=[0.5,0.9]")
    parser.add_argument("--eval-real", nargs="+", required=True, help="labelled real captchas (folders, files)")
    parser.add_argument("--eval-labels", required=True, help="their labels: JSON name -> text, or a folder named by text")
    parser.add_argument("--steps", type=int, default=800, help="training steps")
    parser.add_argument("--width", type=float, default=1.0, help="recognizer width")
    parser.add_argument("--head", default="slots", help="recognizer head: slots, ctc or auto")
    parser.add_argument("--pool", type=int, default=20_000, help="synthetic captchas rendered once for training")
    parser.add_argument("-o", "--out", default=None, help="run folder for the recognizer (default: a temporary one)")
    parser.add_argument("--seed", type=int, default=0, help="random seed")
    args = parser.parse_args()
    quiet.tensorflow()

    from simcaptcha.classifier import ClassifierConfig, load_real_eval, slot_window, train_classifier
    from simcaptcha.synth import Synthesizer, _tuples

    base = Synthesizer.load(args.synth)
    overrides = {k: _tuples(v) for k, v in args.settings}
    synth = Synthesizer(base.spec, None if base.background is None else np.asarray(base.background),
                        replace(base.config, **overrides))
    real = load_real_eval(args.eval_real, args.eval_labels, ink=synth.spec.ink)
    cfg = ClassifierConfig(steps=args.steps, width=args.width, synthetic_pool=args.pool, eval_every=args.steps, seed=args.seed,
                           head=args.head)
    cfg = replace(cfg, head_window=slot_window(synth, cfg))
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        metrics = train_classifier(cfg, synth, args.out or tmp, real_eval=real, progress=True, log=lambda *_: None)
    print(json.dumps({"synth": args.synth, "set": dict(args.settings), "steps": args.steps,
                      "real_captcha_acc": round(metrics["val/real_captcha_acc"], 4), "real_char_acc": round(metrics["val/real_char_acc"], 4),
                      "synthetic_char_acc": round(metrics["val/synthetic_char_acc"], 4),
                      "seconds": round(time.perf_counter() - start)}))


if __name__ == "__main__":
    main()
