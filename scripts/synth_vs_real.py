"""Which characters a classifier misreads more often on synthetic captchas than on real ones, and back.

A character that one model reads well on real captchas and badly on synthetic ones (or the
other way round) is drawn unlike the real one: this points at the glyphs the synthesizer
should change. Real captchas are scored against labels (for evaluation only, never training).

    python scripts/synth_vs_real.py ../shared/data/hackmit/challenges/challenge-14 \\
        --labels ../shared/data/hackmit/dev-labels.json --mask runs/x/mask.png [--model M]
"""

import argparse
import json
from collections import Counter

from simcaptcha import quiet

quiet.tensorflow()  # TensorFlow without its start-up chatter


def per_char_errors(pairs, alphabet: str) -> dict[str, tuple[int, Counter]]:
    """(truth, reading) text pairs -> {char: (times seen, what it was misread as)} for each char of `alphabet`."""
    seen, misread_as = Counter(), {c: Counter() for c in alphabet}
    for truth, reading in pairs:
        for t, r in zip(truth, reading):
            seen[t] += 1
            if r != t:
                misread_as[t][r] += 1
    return {c: (seen[c], misread_as[c]) for c in alphabet}


def error_rate(seen: int, misread_as: Counter) -> float:
    return misread_as.total() / seen if seen else 0.0


def describe(seen: int, misread_as: Counter) -> str:
    if not seen:
        return f"{'-':>24s}"
    top = ", ".join(f"{r}{n}" for r, n in misread_as.most_common(2))
    return f"{100 * error_rate(seen, misread_as):5.1f}% of {seen:4d} {top:>12s}"


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("challenges", nargs="+", help="real challenge files or folders with labels")
    parser.add_argument("--labels", required=True, help="JSON name -> text for those captchas")
    parser.add_argument("--mask", required=True, help="the user's background (simcaptcha mask)")
    parser.add_argument("--model", default=None, help="classifier to read both (default: shipped)")
    parser.add_argument("-n", type=int, default=3000, help="synthetic captchas to read")
    parser.add_argument("--seed", type=int, default=12345, help="seed of the synthetic captchas")
    parser.add_argument("--top", type=int, default=12, help="characters to list, largest gap first")
    args = parser.parse_args()

    from simcaptcha.challenges import load_captchas
    from simcaptcha.classifier import decode_probs, predict_probs
    from simcaptcha.preprocess import load_background, preprocess
    from simcaptcha.solver import load_classifier, solve_loaded, Solver
    from simcaptcha.synth import Synthesizer

    model, spec = load_classifier(args.model)
    with open(args.labels) as f:
        labels = json.load(f)
    solved = solve_loaded(load_captchas(args.challenges), Solver.from_keras(model, spec)).solutions  # as `simcaptcha solve` reads them
    real = per_char_errors(((labels[s.name], s.text) for s in solved if s.name in labels), spec.alphabet)
    images, texts = Synthesizer(spec, load_background(args.mask, spec.size)).render_batch(args.n, seed=args.seed)
    synthetic = per_char_errors(zip(texts, decode_probs(predict_probs(model, preprocess(images)), spec)[0]), spec.alphabet)

    order = sorted(spec.alphabet, key=lambda c: -abs(error_rate(*synthetic[c]) - error_rate(*real[c])))
    print(f"real: {sum(s.name in labels for s in solved)} labelled captchas; synthetic: {args.n}")
    print(f"{'char':4s} {'real: misread, read as':>30s}   {'synthetic: misread, read as':>30s}")
    for c in order[: args.top]:
        print(f"{c:4s} {describe(*real[c]):>30s}   {describe(*synthetic[c]):>30s}")


if __name__ == "__main__":
    from simcaptcha.files import InputError

    try:
        main()
    except (InputError, OSError, ValueError) as exc:  # a missing file, a bad labels file: one line, no traceback
        raise SystemExit(f"error: {exc}")
