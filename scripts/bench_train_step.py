"""Training steps per second of the recognizer at each precision, side by side in one process.

    python scripts/bench_train_step.py                          # HackMIT's size and slot head, width 1.5
    python scripts/bench_train_step.py --size 160x60 --length 5 --head ctc

One fixed random batch, the pipeline's loss for the head (CTC or one cross-entropy per slot),
Adam; the precisions take turns (--repeats) so that a busy hour slows all of them alike.
Prints steps/s per precision and turn, and the median.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", default="100x50", help="WIDTHxHEIGHT of the captchas")
    ap.add_argument("--length", type=int, default=4, help="characters per captcha")
    ap.add_argument("--head", default="slots", choices=["slots", "ctc"], help="recognizer head")
    ap.add_argument("--width", type=float, default=1.5, help="ClassifierConfig.width")
    ap.add_argument("--batch-size", type=int, default=64, help="images per step")
    ap.add_argument("--steps", type=int, default=100, help="timed steps per turn (after 10 untimed)")
    ap.add_argument("--repeats", type=int, default=3, help="turns of each precision")
    ap.add_argument("--precision", action="append", choices=["float32", "bfloat16"],
                    help="precisions to time (repeatable; default both)")
    ap.add_argument("--seed", type=int, default=0, help="random seed of the weights and the batch")
    args = ap.parse_args()

    import keras
    import tensorflow as tf

    from simcaptcha.classifier import ClassifierConfig, build_classifier, with_precision
    from simcaptcha.spec import CaptchaSpec

    width, height = map(int, args.size.lower().split("x"))
    spec = CaptchaSpec.from_flags(height, width, str(args.length), "0-9a-z")
    keras.utils.set_random_seed(args.seed)
    base = build_classifier(spec, ClassifierConfig(width=args.width, head=args.head))
    rng = np.random.default_rng(args.seed)
    x = tf.constant(rng.random((args.batch_size, height, width, 1), np.float32))
    y = tf.constant(rng.integers(0, spec.num_classes, (args.batch_size, args.length)).astype(np.int32))
    xent = keras.losses.SparseCategoricalCrossentropy()

    def make_step(model):
        optimizer = keras.optimizers.Adam(1e-3)
        optimizer.build(model.trainable_variables)

        @tf.function
        def step():
            with tf.GradientTape() as tape:
                out = model(x, training=True)
                if args.head == "ctc":
                    n = tf.shape(out)[0]
                    loss = tf.reduce_mean(tf.nn.ctc_loss(y, tf.math.log(out + 1e-8), tf.fill([n], args.length), tf.fill([n], tf.shape(out)[1]),
                                                         logits_time_major=False, blank_index=spec.num_classes))
                else:
                    loss = tf.add_n([xent(y[:, i], out[i]) for i in range(len(out))])
            grads = tape.gradient(loss, model.trainable_variables)
            optimizer.apply_gradients(zip(grads, model.trainable_variables))
            return loss

        return step

    precisions = args.precision or ["float32", "bfloat16"]
    steps = {p: make_step(with_precision(base, p)) for p in precisions}  # float32 trains `base` itself, bfloat16 a clone
    for step in steps.values():  # trace and warm up
        for _ in range(10):
            step()
    rates: dict[str, list[float]] = {p: [] for p in precisions}
    for turn in range(args.repeats):
        for p, step in steps.items():
            t0 = time.perf_counter()
            for _ in range(args.steps):
                loss = step()
            float(loss)
            rates[p].append(args.steps / (time.perf_counter() - t0))
            print(f"turn {turn + 1}: {p:9s} {rates[p][-1]:6.2f} steps/s", flush=True)
    print(f"{args.head} head, {args.size}, width {args.width:g}, batch {args.batch_size}: "
          + ", ".join(f"{p} {statistics.median(r):.2f} steps/s" for p, r in rates.items()))


if __name__ == "__main__":
    main()
