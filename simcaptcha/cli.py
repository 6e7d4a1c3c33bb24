"""The simcaptcha command: one Typer command per stage, each a thin wrapper over a library function."""

from __future__ import annotations

import functools
import os
import sys
from pathlib import Path
from typing import List, Optional

import numpy as np
import typer

from . import quiet

from .challenges import LoadResult, load_captchas
from .files import InputError, copy_atomic, refuse_overwriting_inputs
from .classifier import ADAPTED_ENTRY, ClassifierConfig
from .distill import DistillConfig
from .estimate import CALIBRATION_ENTRY
from .runs import model_entry
from .pipeline import PipelineConfig
from .preprocess import BACKGROUND_SAMPLE
from .simgan import SimGANConfig
from .spec import DEFAULT_ALPHABET, DEFAULT_LENGTH, INKS, CaptchaSpec

SIMGAN_DEFAULTS = SimGANConfig()
CLASSIFIER_DEFAULTS = ClassifierConfig()
WIDTH_HELP = "Classifier width: multiplies its convolution channels and hidden units (2.0: about 4x the weights, about 2.4x slower to train)."
PIPELINE_DEFAULTS = PipelineConfig()
DISTILL_DEFAULTS = DistillConfig()
POOL_HELP = "Synthetic captchas to render once up front, one process per core, and draw every batch from (0: render each batch beside training, slower on few cores)."

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,  # plain help: rich tables cut long option names at 80 columns
    help="Solve text captchas with zero hand labels: synthesize, refine (SimGAN), train, solve.",
)

PathsArg = typer.Argument(..., help="Challenge files (JSON, no extension needed), image files, or folders of them.")
LENGTH_HELP = "Characters per captcha: a number (5) or a range (4-6)."
ALPHABET_HELP = "Characters the captchas use: ranges and literals (a-z0-9, 0-9A-F, 23456789abcdefhkmnpqrstuvwxyz), or a file holding them."
RESIZE_HELP = "Resize every captcha to WIDTHxHEIGHT first (for a folder of mixed sizes); default: all must have one size."
HEAD_HELP = "Recognizer head: slots (one softmax per character window; fixed length), ctc (reads any length in range), auto (slots for a fixed length where characters keep to their places, ctc for a range or where the synthesizer fitted to the captchas moves characters by 0.4 of their pitch or more)."
PRECISION_HELP = ("Arithmetic of the classifiers' training steps: float32, bfloat16 (layers computed in bfloat16, float32 weights; "
                  "saved models stay float32; about 1.25-1.4x faster on a CPU with native bfloat16, slower without), or auto "
                  "(bfloat16 where the CPU has it and there is no GPU, else float32). On HackMIT bfloat16 read as well over two seeds, a point lower after four rounds on one.")


def parse_size(text: Optional[str]) -> Optional[tuple[int, int]]:
    """'160x60' -> (160, 60)."""
    if text is None:
        return None
    try:
        width, height = (int(v) for v in text.lower().split("x"))
    except ValueError:
        fail(f"size {text!r}: expected WIDTHxHEIGHT, like 160x60")
    if not (8 <= width <= 1024 and 8 <= height <= 1024):
        fail(f"size {text!r}: each side must be 8 to 1024 pixels")
    return width, height


def spec_for(images: np.ndarray, length: str, alphabet: str) -> CaptchaSpec:
    """The captcha spec of real captchas (their size) and the --length and --alphabet flags."""
    return CaptchaSpec.for_images(images, length, alphabet)


def fail(message: str, code: int = 1):
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def os_error_line(exc: OSError) -> str:
    """One line for a failed read or write: the path and the reason, as the system words it."""
    where = exc.filename if exc.filename is not None else "output"
    return f"{where}: {exc.strerror or exc.__class__.__name__}"


def command(*args, tensorflow: bool = False, **kwargs):
    """app.command, with every InputError or OSError the command raises turned into one `error:` line.

    tensorflow: the command uses TensorFlow, which is imported first without its start-up chatter.
    """

    def register(fn):
        @functools.wraps(fn)
        def guarded(*a, **k):
            quiet.filter_harmless_warnings()
            if tensorflow:
                quiet.tensorflow()
            try:
                return fn(*a, **k)
            except InputError as exc:
                fail(str(exc))
            except BrokenPipeError:  # the reader went away (`| head`): stop quietly, as other tools do
                os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
                raise typer.Exit(1)
            except OSError as exc:
                fail(os_error_line(exc))

        return app.command(*args, **kwargs)(guarded)

    return register


def load_or_fail(paths: List[Path], resize: Optional[str] = None) -> LoadResult:
    """Load captchas (resized to `resize`, WIDTHxHEIGHT, when given); print one line per bad entry; exit
    non-zero only when nothing usable was read."""
    size = parse_size(resize)
    try:
        result = load_captchas(paths)
    except InputError as exc:
        fail(str(exc))
    for line in result.errors:
        typer.echo(f"skipped: {line}", err=True)
    if not result.captchas:
        fail(f"no usable captcha in {', '.join(map(str, paths))}")
    if size is not None:
        changed = result.resize(size)
        if changed:
            typer.echo(f"resized {changed} captchas to {size[0]}x{size[1]}")
    return result


@command()
def extract(
    paths: List[Path] = PathsArg,
    out: Path = typer.Option(..., "-o", "--out", help="Folder for the images, one file per captcha named after it."),
    png: bool = typer.Option(False, "--png", help="Write lossless PNG instead of the original JPEG bytes."),
):
    """Write every captcha of challenge files as an image file.

    Example: simcaptcha extract ../shared/data/hackmit/challenges -o real/
    """
    import io

    from PIL import Image

    from .files import child_path, write_atomic

    refuse_overwriting_inputs([out], paths)
    result = load_or_fail(paths)
    out.mkdir(parents=True, exist_ok=True)
    for c in result.captchas:
        if c.jpeg is not None and not png:
            write_atomic(child_path(out, f"{c.name}.jpg"), c.jpeg)
        else:
            buf = io.BytesIO()
            Image.fromarray(c.image).save(buf, "PNG")
            write_atomic(child_path(out, f"{c.name}.png"), buf.getvalue())
    typer.echo(f"read {len(result.captchas)} captchas ({len(result.errors)} skipped), wrote them to {out}")


@command()
def mask(
    paths: List[Path] = PathsArg,
    out: Path = typer.Option(..., "-o", "--out", help="Background PNG to write (stripes and noise lines)."),
    limit: int = typer.Option(BACKGROUND_SAMPLE, min=3, help="Use at most this many captchas (the statistics settle long before)."),
    resize: Optional[str] = typer.Option(None, "--resize", help=RESIZE_HELP),
):
    """Estimate one contest user's shared background and noise lines from their captchas.

    The per-pixel median of many captchas keeps what they all share (colour stripes and the
    thin white lines) and drops the characters, which move. Example:
    simcaptcha mask ../shared/data/hackmit/challenges -o mask.png
    """
    from .preprocess import estimate_background, line_mask, save_background

    refuse_overwriting_inputs([out], paths)
    result = load_or_fail(paths, resize)
    images = result.images()[:limit]
    try:
        background = estimate_background(images)
    except ValueError as exc:
        fail(str(exc))
    if out.suffix.lower() != ".png":
        fail(f"{out}: the mask is written as PNG; give a .png name")
    save_background(background, out)
    typer.echo(f"estimated the background from {len(images)} captchas: {int(line_mask(background).sum())} noise-line pixels; wrote {out}")


@command()
def synth(
    n: int = typer.Argument(..., min=1, help="How many captchas to render."),
    out: Path = typer.Option(..., "-o", "--out", help="Folder for <index>.jpg files and labels.json."),
    mask_png: Optional[Path] = typer.Option(None, "--mask", help="Background PNG from `simcaptcha mask` (it gives the size); random stripes without lines if omitted."),
    size: Optional[str] = typer.Option(None, "--size", help="WIDTHxHEIGHT of the captchas, like 160x60 (default: the --mask's size)."),
    length: str = typer.Option(DEFAULT_LENGTH, "--length", help=LENGTH_HELP),
    alphabet: str = typer.Option(DEFAULT_ALPHABET, "--alphabet", help=ALPHABET_HELP),
    seed: int = typer.Option(0, help="Random seed: same seed, same captchas."),
    font: Optional[List[Path]] = typer.Option(None, "--font", help="TrueType font to draw with (repeatable); default: the shipped fonts."),
):
    """Render N labelled synthetic captchas (OUT/<index>.jpg and OUT/labels.json).

    Example: simcaptcha synth 1000 -o synth/ --mask mask.png --seed 1;
    simcaptcha synth 1000 -o synth/ --size 160x60 --length 4-6 --alphabet a-z
    """
    from tqdm import tqdm

    from .synth import write_dataset

    synthesizer = make_synthesizer(mask_png, font, spec_from_flags(mask_png, size, length, alphabet))
    with tqdm(total=n, desc="synth", unit="captcha", disable=None) as bar:
        write_dataset(synthesizer, n, out, seed, progress=bar.update)
    typer.echo(f"wrote {n} captchas and labels.json to {out}")


def spec_from_flags(mask_png: Optional[Path], size: Optional[str], length: str, alphabet: str) -> CaptchaSpec:
    """A spec for commands without real captchas: the size from --size, else from the --mask."""
    parsed = parse_size(size)
    if parsed is None and mask_png is not None:
        from PIL import Image

        try:
            with Image.open(mask_png) as im:
                parsed = im.size
        except (OSError, ValueError) as exc:
            fail(f"{mask_png}: not a mask PNG ({exc.__class__.__name__})")
    if parsed is None:
        fail("give the captcha size: --size WIDTHxHEIGHT, or a --mask of that size")
    return CaptchaSpec.from_flags(parsed[1], parsed[0], length, alphabet)


def make_synthesizer(mask_png: Optional[Path], fonts: Optional[List[Path]], spec: CaptchaSpec):
    from .preprocess import load_background
    from .synth import SynthConfig, Synthesizer

    try:
        background = load_background(mask_png, spec.size) if mask_png else None
        return Synthesizer(spec, background, SynthConfig(fonts=tuple(str(f) for f in fonts or ())))
    except FileNotFoundError as exc:
        fail(str(exc).strip("'\""))
    except (OSError, ValueError) as exc:
        fail(f"{exc}")


@command(tensorflow=True)
def preview(
    paths: List[Path] = PathsArg,
    out: Path = typer.Option(Path("preview.png"), "-o", "--out", help="Contact sheet PNG to write."),
    mask_png: Optional[Path] = typer.Option(None, "--mask", help="Background PNG from `simcaptcha mask`; without it the synthesizer is fitted to the look of the real captchas, as `pipeline` does."),
    refiner: Optional[Path] = typer.Option(None, "--refiner", help="Also show synthetic captchas passed through this refiner.keras."),
    count: int = typer.Option(16, min=1, help="Captchas per row group."),
    seed: int = typer.Option(0, help="Seed of the synthetic captchas."),
    font: Optional[List[Path]] = typer.Option(None, "--font", help="TrueType font to draw with (repeatable)."),
    length: str = typer.Option(DEFAULT_LENGTH, "--length", help=LENGTH_HELP),
    alphabet: str = typer.Option(DEFAULT_ALPHABET, "--alphabet", help=ALPHABET_HELP),
    resize: Optional[str] = typer.Option(None, "--resize", help=RESIZE_HELP),
):
    """Write a contact sheet: real and synthetic captchas, in colour and as the network sees them.

    Example: simcaptcha preview ../shared/data/hackmit/challenges/challenge-0 --mask mask.png
    """
    from .preprocess import preprocess
    from .viz import contact_sheet, save_png

    refuse_overwriting_inputs([out], paths)
    loaded = load_or_fail(paths, resize)
    images = loaded.images()
    real = images[:count]
    if mask_png is not None:
        synthesizer = make_synthesizer(mask_png, font, spec_for(real, length, alphabet))
    else:  # the pipeline's look stage, without choosing fonts
        from .look import catalog_fonts, estimate_look, fit_synth_config
        from .preprocess import estimate_background
        from .synth import SynthConfig, Synthesizer

        look = estimate_look(images, jpeg=loaded.mostly_jpeg(), seed=seed)
        typer.echo(f"look: {look.summary()}")
        spec = CaptchaSpec.for_images(images, length, alphabet, look.ink)
        fonts = tuple(str(f) for f in font or ())
        if look.fixed_background:
            synthesizer = Synthesizer(spec, estimate_background(images[:BACKGROUND_SAMPLE]), SynthConfig(fonts=fonts))
        else:
            synthesizer = Synthesizer(spec, None, fit_synth_config(look, spec, SynthConfig(fonts=fonts or tuple(catalog_fonts())), log=typer.echo))
    synthetic, _ = synthesizer.render_batch(count, seed)
    ink = synthesizer.spec.ink
    rows = [("real", real), ("synthetic", synthetic), ("real, input", preprocess(real, ink)), ("synth, input", preprocess(synthetic, ink))]
    if refiner:
        from .refiner import load_refiner, refine_images

        rows.append(("refined", refine_images(load_refiner(refiner), preprocess(synthetic, ink))))
    save_png(contact_sheet(rows), out)
    typer.echo(f"wrote {out}")


@command("refine-train", tensorflow=True)
def refine_train(
    real: List[Path] = typer.Option(..., "--real", help="Unlabelled real captchas: challenge files or folders (repeatable)."),
    out: Path = typer.Option(..., "-o", "--out", help="Run folder: refiner.keras, config.json, checkpoint, samples/, logs/."),
    mask_png: Optional[Path] = typer.Option(None, "--mask", help="Background PNG from `simcaptcha mask`; estimated from --real if omitted."),
    steps: int = typer.Option(SIMGAN_DEFAULTS.steps, min=0, help="Adversarial iterations (after the two pretraining phases)."),
    batch_size: int = typer.Option(SIMGAN_DEFAULTS.batch_size, min=2, help="Images per batch."),
    reg_lambda: float = typer.Option(SIMGAN_DEFAULTS.reg_lambda, help="Weight of the self-regularization L1 that keeps the characters."),
    features: int = typer.Option(SIMGAN_DEFAULTS.features, min=1, help="Refiner feature maps (F)."),
    blocks: int = typer.Option(SIMGAN_DEFAULTS.blocks, min=0, help="Refiner ResNet blocks (K)."),
    history_size: int = typer.Option(SIMGAN_DEFAULTS.history_size, min=1, help="Refined images kept in the history buffer."),
    pretrain_refiner: int = typer.Option(SIMGAN_DEFAULTS.pretrain_refiner_steps, min=0, help="Refiner steps on self-regularization alone."),
    pretrain_disc: int = typer.Option(SIMGAN_DEFAULTS.pretrain_disc_steps, min=0, help="Discriminator steps before the adversarial phase."),
    seed: int = typer.Option(0, help="Random seed: same seed, same run."),
    font: Optional[List[Path]] = typer.Option(None, "--font", help="TrueType font to draw with (repeatable)."),
    sample_every: int = typer.Option(SIMGAN_DEFAULTS.sample_every, min=1, help="Write a synthetic/refined/real PNG grid every this many steps."),
    checkpoint_every: int = typer.Option(SIMGAN_DEFAULTS.checkpoint_every, min=1, help="Save a resumable checkpoint every this many steps."),
    synthetic_pool: int = typer.Option(SIMGAN_DEFAULTS.synthetic_pool, "--synthetic-pool", min=0, help=POOL_HELP),
    gap_every: int = typer.Option(SIMGAN_DEFAULTS.gap_every, "--gap-every", min=0, help="Also score the domain gap every this many steps, for TensorBoard (0: at the end only; each score trains fresh small critics)."),
    gap_steps: int = typer.Option(SIMGAN_DEFAULTS.gap_steps, "--gap-steps", min=1, help="Training steps of each fresh critic that scores the domain gap (fewer: a quicker, noisier score)."),
    gap_critics: int = typer.Option(SIMGAN_DEFAULTS.gap_critics, "--gap-critics", min=1, help="Critics (seeds) averaged per gap score: one critic's ROC AUC moves by up to 0.09 with its seed."),
    gap_size: int = typer.Option(SIMGAN_DEFAULTS.gap_size, "--gap-size", min=16, help="Synthetic captchas (and as many real ones at most) the gap is scored on."),
    length: str = typer.Option(DEFAULT_LENGTH, "--length", help=LENGTH_HELP),
    alphabet: str = typer.Option(DEFAULT_ALPHABET, "--alphabet", help=ALPHABET_HELP),
    resize: Optional[str] = typer.Option(None, "--resize", help=RESIZE_HELP),
    resume: bool = typer.Option(False, "--resume", help="Continue from OUT/checkpoint.npz with the settings saved there."),
):
    """Train the SimGAN refiner that makes synthetic captchas look like the real ones.

    At the end it prints the domain gap (the mean ROC AUC of fresh critics telling real from
    synthetic, and from refined captchas; 0.5: indistinguishable), writes it to OUT/gap.json, and prints
    an `alarm:` line for a refiner that returns its input or a discriminator that wins outright.

    Example: simcaptcha refine-train --real ../shared/data/hackmit/challenges -o runs/refiner --mask mask.png
    """
    from .preprocess import estimate_background, preprocess, save_background
    from .simgan import train_refiner

    refuse_overwriting_inputs([out], real)
    real_images = load_or_fail(real, resize).images()
    spec = spec_for(real_images, length, alphabet)
    real_x = preprocess(real_images, spec.ink)
    if mask_png is None and resume and (out / "mask.png").is_file():
        mask_png = out / "mask.png"
    elif mask_png is None:
        mask_png = out / "mask.png"
        out.mkdir(parents=True, exist_ok=True)
        save_background(estimate_background(real_images[:BACKGROUND_SAMPLE]), mask_png)
    cfg = SimGANConfig(
        steps=steps, batch_size=batch_size, reg_lambda=reg_lambda, features=features, blocks=blocks,
        history_size=history_size, pretrain_refiner_steps=pretrain_refiner, pretrain_disc_steps=pretrain_disc,
        seed=seed, sample_every=sample_every, checkpoint_every=checkpoint_every, synthetic_pool=synthetic_pool, gap_every=gap_every,
        gap_steps=gap_steps, gap_critics=gap_critics, gap_size=gap_size,
    )
    synthesizer = make_synthesizer(mask_png, font, spec)
    result = train_refiner(cfg, real_x, synthesizer, out, resume=resume, log=typer.echo)
    typer.echo(f"wrote {out / 'refiner.keras'} after {result['seconds']:.0f} s; samples in {out / 'samples'}")


@command(tensorflow=True)
def refine(
    in_dir: Path = typer.Argument(..., help="Folder of synthetic captchas with labels.json (from `simcaptcha synth`)."),
    out: Path = typer.Option(..., "-o", "--out", help="Folder for the refined PNGs and their labels.json."),
    refiner_path: Path = typer.Option(..., "--refiner", help="refiner.keras from `simcaptcha refine-train`."),
):
    """Pass a synthetic set on disk through a trained refiner; labels are carried along.

    Refined images are single-channel PNGs in the preprocessed space (white strokes on black).
    Example: simcaptcha refine synth/ -o refined/ --refiner runs/refiner/refiner.keras
    """
    import io

    from PIL import Image

    from .challenges import read_labels
    from .files import child_path, write_atomic, write_json_atomic
    from .preprocess import preprocess, to_uint8
    from .refiner import load_refiner, refine_images

    labels_path = in_dir / "labels.json"
    if not labels_path.is_file():
        fail(f"{labels_path}: missing; refine expects a folder written by `simcaptcha synth`")
    refuse_overwriting_inputs([out], [in_dir])
    labels, bad_labels = read_labels(labels_path)
    for line in bad_labels:
        typer.echo(f"skipped: {line}", err=True)
    loaded = load_or_fail([in_dir])
    model = load_refiner(refiner_path)
    refined = to_uint8(refine_images(model, preprocess(loaded.images())))
    out_labels = {}
    for captcha, image in zip(loaded.captchas, refined):
        file_name = f"{captcha.name}.png"
        buf = io.BytesIO()
        Image.fromarray(image).save(buf, "PNG")
        write_atomic(child_path(out, file_name), buf.getvalue())
        for key in (f"{captcha.name}.jpg", f"{captcha.name}.png", captcha.name):
            if key in labels:
                out_labels[file_name] = labels[key]
    write_json_atomic(out / "labels.json", out_labels)
    typer.echo(f"refined {len(refined)} captchas into {out}")


def load_eval_set(eval_real: Optional[List[Path]], eval_labels: Optional[Path], spec: Optional[CaptchaSpec] = None,
                  resize: Optional[str] = None):
    """Labelled real captchas for evaluation only, or None when neither option is given (of the spec's size when given)."""
    from .classifier import load_real_eval

    if not (eval_real or eval_labels):
        return None
    if not (eval_real and eval_labels):
        fail("--eval-real and --eval-labels go together")
    real_eval = load_real_eval(eval_real, eval_labels, parse_size(resize), spec.ink if spec else "light")
    if spec is not None and real_eval.x.shape[1:3] != (spec.height, spec.width):
        fail(f"--eval-real captchas are {real_eval.x.shape[2]}x{real_eval.x.shape[1]}, the model reads {spec.width}x{spec.height}")
    return real_eval


@command(tensorflow=True)
def train(
    out: Path = typer.Option(..., "-o", "--out", help="Model folder: classifier.keras (+ refiner.keras), config.json, checkpoint, logs/."),
    refiner_path: Optional[Path] = typer.Option(None, "--refiner", help="refiner.keras to pass every synthetic batch through; omit to train on raw synthetic captchas."),
    mask_png: Optional[Path] = typer.Option(None, "--mask", help="Background PNG; default: mask.png beside --refiner, if there."),
    steps: int = typer.Option(CLASSIFIER_DEFAULTS.steps, min=1, help="Training steps."),
    batch_size: int = typer.Option(CLASSIFIER_DEFAULTS.batch_size, min=2, help="Images per step."),
    learning_rate: float = typer.Option(CLASSIFIER_DEFAULTS.learning_rate, help="Adam learning rate (cosine decay over the run)."),
    seed: int = typer.Option(0, help="Random seed: same seed, same run."),
    eval_real: Optional[List[Path]] = typer.Option(None, "--eval-real", help="Real challenge files for evaluation only (with --eval-labels)."),
    eval_labels: Optional[Path] = typer.Option(None, "--eval-labels", help="JSON name -> text for --eval-real; never used for training."),
    eval_every: int = typer.Option(CLASSIFIER_DEFAULTS.eval_every, min=1, help="Validate every this many steps."),
    font: Optional[List[Path]] = typer.Option(None, "--font", help="TrueType font to draw with (repeatable)."),
    shared_head: bool = typer.Option(
        CLASSIFIER_DEFAULTS.shared_head, "--shared-head/--per-position-heads",
        help="One character reader shared by the four character windows, or a separate head for each position.",
    ),
    width: float = typer.Option(CLASSIFIER_DEFAULTS.width, min=0.25, max=8.0, help=WIDTH_HELP),
    head: str = typer.Option(CLASSIFIER_DEFAULTS.head, "--head", help=HEAD_HELP),
    size: Optional[str] = typer.Option(None, "--size", help="WIDTHxHEIGHT of the captchas, like 160x60 (default: the --mask's size)."),
    length: str = typer.Option(DEFAULT_LENGTH, "--length", help=LENGTH_HELP),
    alphabet: str = typer.Option(DEFAULT_ALPHABET, "--alphabet", help=ALPHABET_HELP),
    synthetic_pool: int = typer.Option(CLASSIFIER_DEFAULTS.synthetic_pool, "--synthetic-pool", min=0, help=POOL_HELP),
    precision: str = typer.Option(CLASSIFIER_DEFAULTS.precision, "--precision", help=PRECISION_HELP),
    resume: bool = typer.Option(False, "--resume", help="Continue from OUT/checkpoint.npz with the settings saved there."),
):
    """Train the recognizer on a stream of (refined) synthetic captchas.

    Example: simcaptcha train -o runs/model --refiner runs/refiner/refiner.keras --eval-real challenge-14 --eval-labels dev-labels.json
    """
    from .classifier import train_classifier
    from .refiner import load_refiner

    if mask_png is None and refiner_path is not None and (refiner_path.parent / "mask.png").is_file():
        mask_png = refiner_path.parent / "mask.png"
    if refiner_path is not None and not refiner_path.is_file():
        fail(f"{refiner_path}: no such refiner model")
    synthesizer = make_synthesizer(mask_png, font, spec_from_flags(mask_png, size, length, alphabet))
    real_eval = load_eval_set(eval_real, eval_labels, synthesizer.spec)
    cfg = ClassifierConfig(
        steps=steps, batch_size=batch_size, learning_rate=learning_rate, seed=seed, eval_every=eval_every,
        refiner=str(refiner_path) if refiner_path else None, shared_head=shared_head, width=width, synthetic_pool=synthetic_pool,
        head=head, precision=precision,
    )
    refiner = load_refiner(refiner_path) if refiner_path else None
    metrics = train_classifier(cfg, synthesizer, out, refiner=refiner, resume=resume, real_eval=real_eval, log=typer.echo)
    typer.echo(f"wrote {out / 'classifier.keras'}: " + ", ".join(f"{k} {v:.4f}" for k, v in metrics.items()))


@command(tensorflow=True)
def ensemble(
    models: List[Path] = typer.Argument(..., help="Classifier models (.keras files or folders holding classifier.keras) to average."),
    out: Path = typer.Option(..., "-o", "--out", help="Model folder to write classifier.keras into (or a .keras path)."),
):
    """Average several classifiers' probabilities in one model, for `simcaptcha solve --model`.

    Example: simcaptcha ensemble runs/p/selftrain_16_a runs/p/selftrain_16_b -o runs/p/model
    """
    from .classifier import average_classifiers
    from .runs import save_model_atomic
    from .solver import load_classifier

    try:
        loaded = [load_classifier(m) for m in models]
    except InputError as exc:
        fail(str(exc))
    specs = {spec for _, spec in loaded}
    if len(specs) > 1:
        fail("these models read different captchas: " + "; ".join(spec.describe() for spec in specs))
    path = out if out.suffix == ".keras" else out / "classifier.keras"
    path.parent.mkdir(parents=True, exist_ok=True)
    save_model_atomic(average_classifiers([m for m, _ in loaded]), path, loaded[0][1])
    typer.echo(f"wrote {path}: the average of {len(loaded)} classifiers")


@command()  # TensorFlow only for a Keras model: Solver.load imports it quietly
def solve(
    paths: List[Path] = PathsArg,
    out: Path = typer.Option(Path("solutions.json"), "-o", "--out", help="Contest body to write; confidences go to <out>.confidence.json."),
    model: Optional[Path] = typer.Option(None, "--model", help="Model folder, classifier.keras, or model.onnx (run by ONNX Runtime); default: the HackMIT model shipped with simcaptcha; fast: its shipped one-network distillation."),
    top: Optional[int] = typer.Option(None, "--top", min=1, help="Keep only the K most confident answers (the contest takes at most 15,000)."),
    ray: bool = typer.Option(False, "--ray", help="Read and solve on Ray Data (a local Ray instance, or --ray-address); for millions of images."),
    ray_address: Optional[str] = typer.Option(None, "--ray-address", help="Ray cluster to run on (for example auto, or ray://host:10001); default: a local instance."),
    ray_actors: int = typer.Option(1, "--ray-actors", min=1, help="Model replicas (Ray actors) reading batches in parallel."),
    resize: bool = typer.Option(False, "--resize", help="Resize captchas of another size to the size the model reads (default: such a captcha is one skipped line)."),
):
    """Solve captchas from challenge files and write {"solutions": [{"name", "solution"}, ...]}.

    Example: simcaptcha solve ../shared/data/hackmit/challenges -o solutions.json --top 15000
    """
    import time

    from .solver import Solver, confidence_path_for, estimate_line, solve_loaded, write_solutions

    refuse_overwriting_inputs([out, confidence_path_for(out)], paths)
    if out.is_dir():
        fail(f"{out}: is a folder; give the solutions file's path (for example {out / 'solutions.json'})")
    start = time.perf_counter()
    if ray:
        from .raybatch import solve_with_ray

        result = solve_with_ray(paths, model, actors=ray_actors, address=ray_address)
        for line in result.errors:
            typer.echo(f"skipped: {line}", err=True)
        if not result.solutions:
            fail(f"no usable captcha in {', '.join(map(str, paths))}")
    else:
        loaded = load_or_fail(paths)
        classifier = Solver.load(model)
        start = time.perf_counter()
        result = solve_loaded(loaded, classifier, resize=resize)
        for line in result.errors[len(loaded.errors):]:
            typer.echo(f"skipped: {line}", err=True)
        if not result.solutions:
            fail(f"no captcha in {', '.join(map(str, paths))} has the size the model reads ({classifier.spec.width}x{classifier.spec.height}); --resize reads them resized")
    elapsed = time.perf_counter() - start
    confidence_path = write_solutions(result, out, top)
    kept = len(result.top(top))
    typer.echo(f"solved {len(result.solutions)} captchas in {elapsed:.1f} s; wrote {kept} answers to {out} and confidences to {confidence_path}")
    typer.echo(estimate_line(result, top))


@command()
def evaluate(
    solutions: Path = typer.Argument(..., help="solutions.json written by `simcaptcha solve`."),
    labels: Path = typer.Option(..., "--labels", help="JSON name -> text of the true answers."),
    confusions: int = typer.Option(10, min=0, help="How many confused character pairs to list."),
    sheet: Optional[Path] = typer.Option(None, "--sheet", help="Write a PNG of the misread captchas (true -> answer, as served and as the network sees them); needs --captchas."),
    captchas: Optional[List[Path]] = typer.Option(None, "--captchas", help="The challenge files that were solved, for --sheet."),
    sheet_max: int = typer.Option(100, min=1, help="At most this many misread captchas on the --sheet."),
    confidence: Optional[Path] = typer.Option(None, "--confidence", help="Per-captcha confidences for the accuracy of the most confident answers (what `solve --top K` keeps); default: <solutions>.confidence.json beside the solutions, where `solve` writes it."),
):
    """Captcha and character accuracy, accuracy per position, most confused pairs, and the accuracy of the most confident answers.

    Example: simcaptcha evaluate solutions.json --labels ../shared/data/hackmit/dev-labels.json
    --sheet misread.png --captchas ../shared/data/hackmit/challenges/challenge-14
    """
    from .challenges import read_labels
    from .solver import accuracy_by_confidence, evaluate as score, read_answers

    if sheet is not None and not captchas:
        fail("--sheet needs --captchas: the challenge files that were solved")
    if sheet is not None:
        refuse_overwriting_inputs([sheet], [solutions, labels, *captchas])
    answers = read_answers(solutions)
    truth, bad_labels = read_labels(labels)
    for line in bad_labels:
        typer.echo(f"skipped: {line}", err=True)
    if not set(answers) & set(truth):
        fail(f"no answer in {solutions} has a label in {labels}")
    wanted = {k: v for k, v in truth.items() if k in answers}
    ev = score(answers, wanted, confusions)
    typer.echo(f"captchas evaluated: {ev.count} (labels without an answer: {len(truth) - len(wanted)})")
    typer.echo(f"captcha accuracy:   {ev.captcha_accuracy:.2%}")
    typer.echo(f"character accuracy: {ev.char_accuracy:.2%}")
    typer.echo("per position:       " + "  ".join(f"{i}: {a:.2%}" for i, a in enumerate(ev.per_position)))
    if ev.confusions:
        typer.echo("most confused (true -> predicted): " + ", ".join(f"{t}->{p} x{c}" for t, p, c in ev.confusions))
    confidences = confidences_for(confidence, solutions)
    if confidences is not None:
        rows = accuracy_by_confidence(answers, wanted, confidences)
        typer.echo("most confident answers: " + "  ".join(f"{share:.0%} ({n}): {acc:.2%}" for share, n, acc in rows))
    estimate = estimate_for(confidence, solutions)
    if estimate is not None:
        scope = "" if len(wanted) == len(answers) else f" (over all {len(answers)} answers, {len(wanted)} of them labelled)"
        typer.echo(f"label-free estimate from solve: {estimate:.2%}{scope}; measured {ev.captcha_accuracy:.2%} "
                   f"(off by {100 * (estimate - ev.captcha_accuracy):+.2f} points)")
    if sheet is not None:
        write_misread_sheet(sheet, captchas, answers, wanted, sheet_max)


def confidences_for(path: Optional[Path], solutions: Path) -> Optional[dict]:
    """The name -> confidence map of --confidence, or the one `solve` wrote beside the solutions.

    The default file is skipped with a warning when it is missing or belongs to other solutions
    (a solve killed between its two writes); a file named by --confidence must be right.
    """
    from .solver import confidence_path_for, read_confidences

    if path is not None:
        return read_confidences(path, solutions)
    path = confidence_path_for(solutions)
    if not path.is_file():
        return None
    try:
        return read_confidences(path, solutions)
    except InputError as exc:
        typer.echo(f"warning: {exc}", err=True)
        return None


def estimate_for(path: Optional[Path], solutions: Path) -> Optional[float]:
    """The label-free accuracy estimate `solve` recorded in the confidence file, if it did."""
    from .solver import confidence_path_for, read_estimate

    path = path if path is not None else confidence_path_for(solutions)
    return read_estimate(path, solutions) if path.is_file() else None


def write_misread_sheet(sheet: Path, captcha_paths: List[Path], answers: dict, truth: dict, most: int):
    """truth: the labelled names that have an answer."""
    from .viz import misread_sheet, save_png

    images = {c.name: c.image for c in load_or_fail(captcha_paths).captchas}
    wrong = [n for n, t in truth.items() if answers[n] != t]
    misread = [(truth[n], answers[n], images[n]) for n in wrong if n in images]
    if len(misread) < len(wrong):
        typer.echo(f"{len(wrong) - len(misread)} misread captchas are not in --captchas; left off the sheet", err=True)
    if not misread:
        typer.echo(f"no misread captcha to draw: {sheet} not written")
        return
    save_png(misread_sheet(misread[:most]), sheet)
    typer.echo(f"wrote {min(len(misread), most)} of {len(misread)} misread captchas to {sheet}")


@command(tensorflow=True)
def distill(
    paths: List[Path] = PathsArg,
    out: Path = typer.Option(..., "-o", "--out", help="Model folder for the student: classifier.keras, config.json, checkpoint, logs/."),
    teacher: Optional[Path] = typer.Option(None, "--teacher", help="Model folder or classifier.keras whose readings the student learns; default: the shipped model."),
    mask_png: Optional[Path] = typer.Option(None, "--mask", help="Background PNG for the synthetic captchas mixed in; default: mask.png beside --teacher, else estimated from the captchas."),
    steps: int = typer.Option(DISTILL_DEFAULTS.steps, min=1, help="Training steps."),
    width: float = typer.Option(DISTILL_DEFAULTS.width, min=0.25, max=8.0, help="Student width (1.0: one network a quarter the size of one width-2 classifier)."),
    conv1_stride: int = typer.Option(DISTILL_DEFAULTS.conv1_stride, "--conv1-stride", min=1, max=2, help="2: the second convolution halves the map itself instead of a max-pool after it (cheaper to read)."),
    filters: str = typer.Option(",".join(map(str, DISTILL_DEFAULTS.filters)), "--filters", help="The student's four convolution widths, comma-separated (before --width)."),
    synthetic: int = typer.Option(20_000, min=0, help="Labelled synthetic captchas rendered once and mixed into every batch (0: real captchas alone)."),
    synthetic_fraction: float = typer.Option(DISTILL_DEFAULTS.synthetic_fraction, min=0.0, max=0.9, help="Share of each batch from the synthetic captchas."),
    shift: int = typer.Option(DISTILL_DEFAULTS.shift, min=0, max=10, help="Pixels by which real captchas are randomly moved in each batch."),
    seed: int = typer.Option(0, help="Random seed: same seed, same run."),
    eval_real: Optional[List[Path]] = typer.Option(None, "--eval-real", help="Held-out real challenge files: excluded from training, used to report accuracy."),
    eval_labels: Optional[Path] = typer.Option(None, "--eval-labels", help="JSON name -> text for --eval-real; never used for training."),
    precision: str = typer.Option(DISTILL_DEFAULTS.precision, "--precision", help=PRECISION_HELP),
    resume: bool = typer.Option(False, "--resume", help="Continue from OUT/checkpoint.npz with the settings saved there."),
):
    """Train one cheaper classifier on a model's readings of unlabelled real captchas (knowledge distillation).

    The student learns the teacher's full probabilities for each real captcha, plus labelled
    synthetic captchas; no real label is used. Example:
    simcaptcha distill challenges/ -o runs/fast --width 1
    """
    from .classifier import resolve_precision
    from .distill import distill_classifier
    from .preprocess import BACKGROUND_SAMPLE, estimate_background, load_background, preprocess
    from .solver import load_classifier
    from .synth import SynthConfig, Synthesizer, render_pool_with_bar

    try:
        channels = tuple(int(f) for f in filters.split(","))
    except ValueError:
        fail(f"--filters {filters!r}: expected integers separated by commas, like 16,32,64,128")
    if len(channels) != 4 or min(channels) < 1:
        fail(f"--filters {filters!r}: expected four positive integers")
    resolve_precision(precision)  # fail before reading the captchas and the teacher
    refuse_overwriting_inputs([out], [*paths, *(eval_real or [])])
    loaded = load_or_fail(paths)
    teacher_model, spec = load_classifier(teacher)
    real_eval = load_eval_set(eval_real, eval_labels, spec)
    held = set(real_eval.names) if real_eval else set()
    loaded.captchas = [c for c in loaded.captchas if c.name not in held]
    if not loaded.captchas:
        fail("no captcha left to learn from once the --eval-real captchas are held out")
    images = loaded.images()
    if images.shape[1:3] != (spec.height, spec.width):
        fail(f"the captchas are {images.shape[2]}x{images.shape[1]}, the teacher reads {spec.width}x{spec.height}")
    if mask_png is None and teacher is not None and (Path(teacher) / "mask.png").is_file():
        mask_png = Path(teacher) / "mask.png"
    background = load_background(mask_png, spec.size) if mask_png else estimate_background(images[:BACKGROUND_SAMPLE])
    synthesizer = Synthesizer(spec, background, SynthConfig())
    pool = None
    if synthetic:
        pool = render_pool_with_bar(synthesizer, synthetic, seed=seed)
        pool = (pool.x, pool.labels)
    cfg = DistillConfig(steps=steps, width=width, conv1_stride=conv1_stride, filters=channels, synthetic_fraction=synthetic_fraction if synthetic else 0.0, shift=shift, seed=seed,
                        precision=precision)
    metrics = distill_classifier(cfg, teacher_model, spec, preprocess(images, spec.ink), out, synthetic=pool,
                                 centers=synthesizer.mean_centers(spec.max_length), real_eval=real_eval, resume=resume, log=typer.echo)
    typer.echo(f"wrote {out / 'classifier.keras'}: " + ", ".join(f"{k} {v:.4f}" for k, v in metrics.items()))


@command(tensorflow=True)
def export(
    model: Optional[Path] = typer.Argument(None, help="Model folder or classifier.keras; default: the shipped model."),
    out: Path = typer.Option(Path("model.onnx"), "-o", "--out", help="ONNX file to write (the captcha spec goes in its metadata)."),
):
    """Export a classifier to ONNX, for solving with ONNX Runtime and no TensorFlow.

    Example: simcaptcha export runs/x/model -o model.onnx, then simcaptcha solve ... --model model.onnx
    """
    from .export import export_onnx

    if model is not None:
        refuse_overwriting_inputs([out], [model])
    spec = export_onnx(model, out)
    typer.echo(f"wrote {out}: {spec['length']} characters of {len(spec['alphabet'])} classes, {spec['width']}x{spec['height']} images")


@command(tensorflow=True)
def calibrate(
    synth: Path = typer.Argument(..., help="Run folder whose synth.json (and mask.png) draws the synthetic captchas, e.g. a pipeline run."),
    model: Optional[Path] = typer.Option(None, "--model", help="Model folder or classifier.keras to calibrate; default: the shipped model."),
    out: Path = typer.Option(..., "-o", "--out", help="classifier.keras to write: the model with its calibration inside (the input is never overwritten)."),
    refiner: Optional[Path] = typer.Option(None, "--refiner", help="Refiner the synthetic captchas pass through; default: refiner.keras beside the model, if there is one."),
    no_refiner: bool = typer.Option(False, "--no-refiner", help="Calibrate on raw synthetic captchas."),
    captchas: int = typer.Option(2000, min=100, help="Synthetic captchas to calibrate on."),
    seed: int = typer.Option(7919, help="Seed of those captchas (keep it apart from the seeds training drew with)."),
):
    """Add a label-free accuracy estimate to a model: its certainty threshold, measured on synthetic captchas.

    `simcaptcha pipeline` calibrates the models it makes; this calibrates another one. `solve` then
    prints the estimated share of answers that are right.

    Example: simcaptcha calibrate runs/x --model runs/x/model -o calibrated/classifier.keras
    """
    from .estimate import calibrate_on_synthetic
    from .refiner import load_refiner
    from .runs import copy_model_with_entries
    from .solver import classifier_path, load_classifier
    from .synth import Synthesizer

    source = classifier_path(model)
    refuse_overwriting_inputs([out], [source, synth])
    keras_model, spec = load_classifier(model)
    synthesizer = Synthesizer.load(synth)
    if synthesizer.spec != spec:
        fail(f"{synth}: draws {synthesizer.spec.describe()}, the model reads {spec.describe()}")
    if refiner is None and not no_refiner and (source.parent / "refiner.keras").is_file():
        refiner = source.parent / "refiner.keras"
    refiner_model = None if no_refiner or refiner is None else load_refiner(refiner)
    # a model normalized on real captchas (AdaBN) reads the synthetic ones normalized on them in turn
    adapted = model_entry(source, ADAPTED_ENTRY, "AdaBN record") is not None
    calibration = calibrate_on_synthetic(keras_model, synthesizer, refiner_model, captchas, seed, own_normalization=adapted)
    out.parent.mkdir(parents=True, exist_ok=True)
    copy_model_with_entries(source, out, {CALIBRATION_ENTRY: calibration.to_dict()})
    typer.echo(f"wrote {out}: reads {calibration.source_accuracy:.2%} of {calibration.source}; certainty threshold {calibration.threshold:.4f}")


@command(tensorflow=True)
def adapt(
    paths: List[Path] = PathsArg,
    out: Path = typer.Option(..., "-o", "--out", help="Model folder to write: classifier.keras with the new statistics, spec.json, and the refiner.keras and mask.png found beside --model (the input model is never overwritten)."),
    model: Optional[Path] = typer.Option(None, "--model", help="Model folder or classifier.keras to adapt; default: the shipped model."),
    captchas: int = typer.Option(4000, min=1, help="Most real captchas the statistics are measured on (a random sample when there are more)."),
    seed: int = typer.Option(0, help="Seed of that sample."),
):
    """Measure a model's batch normalization again on unlabelled real captchas (AdaBN), training nothing.

    A classifier learns its normalization statistics on the captchas it was trained on; measured on
    the captchas it will read instead, a reader trained on synthetic captchas read 1.5 points more
    of HackMIT's on average (`simcaptcha pipeline` does this itself). The model's accuracy
    calibration, measured before, is not carried over: `simcaptcha calibrate RUN --model OUT` adds
    a new one. Example: simcaptcha adapt mine/ --model runs/x/classifier_raw -o runs/x/adapted
    """
    from .classifier import adapt_batchnorm
    from .preprocess import preprocess
    from .runs import save_model_atomic
    from .solver import classifier_path, load_classifier

    source = classifier_path(model)
    refuse_overwriting_inputs([out], [*paths, source])
    keras_model, spec = load_classifier(model)
    loaded = load_or_fail(paths)
    images = loaded.images()
    if images.shape[1:3] != (spec.height, spec.width):
        fail(f"the captchas are {images.shape[2]}x{images.shape[1]}, the model reads {spec.width}x{spec.height}")
    sample = np.sort(np.random.default_rng(seed).permutation(len(images))[:captchas])
    layers = adapt_batchnorm(keras_model, preprocess(images[sample], spec.ink))
    if not layers:
        fail(f"{source}: the model has no batch normalization to adapt")
    out.mkdir(parents=True, exist_ok=True)
    save_model_atomic(keras_model, out / "classifier.keras", spec, {ADAPTED_ENTRY: {"captchas": len(sample)}})
    spec.save(out)
    for name in ("refiner.keras", "mask.png"):
        if (source.parent / name).is_file():
            copy_atomic(source.parent / name, out / name)
    dropped = " (its accuracy calibration is not carried over: `simcaptcha calibrate` adds one)" if model_entry(source, CALIBRATION_ENTRY, "accuracy calibration") else ""
    typer.echo(f"wrote {out / 'classifier.keras'}: {layers} batch normalizations measured on {len(sample)} real captchas{dropped}")


@command()
def serve(
    model: Optional[Path] = typer.Option(None, "--model", help="Model folder, classifier.keras or model.onnx; default: the shipped model; fast: its shipped one-network distillation."),
    host: str = typer.Option("127.0.0.1", help="Address to listen on (0.0.0.0: every interface)."),
    port: int = typer.Option(8000, min=0, max=65535, help="Port to listen on."),
    max_batch: int = typer.Option(256, min=1, help="Most images read in one model call (micro-batching of concurrent requests)."),
    max_wait_ms: float = typer.Option(2.0, min=0.0, help="How long a request waits for others to join its batch, in ms."),
    max_request_bytes: int = typer.Option(4 * 2**20, min=1, help="Largest request body accepted (larger: HTTP 413)."),
):
    """Serve a model over HTTP: POST /solve (an image, or JSON with base64 images), GET /health.

    Example: simcaptcha serve --port 8000, then
    curl --data-binary @examples/captcha.jpg -H 'Content-Type: image/jpeg' localhost:8000/solve
    """
    try:
        from .service import ServiceConfig, serve as run_service
    except ImportError:
        fail("serving needs FastAPI and uvicorn: pip install 'simcaptcha[serve]'")
    from .solver import Solver

    solver = Solver.load(model)
    typer.echo(f"serving {solver.source} ({solver.backend}) on http://{host}:{port}  (POST /solve, GET /health)")
    run_service(solver, host, port, ServiceConfig(max_batch=max_batch, max_wait_ms=max_wait_ms, max_request_bytes=max_request_bytes))


@command(tensorflow=True)
def pipeline(
    paths: List[Path] = PathsArg,
    out: Path = typer.Option(..., "-o", "--out", help="Folder for every stage's run, model/ (the final model), solutions.json and report.json."),
    seed: int = typer.Option(0, help="Random seed for every stage."),
    eval_real: Optional[List[Path]] = typer.Option(None, "--eval-real", help="Held-out real challenge files: excluded from all training, used to report accuracy."),
    eval_labels: Optional[Path] = typer.Option(None, "--eval-labels", help="JSON name -> text for --eval-real; never used for training."),
    refiner_steps: int = typer.Option(PIPELINE_DEFAULTS.refiner_steps, min=0, help="Adversarial refiner iterations."),
    classifier_steps: int = typer.Option(PIPELINE_DEFAULTS.classifier_steps, min=1, help="Classifier steps on refined synthetic captchas."),
    raw_view_steps: int = typer.Option(PIPELINE_DEFAULTS.raw_view_steps, min=1, help="Steps of the second (raw synthetic) view used to filter pseudo-labels."),
    selftrain_steps: int = typer.Option(PIPELINE_DEFAULTS.selftrain_steps, min=1, help="Fine-tuning steps on refined synthetic + pseudo-labelled real captchas."),
    rounds: int = typer.Option(PIPELINE_DEFAULTS.selftrain_rounds, min=0, help="Self-training rounds (pseudo-label, then fine-tune)."),
    threshold: float = typer.Option(PIPELINE_DEFAULTS.selftrain_threshold, min=0.0, max=1.0, help="Probability both views need to keep a pseudo-labelled character."),
    shift: int = typer.Option(PIPELINE_DEFAULTS.selftrain_shift, min=0, max=10, help="Pixels by which pseudo-labelled real captchas are randomly moved in each self-training batch (0: not moved)."),
    erase: int = typer.Option(PIPELINE_DEFAULTS.selftrain_erase, min=0, max=20, help="Small boxes (sides up to 18% of the synthesizer's font size) set to the ground at random places of each pseudo-labelled real captcha, each time it is drawn into a self-training batch (0: none)."),
    real_fraction: float = typer.Option(PIPELINE_DEFAULTS.selftrain_fraction, min=0.0, max=0.95, help="Share of each self-training batch taken from pseudo-labelled real captchas; the rest is synthetic (refined for the refined view)."),
    min_pseudo_labels: int = typer.Option(PIPELINE_DEFAULTS.min_pseudo_labels, min=1, help="Fewest pseudo-labelled captchas a self-training round needs; with fewer it is skipped."),
    width: float = typer.Option(
        PIPELINE_DEFAULTS.classifier_width, min=0.25, max=8.0,
        help=WIDTH_HELP + " Both views. With --resume and another width than the run's views, the next rounds train fresh classifiers of this width (--student-steps) on the pseudo-labels instead of fine-tuning.",
    ),
    student_steps: int = typer.Option(PIPELINE_DEFAULTS.student_steps, min=1, help="Steps of a fresh classifier trained from scratch on a round's pseudo-labels, where --resume changes --width."),
    real_students: int = typer.Option(
        PIPELINE_DEFAULTS.real_students, "--real-students", min=0, max=10,
        help="After the rounds, train this many fresh classifiers one after another, each from scratch on the confident reads of the real captchas by the model before it (a few refined synthetic captchas in each batch); the last one is the final model. A fresh classifier learns each real glyph from what most of its reads say, where a fine-tuned view keeps the synthetic fonts' misreadings (0: none).",
    ),
    real_student_steps: int = typer.Option(PIPELINE_DEFAULTS.real_student_steps, "--real-student-steps", min=1, help="Training steps of each --real-students classifier."),
    balance: bool = typer.Option(PIPELINE_DEFAULTS.balance_classes, "--balance/--no-balance", help="Reweight each view's class probabilities so its picks on the real captchas are uniform over the alphabet before pseudo-labelling."),
    average_views: bool = typer.Option(
        PIPELINE_DEFAULTS.average_views, "--average-views/--refined-view-only",
        help="Final model: the average of both views' probabilities (the refined-synthetic and the raw-synthetic classifier), or the refined view alone. A CTC head's views are never averaged (their frames do not line up).",
    ),
    synthetic_pool: int = typer.Option(
        PIPELINE_DEFAULTS.synthetic_pool, "--synthetic-pool", min=0,
        help=POOL_HELP + " One pool serves every stage.",
    ),
    length: str = typer.Option(DEFAULT_LENGTH, "--length", help=LENGTH_HELP),
    alphabet: str = typer.Option(DEFAULT_ALPHABET, "--alphabet", help=ALPHABET_HELP),
    head: str = typer.Option(PIPELINE_DEFAULTS.head, "--head", help=HEAD_HELP),
    resize: Optional[str] = typer.Option(None, "--resize", help=RESIZE_HELP),
    background: str = typer.Option(PIPELINE_DEFAULTS.background, "--background", help="What synthetic captchas are drawn over, and how: mask (the background the real captchas share, HackMIT's hand-fitted look), fitted (grounds, inks, sizes and places measured on the real captchas), stripes (random stripes), auto (mask where the real captchas share a fixed background, else fitted)."),
    ink: str = typer.Option("auto", "--ink", help="Whether the text is lighter (light) or darker (dark) than its background, or either per captcha (mixed: each captcha is turned so its text is bright); auto: measured on the captchas."),
    font_dir: Optional[Path] = typer.Option(None, "--font-dir", help="A folder of your own fonts (.ttf, .otf) for the fitted synthesizer to choose from, beside the shipped catalog."),
    choose_fonts: bool = typer.Option(PIPELINE_DEFAULTS.choose_fonts, "--choose-fonts/--all-fonts", help="Fitted synthesizer: draw with three fonts chosen on the real captchas (three fresh critics shortlist the closest, see --font-readers; printed), or with every font."),
    font_readers: int = typer.Option(PIPELINE_DEFAULTS.font_readers, "--font-readers", min=0, help="Fitted synthesizer with --choose-fonts: the critics shortlist this many fonts, then a small reader taught by each shortlisted font alone reads real captchas, and the three fonts whose readers read them most surely and each character most nearly equally often are drawn with (about 90 s per font on two cores; 0 or 3: the critics' three)."),
    font_variety: float = typer.Option(PIPELINE_DEFAULTS.font_variety, "--font-variety", min=0.0, max=1.0, help="Fitted synthesizer with --choose-fonts: share of characters drawn with any font of the catalog (and --font-dir) instead of the chosen ones, so the readers also meet glyph shapes the chosen fonts lack (0: chosen fonts only)."),
    calibration_captchas: int = typer.Option(PIPELINE_DEFAULTS.calibration_captchas, "--calibration-captchas", min=0, help="Held-out refined synthetic captchas the final model's label-free accuracy estimate is calibrated on (0: no estimate)."),
    precision: str = typer.Option(PIPELINE_DEFAULTS.precision, "--precision", help=PRECISION_HELP),
    adapt_batchnorm: bool = typer.Option(PIPELINE_DEFAULTS.adapt_batchnorm, "--adapt-batchnorm/--no-adapt-batchnorm", help="AdaBN: measure every batch normalization's statistics again on real training captchas before each round's pseudo-labels and in the final model (the readers learnt them on synthetic or half-synthetic batches; saved view files keep the trained ones). On by default: +0.3 to +1.7 points on the final model, on every run measured (HackMIT, three seeds; the `captcha` style), for about 2 minutes."),
    resume: bool = typer.Option(False, "--resume", help="Skip stages already done in OUT and continue a killed one; also adds rounds to a finished run."),
):
    """Everything from raw challenge files to solutions.json: mask, synth, refine-train, train, self-train, solve.

    The captchas' size comes from the images; say their text length and alphabet with --length and --alphabet.
    Example: simcaptcha pipeline ../shared/data/hackmit/challenges -o runs/hackmit;
    simcaptcha pipeline my_captchas/ -o runs/mine --length 5 --alphabet a-z0-9
    """
    from .challenges import read_labels
    from .classifier import resolve_head, resolve_precision
    from .pipeline import run_pipeline

    refuse_overwriting_inputs([out], [*paths, *(eval_real or [])])
    from .look import estimate_look

    loaded = load_or_fail(paths, resize)
    images = loaded.images()
    look = estimate_look(images, jpeg=loaded.mostly_jpeg(), seed=seed)
    if ink not in ("auto", *INKS):
        fail(f"--ink {ink!r}: expected auto, {', '.join(INKS)}")
    spec = CaptchaSpec.for_images(images, length, alphabet, look.ink if ink == "auto" else ink)
    resolve_head(head, spec)  # fail before any work on a head the spec cannot have
    resolve_precision(precision)
    typer.echo(f"reading {spec.describe()}")
    real_eval = load_eval_set(eval_real, eval_labels, spec, resize)
    labels = read_labels(eval_labels)[0] if real_eval else None
    cfg = PipelineConfig(seed=seed, refiner_steps=refiner_steps, classifier_steps=classifier_steps, raw_view_steps=raw_view_steps,
                         selftrain_steps=selftrain_steps, selftrain_rounds=rounds, selftrain_threshold=threshold, selftrain_shift=shift, selftrain_erase=erase,
                         selftrain_fraction=real_fraction, min_pseudo_labels=min_pseudo_labels, balance_classes=balance, average_views=average_views,
                         classifier_width=width, student_steps=student_steps, synthetic_pool=synthetic_pool, head=head, background=background,
                         choose_fonts=choose_fonts, font_dir=str(font_dir) if font_dir else None, font_readers=font_readers, font_variety=font_variety,
                         calibration_captchas=calibration_captchas, precision=precision,
                         real_students=real_students, real_student_steps=real_student_steps, adapt_batchnorm=adapt_batchnorm)
    report = run_pipeline(loaded, out, spec, cfg, real_eval=real_eval, eval_labels=labels, log=typer.echo, resume=resume, look=look)
    typer.echo(f"pipeline finished in {report['total_seconds']:.0f} s: {out / 'solutions.json'}, model in {out / 'model'}, report in {out / 'report.json'}")


def main():  # pragma: no cover - console entry point
    try:
        app()
    except InputError as exc:
        typer.echo(f"error: {exc}", err=True)
        sys.exit(1)
