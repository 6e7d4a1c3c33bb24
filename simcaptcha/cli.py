"""The simcaptcha command: one Typer command per stage, each a thin wrapper over a library function."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import List, Optional

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # keep TensorFlow's start-up chatter off the terminal

import typer

from .challenges import InputError, LoadResult, load_captchas

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="Solve text captchas with zero hand labels: synthesize, refine (SimGAN), train, solve.",
)

PathsArg = typer.Argument(..., help="Challenge files (JSON, no extension needed), image files, or folders of them.")


def fail(message: str, code: int = 1):
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def load_or_fail(paths: List[Path]) -> LoadResult:
    """Load captchas; print one line per bad entry; exit non-zero only when nothing usable was read."""
    try:
        result = load_captchas(paths)
    except InputError as exc:
        fail(str(exc))
    for line in result.errors:
        typer.echo(f"skipped: {line}", err=True)
    if not result.captchas:
        fail(f"no usable captcha in {', '.join(map(str, paths))}")
    return result


@app.command()
def extract(
    paths: List[Path] = PathsArg,
    out: Path = typer.Option(..., "-o", "--out", help="Folder for the images, one file per captcha named after it."),
    png: bool = typer.Option(False, "--png", help="Write lossless PNG instead of the original JPEG bytes."),
):
    """Write every captcha of challenge files as an image file.

    Example: simcaptcha extract ../shared/data/hackmit/challenges -o real/
    """
    from .challenges import write_atomic

    result = load_or_fail(paths)
    out.mkdir(parents=True, exist_ok=True)
    from PIL import Image
    import io

    for c in result.captchas:
        if c.jpeg is not None and not png:
            write_atomic(out / f"{c.name}.jpg", c.jpeg)
        else:
            buf = io.BytesIO()
            Image.fromarray(c.image).save(buf, "PNG")
            write_atomic(out / f"{c.name}.png", buf.getvalue())
    typer.echo(f"read {len(result.captchas)} captchas ({len(result.errors)} skipped), wrote them to {out}")


@app.command()
def mask(
    paths: List[Path] = PathsArg,
    out: Path = typer.Option(..., "-o", "--out", help="Background PNG to write (stripes and noise lines)."),
    limit: int = typer.Option(3000, help="Use at most this many captchas (the median settles long before)."),
):
    """Estimate one contest user's shared background and noise lines from their captchas.

    The per-pixel median of many captchas keeps what they all share (colour stripes and the
    thin white lines) and drops the characters, which move. Example:
    simcaptcha mask ../shared/data/hackmit/challenges -o mask.png
    """
    from PIL import Image

    from .preprocess import estimate_background, line_mask
    from .viz import save_png

    result = load_or_fail(paths)
    images = result.images()[:limit]
    try:
        background = estimate_background(images)
    except ValueError as exc:
        fail(str(exc))
    if out.suffix.lower() != ".png":
        fail(f"{out}: the mask is written as PNG; give a .png name")
    save_png(Image.fromarray(background), out)
    typer.echo(f"estimated the background from {len(images)} captchas: {int(line_mask(background).sum())} noise-line pixels; wrote {out}")


@app.command()
def synth(
    n: int = typer.Argument(..., min=1, help="How many captchas to render."),
    out: Path = typer.Option(..., "-o", "--out", help="Folder for <index>.jpg files and labels.json."),
    mask_png: Optional[Path] = typer.Option(None, "--mask", help="Background PNG from `simcaptcha mask`; random stripes without lines if omitted."),
    seed: int = typer.Option(0, help="Random seed: same seed, same captchas."),
    font: Optional[List[Path]] = typer.Option(None, "--font", help="TrueType font to draw with (repeatable); default: the shipped fonts."),
):
    """Render N labelled synthetic captchas.

    Example: simcaptcha synth 1000 -o synth/ --mask mask.png --seed 1
    """
    from tqdm import tqdm

    from .synth import write_dataset

    synthesizer = make_synthesizer(mask_png, font)
    with tqdm(total=n, desc="synth", unit="captcha", disable=None) as bar:
        write_dataset(synthesizer, n, out, seed, progress=bar.update)
    typer.echo(f"wrote {n} captchas and labels.json to {out}")


def make_synthesizer(mask_png: Optional[Path], fonts: Optional[List[Path]]):
    from .preprocess import load_background
    from .synth import SynthConfig, Synthesizer

    try:
        background = load_background(mask_png) if mask_png else None
        return Synthesizer(background, SynthConfig(fonts=tuple(str(f) for f in fonts or ())))
    except FileNotFoundError as exc:
        fail(str(exc).strip("'\""))
    except (OSError, ValueError) as exc:
        fail(f"{exc}")


@app.command()
def preview(
    paths: List[Path] = PathsArg,
    out: Path = typer.Option(Path("preview.png"), "-o", "--out", help="Contact sheet PNG to write."),
    mask_png: Optional[Path] = typer.Option(None, "--mask", help="Background PNG from `simcaptcha mask`."),
    refiner: Optional[Path] = typer.Option(None, "--refiner", help="Also show synthetic captchas passed through this refiner.keras."),
    count: int = typer.Option(16, min=1, help="Captchas per row group."),
    seed: int = typer.Option(0, help="Seed of the synthetic captchas."),
    font: Optional[List[Path]] = typer.Option(None, "--font", help="TrueType font to draw with (repeatable)."),
):
    """Write a contact sheet: real and synthetic captchas, in colour and as the network sees them.

    Example: simcaptcha preview ../shared/data/hackmit/challenges/challenge-0 --mask mask.png
    """
    from .preprocess import preprocess
    from .viz import contact_sheet, save_png

    real = load_or_fail(paths).images()[:count]
    synthetic, _ = make_synthesizer(mask_png, font).render_batch(count, seed)
    rows = [("real", real), ("synthetic", synthetic), ("real, input", preprocess(real)), ("synth, input", preprocess(synthetic))]
    if refiner:
        from .refiner import load_refiner, refine_images

        rows.append(("refined", refine_images(load_refiner(refiner), preprocess(synthetic))))
    save_png(contact_sheet(rows), out)
    typer.echo(f"wrote {out}")


def main():  # pragma: no cover - console entry point
    try:
        app()
    except InputError as exc:
        typer.echo(f"error: {exc}", err=True)
        sys.exit(1)
