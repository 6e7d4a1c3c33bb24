"""Fonts chosen by what they teach: a small reader per font, and how surely and evenly it reads the real captchas.

A site draws its characters at random, each about equally often. A reader taught by a font whose
glyphs differ from the site's reads some real glyphs as others, systematically (a site's `0`
read as `o`), so its reads of the unlabelled real captchas hold some characters far more often
than others; or it reads them unsurely. So each candidate font teaches a small reader on its
captchas alone, the reader reads real captchas, and the fonts whose readers read most surely and
most evenly (the most mutual information between a glyph and its reading) are kept. On the
`captcha` style this ranked ten fonts with a Spearman correlation of 0.96 to the labelled
character accuracy of their readers, where the critics' closeness to the real captchas did not
predict it (docs/results.md, 8 December).
"""

from __future__ import annotations

import tempfile
from dataclasses import replace
from pathlib import Path

import numpy as np

from .classifier import ClassifierConfig, predict_probs, read_probs, resolve_head, slot_window, train_classifier
from .spec import CaptchaSpec
from .synth import SynthConfig, Synthesizer, render_pool


def reading_score(char_rows: list[np.ndarray]) -> float:
    """How badly a reader reads a site whose characters are drawn about equally often, from its probability
    rows (one per character read, each summing to 1): the KL divergence of the rows' mean from equal shares
    plus the rows' mean entropy, i.e. log(classes) minus the mutual information between a character's
    image and its reading. 0: every character read surely and each as often; a reader whose mistakes are
    spread evenly but unsure scores badly, and so does one that surely reads some characters as others.
    No characters read: the largest score, log(classes) + log(classes); no captchas at all: infinity."""
    if not char_rows:
        return float("inf")
    rows = [r for r in char_rows if len(r)]
    if not rows:
        return float(2 * np.log(char_rows[0].shape[-1]))
    p = np.clip(np.concatenate(rows).astype(np.float64), 1e-12, 1.0)
    mean = p.mean(axis=0)
    divergence = float(np.sum(mean * np.log(mean * p.shape[1])))
    entropy = float(np.mean(-np.sum(p * np.log(p), axis=1)))
    return divergence + entropy


def fonts_by_reads(real_x: np.ndarray, spec: CaptchaSpec, cfg: SynthConfig, fonts: list[str], background=None,
                   keep: int = 3, steps: int = 500, width: float = 1.0, pool: int = 8000, n_real: int = 2000,
                   head: str = "auto", seed: int = 0, log=print) -> tuple[tuple[str, ...], dict]:
    """The `keep` fonts whose synthetic-only readers read the real captchas most surely and evenly.

    For each font, `pool` captchas drawn with it alone (no glyph variety) teach a fresh reader of
    `width` for `steps` steps; it reads `n_real` of the real preprocessed captchas `real_x`, and the
    font scores `reading_score` of those reads (lower: better). Assumes the site draws each
    character about equally often, as `selftrain.class_balance_weights` does. Returns (chosen
    fonts, {font file name: {"score": score}}), best first.
    """
    import keras

    real = real_x[np.random.default_rng((seed, 9)).permutation(len(real_x))[:n_real]]
    scores = {}
    for k, font in enumerate(fonts):
        synth = Synthesizer(spec, background, replace(cfg, fonts=(font,), char_fonts=(), variety=0.0))
        reader_cfg = ClassifierConfig(steps=steps, width=width, seed=seed, head=resolve_head(head, spec, synth),
                                      eval_every=steps + 1, checkpoint_every=steps + 1, val_size=64)
        reader_cfg = replace(reader_cfg, head_window=slot_window(synth, reader_cfg))
        with tempfile.TemporaryDirectory() as tmp:
            train_classifier(reader_cfg, synth, tmp, pool=render_pool(synth, pool, seed=seed + 7919 * (k + 1)), progress=False,
                             log=lambda *_: None)
            reader = keras.models.load_model(Path(tmp) / "classifier.keras", compile=False)
        _, _, rows = read_probs(predict_probs(reader, real), spec, rows=True)
        scores[font] = reading_score(rows)
        log(f"font reader {k + 1}/{len(fonts)}: {Path(font).name} reads the real captchas with a score of "
            f"{scores[font]:.3f} (lower: surer and more even)")
    order = sorted(fonts, key=lambda f: scores[f])
    chosen = tuple(order[:keep])
    log("chosen fonts (surest, most even reads): " + ", ".join(Path(f).name for f in chosen))
    return chosen, {Path(f).name: {"score": round(scores[f], 4)} for f in order}
