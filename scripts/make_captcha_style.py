"""Make a captcha style from a seed, as a stand-in for a website whose generator nobody has.

--generator captcha (the default, the second style): the `captcha` package from PyPI
(`ImageCaptcha` with its own defaults: 160x60, its bundled font), texts of --length characters
of a-z0-9 drawn from the seed.

--generator multicolorcaptcha (a third style, for checking on a look nobody tuned for): the
`multicolorcaptcha` package from PyPI at its smallest size (256x64), difficulty 1, digits: 4 of
them per captcha, each in another of its bundled fonts, light or dark ink on one random ground
colour, with lines and dots. Its texts are its own (drawn from the seed); --length is ignored.

Either writes:

    OUT/train/00000.png ...      --train unlabelled captchas (names say nothing of the text)
    OUT/test/test-00000.png ...  --test captchas for evaluation only (their own names: held-out
                                 captchas are told apart by name)
    OUT/test-labels.json         their texts

simcaptcha itself never imports these packages, uses their fonts or copies their drawing: only
this script does, to make data. Nothing it writes is committed; anyone can re-create it:

    pip install captcha && python scripts/make_captcha_style.py -o data/pycaptcha --seed 0
    pip install multicolorcaptcha && python scripts/make_captcha_style.py -o data/multicolor \
        --generator multicolorcaptcha --seed 0
"""

import argparse
import json
import random
import string
import types
from pathlib import Path

import numpy as np


def seed_captcha_package(seed: int) -> None:
    """Make the `captcha` package's drawing repeatable. Its colours, warps and noise come from `random`
    in older releases and from `secrets` (the system's randomness, never the same twice) in newer ones;
    both are pointed at one generator seeded here."""
    import captcha.image

    draws = random.Random(seed)
    random.seed(seed)
    captcha.image.secrets = types.SimpleNamespace(randbelow=draws.randrange, randbits=draws.getrandbits, choice=draws.choice)


def captcha_drawer(length: int, seed: int):
    """draw(rng) -> (PIL image, text) with the `captcha` package's ImageCaptcha defaults."""
    try:
        from captcha.image import ImageCaptcha
    except ImportError:
        raise SystemExit("error: --generator captcha needs the captcha package: pip install captcha")
    alphabet = string.ascii_lowercase + string.digits
    seed_captcha_package(seed)
    generator = ImageCaptcha()  # its defaults: 160x60, its own fonts

    def draw(rng):
        text = "".join(alphabet[i] for i in rng.integers(0, len(alphabet), length))
        return generator.generate_image(text), text

    return draw


def multicolor_drawer(seed: int):
    """draw(rng) -> (PIL image, text) with multicolorcaptcha: smallest size, difficulty 1, digits."""
    try:
        from multicolorcaptcha import CaptchaGenerator
    except ImportError:
        raise SystemExit("error: --generator multicolorcaptcha needs that package: pip install multicolorcaptcha")
    random.seed(seed)  # it draws everything, texts included, from `random`
    generator = CaptchaGenerator(0)

    def draw(rng):
        captcha = generator.gen_captcha_image(difficult_level=1, chars_mode="nums", multicolor=False, margin=False)
        return captcha.image.convert("RGB"), captcha.characters

    return draw


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-o", "--out", required=True, help="folder to write train/, test/ and test-labels.json into")
    parser.add_argument("--train", type=int, default=20_000, help="unlabelled captchas")
    parser.add_argument("--test", type=int, default=1_000, help="labelled captchas for evaluation only")
    parser.add_argument("--length", type=int, default=5, help="characters per captcha (--generator captcha only)")
    parser.add_argument("--generator", choices=("captcha", "multicolorcaptcha"), default="captcha",
                        help="which PyPI package draws the captchas (see above)")
    parser.add_argument("--seed", type=int, default=0, help="same seed, same captchas")
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)
    draw = captcha_drawer(args.length, args.seed) if args.generator == "captcha" else multicolor_drawer(args.seed)
    out = Path(args.out)
    labels = {}
    for part, n in (("train", args.train), ("test", args.test)):
        folder = out / part
        folder.mkdir(parents=True, exist_ok=True)
        for k in range(n):
            image, text = draw(rng)
            name = f"{k:05d}" if part == "train" else f"test-{k:05d}"
            image.save(folder / f"{name}.png")
            if part == "test":
                labels[name] = text
    (out / "test-labels.json").write_text(json.dumps(labels, indent=1))
    print(f"wrote {args.train} unlabelled captchas to {out / 'train'} and {args.test} labelled ones to {out / 'test'}")


if __name__ == "__main__":
    main()
