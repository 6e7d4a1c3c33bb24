"""The CTC head on variable-length synthetic captchas: train on synthetic, read held-out synthetic, print accuracy.

Known to work before real data is involved: a recognizer trained on rendered captchas of 4 to 6
characters reads held-out rendered ones of the same spec. Prints captcha and character accuracy,
per text length.

    python scripts/bench_ctc.py --steps 3000 --size 160x60 --length 4-6 -o runs/bench_ctc
"""

import argparse
import time

import numpy as np

from simcaptcha import quiet


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-o", "--out", required=True, help="run folder for the recognizer")
    parser.add_argument("--size", default="160x60", help="WIDTHxHEIGHT of the captchas")
    parser.add_argument("--length", default="4-6", help="text length or range")
    parser.add_argument("--alphabet", default="a-z0-9", help="characters")
    parser.add_argument("--steps", type=int, default=3000, help="training steps")
    parser.add_argument("--width", type=float, default=1.0, help="recognizer width")
    parser.add_argument("--pool", type=int, default=30_000, help="synthetic captchas rendered once for training")
    parser.add_argument("--test", type=int, default=2000, help="held-out synthetic captchas read at the end")
    parser.add_argument("--seed", type=int, default=0, help="random seed")
    parser.add_argument("--synth", default=None, help="a run folder whose synth.json to draw with (its size and alphabet; "
                        "--length replaces its length); default: the shipped fonts over random stripes")
    args = parser.parse_args()
    quiet.tensorflow()

    from simcaptcha.classifier import ClassifierConfig, decode_probs, predict_probs, train_classifier
    from simcaptcha.preprocess import preprocess
    from simcaptcha.spec import CaptchaSpec
    from simcaptcha.synth import Synthesizer

    if args.synth:
        from dataclasses import replace

        from simcaptcha.spec import parse_length

        fitted = Synthesizer.load(args.synth)
        lo, hi = parse_length(args.length)
        spec = replace(fitted.spec, min_length=lo, max_length=hi)
        synth = Synthesizer(spec, None if fitted.background is None else np.asarray(fitted.background), fitted.config)
    else:
        width, height = (int(v) for v in args.size.split("x"))
        spec = CaptchaSpec.from_flags(height, width, args.length, args.alphabet)
        synth = Synthesizer(spec)
    cfg = ClassifierConfig(steps=args.steps, head="ctc", width=args.width, synthetic_pool=args.pool, seed=args.seed,
                           eval_every=max(1, args.steps // 4))
    start = time.time()
    train_classifier(cfg, synth, args.out, log=print)
    import keras

    model = keras.models.load_model(f"{args.out}/classifier.keras", compile=False)
    images, texts = synth.render_batch(args.test, (args.seed, 123_456_789))  # a seed no training batch uses
    read, _ = decode_probs(predict_probs(model, preprocess(images, spec.ink)), spec)
    right = np.array([a == b for a, b in zip(read, texts)])
    chars = sum(a == b for r, t in zip(read, texts) for a, b in zip(r, t)) / sum(map(len, texts))
    print(f"{spec.describe()}; {args.steps} steps, width {args.width:g}, {time.time() - start:.0f} s")
    print(f"held-out synthetic: captcha accuracy {right.mean():.2%} of {len(texts)}, character accuracy {chars:.2%}")
    for n in range(spec.min_length, spec.max_length + 1):
        mask = np.array([len(t) == n for t in texts])
        print(f"  {n} characters: {right[mask].mean():.2%} of {mask.sum()}")


if __name__ == "__main__":
    main()
