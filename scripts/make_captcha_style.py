"""Make a second captcha style from a seed, as a stand-in for a website whose generator nobody has.

Draws captchas with the `captcha` package from PyPI (`ImageCaptcha` with its own defaults:
160x60, its bundled font), texts of --length characters of a-z0-9 drawn from the seed:

    OUT/train/00000.png ...      --train unlabelled captchas (names say nothing of the text)
    OUT/test/test-00000.png ...  --test captchas for evaluation only (their own names: held-out
                                 captchas are told apart by name)
    OUT/test-labels.json         their texts

simcaptcha itself never imports that package, uses its font or copies its drawing: only this
script does, to make data. Nothing it writes is committed; anyone can re-create it:

    pip install captcha && python scripts/make_captcha_style.py -o data/pycaptcha --seed 0
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


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-o", "--out", required=True, help="folder to write train/, test/ and test-labels.json into")
    parser.add_argument("--train", type=int, default=20_000, help="unlabelled captchas")
    parser.add_argument("--test", type=int, default=1_000, help="labelled captchas for evaluation only")
    parser.add_argument("--length", type=int, default=5, help="characters per captcha")
    parser.add_argument("--seed", type=int, default=0, help="same seed, same captchas")
    args = parser.parse_args()
    try:
        from captcha.image import ImageCaptcha
    except ImportError:
        raise SystemExit("error: this script needs the captcha package: pip install captcha")

    alphabet = string.ascii_lowercase + string.digits
    rng = np.random.default_rng(args.seed)
    seed_captcha_package(args.seed)
    generator = ImageCaptcha()  # its defaults: 160x60, its own fonts
    out = Path(args.out)
    labels = {}
    for part, n in (("train", args.train), ("test", args.test)):
        folder = out / part
        folder.mkdir(parents=True, exist_ok=True)
        for k in range(n):
            text = "".join(alphabet[i] for i in rng.integers(0, len(alphabet), args.length))
            name = f"{k:05d}" if part == "train" else f"test-{k:05d}"
            generator.generate_image(text).save(folder / f"{name}.png")
            if part == "test":
                labels[name] = text
    (out / "test-labels.json").write_text(json.dumps(labels, indent=1))
    print(f"wrote {args.train} unlabelled captchas to {out / 'train'} and {args.test} labelled ones to {out / 'test'}")


if __name__ == "__main__":
    main()
