"""The whole job as a list of named stages run by one resumable runner:
look (and mask) -> synth -> refine-train -> train (refined) -> train (raw view) -> self-train rounds -> model -> solve."""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Callable

import numpy as np

from .challenges import LoadResult
from .classifier import (ADAPTED_ENTRY, ClassifierConfig, RealEval, accuracy, adapt_batchnorm, average_classifiers, character_drift, decode_probs, is_ctc, predict_probs, resolve_head,
                         slot_window, train_classifier)
from .estimate import CALIBRATION_ENTRY, AccuracyCalibration, calibrate_on_synthetic, caveat
from .domaingap import GapReport, health_alarms, label_preservation
from .files import InputError, copy_atomic, read_json, write_json_atomic
from .fontfit import fonts_by_reads
from .look import Look, catalog_fonts, choose_fonts, estimate_look, fit_synth_config
from .preprocess import BACKGROUND_SAMPLE, estimate_background, preprocess
from .refiner import load_refiner, refine_images, refine_pool
from .runs import RunDir, save_model_atomic
from .selftrain import agreeing_pseudo_labels, agreeing_texts, class_balance_weights, pseudo_label_accuracy, reweight
from .simgan import SimGANConfig, gap_synthetic, train_refiner
from .solver import Solver, estimate_line, solve_loaded, write_solutions
from .spec import SPEC_FILE, CaptchaSpec
from .synth import SynthConfig, Synthesizer, render_pool_with_bar


POOL_MEMORY_SHARE = 0.5  # the synthetic pool and its refined copy may take this share of the machine's memory
MIN_POOL = 8_000  # a pool that must be smaller than this is not kept at all: batches are rendered as they are drawn


def machine_memory() -> int | None:
    """Bytes of memory this process may use: the machine's, or its container's limit where lower; None if unknown."""
    sizes = []
    try:
        sizes.append(os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    except (AttributeError, OSError, ValueError):
        pass
    for limit in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            text = Path(limit).read_text().strip()
        except OSError:
            continue
        if text.isdigit():
            sizes.append(int(text))
    return min(sizes) if sizes else None


def pool_that_fits(requested: int, spec: CaptchaSpec, real_captchas: int, memory: int | None) -> int:
    """How many synthetic captchas to keep in the pool: `requested`, or fewer where the pool (float32, once raw
    and once refined) and the real captchas (uint8 and float32) would take more than POOL_MEMORY_SHARE of
    `memory` bytes; 0 (no pool) where fewer than MIN_POOL would fit. Large captchas on a small machine are
    otherwise killed for memory midway, with nothing said."""
    if not requested or memory is None:
        return requested
    pixels = spec.height * spec.width
    budget = POOL_MEMORY_SHARE * memory - real_captchas * pixels * (3 + 4)
    fits = int(max(0.0, budget) // (2 * 4 * pixels))
    if fits >= requested:
        return requested
    return fits if fits >= MIN_POOL else 0


@dataclass(frozen=True)
class PipelineConfig:
    seed: int = 0
    refiner_steps: int = 300
    classifier_steps: int = 1500  # on refined synthetic captchas
    raw_view_steps: int = 1200  # second view for self-training, on raw synthetic captchas
    classifier_width: float = 1.5  # ClassifierConfig.width of both views: 92.2% vs 87.5% at 1.0, 16.5 vs 16.0 min (seed 0)
    head: str = "auto"  # ClassifierConfig.head: slots for a fixed length, ctc for a range
    selftrain_steps: int = 700  # fine-tuning steps per view and round, on synthetic + pseudo-labelled real
    selftrain_rounds: int = 2  # pseudo-label -> fine-tune rounds; both views learn from each round but the last
    selftrain_threshold: float = 0.6  # both views at least this sure of the same character
    selftrain_fraction: float = 0.5  # share of each fine-tuning batch taken from pseudo-labelled real captchas
    selftrain_learning_rate: float = 5e-4
    # A view whose width is not classifier_width (a run resumed with another --width) is not
    # fine-tuned: a fresh classifier of the new width learns the round's pseudo-labels from scratch.
    student_steps: int = 3000
    # After the rounds: fresh classifiers, each trained from scratch on the model before it's confident reads of
    # the real captchas (noisy student). A fine-tuned view keeps the glyph shapes the synthetic fonts taught it,
    # misreadings included; a fresh classifier learns each real glyph from what most of its reads say.
    real_students: int = 0
    real_student_steps: int = 1500
    real_student_fraction: float = 0.95  # share of each batch taken from the read real captchas (the rest refined synthetic)
    selftrain_shift: int = 2  # pseudo-labelled real captchas move by up to this many pixels in each fine-tuning batch
    selftrain_erase: int = 0  # small boxes erased from each pseudo-labelled real captcha in each fine-tuning batch
    min_pseudo_labels: int = 32  # a round with fewer pseudo-labelled captchas is skipped
    balance_classes: bool = True  # correct each view's class prior on the real captchas before pseudo-labelling (slots and ctc)
    average_views: bool = True  # slots: the final model averages both views' probabilities (else, and for ctc: the refined view alone)
    synthetic_pool: int = 64_000  # synthetic captchas rendered once up front and shared by all stages (0: render every batch)
    # What synthetic captchas are drawn over, and how: "mask" the background the real captchas share, with
    # the hand-fitted HackMIT look; "fitted" grounds, inks, sizes and places measured on the real captchas
    # (simcaptcha.look); "stripes" random stripes; "auto" mask where the real captchas share a fixed
    # background, else fitted.
    background: str = "auto"
    choose_fonts: bool = True  # fitted: draw with three fonts of the catalog (and --font-dir) chosen on the real captchas
    # fitted, choosing fonts: three critics shortlist this many fonts closest to the real captchas, and of those the three
    # whose small synthetic-only readers read the real captchas most surely and evenly are drawn with (simcaptcha.fontfit;
    # +2.2 points on the `captcha` style, docs/results.md, 8 December); 0 or 3: the critics' three
    font_readers: int = 6
    font_dir: str | None = None  # more fonts to choose from (.ttf, .otf)
    # fitted: share of characters drawn with any font of the catalog (and --font-dir) instead of the chosen ones,
    # so readers also meet glyph shapes the chosen fonts lack (SynthConfig.variety)
    font_variety: float = 0.25
    # Held-out refined synthetic captchas the final model's label-free accuracy estimate is calibrated on
    # (simcaptcha.estimate); 0: no estimate.
    calibration_captchas: int = 2000
    precision: str = "float32"  # ClassifierConfig.precision of every classifier the pipeline trains
    # AdaBN: before each round's pseudo-labels, and in the final model, every BatchNormalization's statistics are
    # measured again on real training captchas (the readers learnt them on synthetic or half-synthetic batches);
    # +1.7, +1.1, +0.3 points on three HackMIT seeds, +1.7 on the `captcha` style (docs/results.md, 2026-12-07)
    adapt_batchnorm: bool = True


@dataclass
class Stage:
    """One named step: `done()` says its outputs are already in the run folder (skipped on resume);
    `run()` makes them; `keys` are the report entries it writes (kept from the earlier report when skipped)."""

    name: str
    run: Callable[[], None]
    done: Callable[[], bool] | None  # None: a cheap stage that runs every time
    keys: tuple[str, ...] = ()


# CTC views' class weights are fitted on this many real captchas (every one for slot views).
BALANCE_SAMPLE = 5000
# Real training captchas the normalization statistics are measured on (AdaBN): a mean and a
# variance per channel settle long before, and each captcha costs a forward pass per BatchNormalization.
ADAPT_SAMPLE = 4000


# Boxes erased from pseudo-labelled real captchas (--erase) reach this share of the synthesizer's mean font
# size on a side: about a stroke's length, so that a box hides part of a character, not all of it or its
# one telling detail (HackMIT's font of 24 px: 4 px; the `captcha` style's 54 px: 10 px).
ERASE_SIDE = 0.18


def erase_side(synth: Synthesizer) -> int:
    """Longest side, px, of the boxes erased from pseudo-labelled real captchas for `synth`'s glyph size."""
    return max(1, round(ERASE_SIDE * float(np.mean(synth.font_size))))


def student_dir(out: Path, i: int, cfg: PipelineConfig) -> Path:
    """Where real student i (from 0) is trained: named after the rounds before it, so that a run resumed with more
    rounds trains its students again from the new views instead of keeping ones taught by older views."""
    return out / f"round_{cfg.selftrain_rounds}_student_{i + 1}"


def round_run_dirs(out: Path, r: int, cfg: PipelineConfig) -> dict[str, Path]:
    """The views trained in self-training round r (from 0): both, except in the last round (only the refined view)."""
    trained = ["a"] if r == cfg.selftrain_rounds - 1 else ["a", "b"]
    return {k: out / f"selftrain_{r + 1}_{k}" for k in trained}


def view_width(classifier_path: Path) -> float:
    """The width a view was trained at, from the config of its run folder."""
    return RunDir(Path(classifier_path).parent).load_config(ClassifierConfig).width


def is_trained(run_dir: Path) -> bool:
    return (run_dir / "classifier.keras").is_file() and (run_dir / "metrics.json").is_file()


@dataclass
class Pipeline:
    """The stages of one pipeline run over the real captchas `images` (training only; held-out ones removed)."""

    out: Path
    cfg: PipelineConfig
    spec: CaptchaSpec
    loaded: LoadResult
    images: np.ndarray
    names: list[str]
    real_eval: RealEval | None = None
    eval_labels: dict | None = None
    look: Look | None = None
    log: Callable = print
    progress: bool = True
    resume: bool = False
    report: dict = field(default_factory=dict)
    previous: dict = field(default_factory=dict)
    _pool: object = None
    _refined_pools: dict = field(default_factory=dict)
    _real_x: np.ndarray | None = None
    _model: object = None  # the final model, made by the "model" stage
    _calibration: AccuracyCalibration | None = None  # its label-free accuracy calibration
    _synth: Synthesizer | None = None  # the fitted synthesizer, read from synth.json once

    # -- shared pieces -----------------------------------------------------------------------------
    @property
    def mask_path(self) -> Path:
        return self.out / "mask.png"

    @property
    def refiner_path(self) -> Path:
        return self.out / "refiner" / "refiner.keras"

    @property
    def real_x(self) -> np.ndarray:
        if self._real_x is None:
            self._real_x = preprocess(self.images, self.spec.ink)
        return self._real_x

    def synthesizer(self) -> Synthesizer:
        """The synthesizer the look stage fitted and saved (synth.json, mask.png), read once."""
        if self._synth is None:
            self._synth = Synthesizer.load(self.out)
        return self._synth

    def pool(self):
        """The synthetic pool every stage draws from, rendered on first use (again on --resume: the seed fixes it)."""
        if self._pool is None and self.cfg.synthetic_pool:
            self._pool = render_pool_with_bar(self.synthesizer(), self.cfg.synthetic_pool, seed=self.cfg.seed, show=self.progress)
        return self._pool

    def refined_pool(self):
        pool = self.pool()
        if pool is None:
            return None
        key = str(self.refiner_path)
        if key not in self._refined_pools:
            self._refined_pools[key] = refine_pool(pool, load_refiner(self.refiner_path), key)
        return self._refined_pools[key]

    def simgan_config(self) -> SimGANConfig:
        return SimGANConfig(steps=self.cfg.refiner_steps, seed=self.cfg.seed, synthetic_pool=self.cfg.synthetic_pool)

    def view_configs(self) -> dict[str, ClassifierConfig]:
        cfg = self.cfg
        base = ClassifierConfig(seed=cfg.seed, width=cfg.classifier_width, synthetic_pool=cfg.synthetic_pool,
                                head=resolve_head(cfg.head, self.spec, self.synthesizer()), precision=cfg.precision)
        base = replace(base, head_window=slot_window(self.synthesizer(), base))  # wider where characters move more
        return {"a": replace(base, steps=cfg.classifier_steps, refiner=str(self.refiner_path)),
                "b": replace(base, steps=cfg.raw_view_steps, seed=cfg.seed + 1)}

    def train(self, cfg: ClassifierConfig, run_dir: Path, **kwargs) -> dict:
        refined = cfg.refiner is not None
        return train_classifier(cfg, self.synthesizer(), run_dir, refiner=load_refiner(self.refiner_path) if refined else None,
                                pool=self.refined_pool() if refined else self.pool(), real_eval=self.real_eval,
                                resume=self.resume, progress=self.progress, log=self.log, **kwargs)

    def latest_view(self, k: str, before_round: int) -> Path:
        """The newest model of view k ('a' refined, 'b' raw) trained before self-training round `before_round`."""
        for r in range(before_round - 1, -1, -1):
            run_dir = round_run_dirs(self.out, r, self.cfg).get(k)
            if run_dir is not None and is_trained(run_dir):
                return run_dir / "classifier.keras"
        return self.out / ("classifier_refined" if k == "a" else "classifier_raw") / "classifier.keras"

    # -- stages ------------------------------------------------------------------------------------
    def stages(self) -> list[Stage]:
        cfg, out = self.cfg, self.out
        training_dirs = [out / "classifier_refined", out / "classifier_raw"]
        training_dirs += [d for r in range(cfg.selftrain_rounds) for d in round_run_dirs(out, r, cfg).values()]
        all_trained = lambda: self.refiner_path.is_file() and all(is_trained(d) for d in training_dirs)  # noqa: E731
        stages = [
            Stage("look", self.fit_look, None),
            Stage("synth", lambda: self.pool(), lambda: not cfg.synthetic_pool or all_trained()),
            Stage("refine-train", self.refine_train, lambda: self.refiner_path.is_file()),
            Stage("train (refined)", lambda: self.train_view("a"), lambda: is_trained(out / "classifier_refined"), ("refined",)),
            Stage("train (raw view)", lambda: self.train_view("b"), lambda: is_trained(out / "classifier_raw"), ("raw", "gap")),
        ]
        for r in range(cfg.selftrain_rounds):
            stages.append(Stage(f"self-train {r + 1}", lambda r=r: self.selftrain_round(r),
                                lambda r=r: r < len(self.previous.get("rounds", []))
                                and all(is_trained(d) for d in round_run_dirs(out, r, cfg).values())))
        for i in range(cfg.real_students):
            stages.append(Stage(f"student {i + 1}", lambda i=i: self.real_student(i),
                                lambda i=i: i < len(self.previous.get("students", [])) and is_trained(student_dir(out, i, cfg))))
        stages.append(Stage("model", self.final_model, None, ("final",)))
        stages.append(Stage("solve", self.solve, None, ("solve", "estimated_accuracy")))
        return stages

    def fit_look(self) -> None:
        """Measure the real captchas' look and write the synthesizer every later stage draws with."""
        if self.resume and (self.out / "synth.json").is_file():
            self.log("look: the synthesizer of the earlier run is kept (synth.json)")
            self.log_head()
            return
        if self.look is None:
            self.look = estimate_look(self.images, jpeg=self.loaded.mostly_jpeg(), seed=self.cfg.seed)
        write_json_atomic(self.out / "look.json", self.look.to_dict())
        self.log(f"look: {self.look.summary()}")
        mode = self.cfg.background
        if mode == "auto":
            mode = "mask" if self.look.fixed_background else "fitted"
        background = None
        if mode == "mask":
            background = estimate_background(self.images[:BACKGROUND_SAMPLE])
            config = SynthConfig()
        elif mode == "fitted":
            config = self.fitted_config()
        elif mode == "stripes":
            config = SynthConfig()
        else:
            raise InputError(f"background {mode!r}: expected auto, mask, fitted or stripes")
        self.report["synthesizer"] = mode
        Synthesizer(self.spec, background, config).save(self.out)
        self._synth = None  # read back from what was just saved
        self.log_head()

    def log_head(self) -> None:
        head = resolve_head(self.cfg.head, self.spec, self.synthesizer())
        self.report["head"] = head
        self.log(f"recognizer head: {head} (--head {self.cfg.head}; the synthesizer moves characters by up to "
                 f"{character_drift(self.synthesizer()):.2f} of their pitch)")

    def fitted_config(self) -> SynthConfig:
        """The look's synthesizer settings, drawn with the fonts that fit the real captchas best."""
        fonts = catalog_fonts()
        if self.cfg.font_dir:
            extra = sorted(str(p) for p in Path(self.cfg.font_dir).iterdir() if p.suffix.lower() in (".ttf", ".otf"))
            if not extra:
                raise InputError(f"{self.cfg.font_dir}: no .ttf or .otf font")
            fonts += extra
        config = fit_synth_config(self.look, self.spec, SynthConfig(fonts=tuple(fonts)), log=self.log)
        if not self.cfg.choose_fonts:
            return config
        keep = 3
        chosen, scores = choose_fonts(self.real_x, self.spec, config, fonts, keep=max(keep, self.cfg.font_readers),
                                      seed=self.cfg.seed, log=self.log)
        self.report["fonts"] = {"fit": scores, "variety": self.cfg.font_variety}
        if len(chosen) > keep:
            chosen, reads = fonts_by_reads(self.real_x, self.spec, config, list(chosen), keep=keep, head=self.cfg.head,
                                           seed=self.cfg.seed, log=self.log)
            self.report["fonts"]["reads"] = reads
        self.report["fonts"]["chosen"] = [Path(f).name for f in chosen]
        config = SynthConfig(fonts=chosen, variety=self.cfg.font_variety, variety_fonts=tuple(fonts))
        return fit_synth_config(self.look, self.spec, config, log=self.log)  # sizes again, for these fonts

    def refine_train(self) -> None:
        train_refiner(self.simgan_config(), self.real_x, self.synthesizer(), self.out / "refiner", resume=self.resume,
                      pool=self.pool(), progress=self.progress, log=self.log)

    def train_view(self, k: str) -> None:
        run_dir = self.out / ("classifier_refined" if k == "a" else "classifier_raw")
        self.report["refined" if k == "a" else "raw"] = self.train(self.view_configs()[k], run_dir)
        if k == "b":
            self.report["gap"] = self.refiner_health(run_dir / "classifier.keras")

    def refiner_health(self, reader_path: Path) -> dict:
        """The refiner's gap scores (from refine-train's gap.json) with label preservation: how many of the gap's
        synthetic captchas the raw-synthetic view reads right once refined, against unrefined. Alarms that
        refine-train did not already print are logged."""
        import keras

        gap_path = self.out / "refiner" / "gap.json"
        gap = json.loads(gap_path.read_text()) if gap_path.is_file() else {}
        synthetic, texts = gap_synthetic(self.synthesizer(), self.simgan_config())
        refined = refine_images(load_refiner(self.refiner_path), synthetic)
        reader = keras.models.load_model(reader_path, compile=False)
        kept = label_preservation(lambda x: decode_probs(predict_probs(reader, x), self.spec)[0], synthetic, refined, texts)
        # Each view's accuracy on held-out synthetic captchas of its own kind (refined for the refined view).
        views = [self.report.get(k, {}).get("val/synthetic_captcha_acc") for k in ("refined", "raw")]
        learnable = views[0] / views[1] if None not in views and views[1] > 0 else None
        self.log(f"label preservation: the raw-synthetic view reads {kept['synthetic_acc']:.1%} of synthetic captchas and "
                 f"{kept['refined_acc']:.1%} of the same refined"
                 + ("" if learnable is None else f"; the refined view learns {views[0]:.1%} of refined ones, the raw view {views[1]:.1%} of raw ones"))
        unknown = float("nan")  # an older refiner run without gap.json: no gap alarm can fire
        report = GapReport(gap.get("synthetic_gap", unknown), gap.get("refined_gap", unknown), gap.get("mean_change", unknown), kept["kept"],
                           learnable)
        for line in health_alarms(report):
            if line not in gap.get("alarms", []):
                self.log(f"alarm: {line}")
        return {**{k: v for k, v in gap.items() if k != "alarms"}, "label_preservation": {**kept, "learnable": learnable}}

    def pseudo_labels(self, views: dict, balance: bool | None = None) -> tuple[object, dict]:
        """The round's pseudo-labels from both views, and what is known of them (held-out precision where labels exist).

        balance: correct each view's class prior first (default: PipelineConfig.balance_classes)."""
        cfg, spec = self.cfg, self.spec
        def predict_each(x):  # a model standing as both views is read once
            read = {id(v): predict_probs(v, x) for v in views.values()}
            return {k: read[id(v)] for k, v in views.items()}

        probs = predict_each(self.real_x)
        ctc = is_ctc(probs["a"], spec)
        held = predict_each(self.real_eval.x) if self.real_eval else None
        info: dict = {}
        # Texts are drawn uniformly from the alphabet: a reader that picks some characters far more often
        # than others on the real captchas (o for 0, s for 5) is corrected before it labels them.
        # ctc decodes every frame of every captcha per pass: fitted on at most BALANCE_SAMPLE of them, until
        # every character is read as often as an equal share, within sampling noise
        fit = {"ctc": True, "stop_within": 3.0} if ctc else {}
        sample = {k: p[:: -(-len(p) // BALANCE_SAMPLE)] if ctc else p for k, p in probs.items()}
        ones = np.ones(spec.num_classes)
        balance = cfg.balance_classes if balance is None else balance
        weights = {k: class_balance_weights(p, **fit) if balance else ones for k, p in sample.items()}
        if balance:
            info["class_weights"] = {k: dict(zip(spec.alphabet, np.round(w, 3).tolist())) for k, w in weights.items()}
        if ctc:
            def label(x, names, p):
                (ta, ca), (tb, cb) = (decode_probs(reweight(p[k], weights[k]), spec) for k in ("a", "b"))
                return agreeing_texts(x, names, ta, ca, tb, cb, cfg.selftrain_threshold, spec)
        else:
            def label(x, names, p):
                a, b = reweight(p["a"], weights["a"]), reweight(p["b"], weights["b"])
                return agreeing_pseudo_labels(x, names, a, b, cfg.selftrain_threshold, spec.alphabet)
        pseudo = label(self.real_x, self.names, probs)
        info.update({"considered": pseudo.considered, "kept": len(pseudo.texts), "known_chars": pseudo.known_chars})
        if held is not None:
            # The same filter (and weights) on the held-out captchas says how accurate kept pseudo-labels are.
            probe = label(self.real_eval.x, self.real_eval.names, held)
            truth = dict(zip(self.real_eval.names, self.real_eval.texts))
            info["held_out"] = {"considered": len(self.real_eval.names), **pseudo_label_accuracy(probe, truth)}
        if self.eval_labels:
            labelled = pseudo_label_accuracy(pseudo, self.eval_labels)
            if labelled["captchas"]:
                info["labelled"] = labelled
        return pseudo, info

    def selftrain_round(self, r: int) -> None:
        import keras

        cfg = self.cfg
        rounds = self.report.setdefault("rounds", [])
        del rounds[r:]
        view_paths = {k: self.latest_view(k, r) for k in ("a", "b")}
        views = {k: self.adapted(keras.models.load_model(p, compile=False)) for k, p in view_paths.items()}
        pseudo, info = self.pseudo_labels(views)
        self.log(f"round {r + 1} pseudo-labels: {len(pseudo.texts)} of {pseudo.considered} real captchas, {pseudo.known_chars} known characters "
                 + json.dumps({k: v for k, v in info.items() if k in ("held_out", "labelled")}))
        rounds.append(info)
        if len(pseudo.texts) < cfg.min_pseudo_labels:
            self.log("too few pseudo-labels to self-train; stopping self-training here")
            return
        view_cfgs = self.view_configs()
        for k, run_dir in round_run_dirs(self.out, r, cfg).items():
            width_before = view_width(view_paths[k])
            fresh = not is_trained(run_dir) and width_before != cfg.classifier_width
            if fresh:
                self.log(f"{run_dir}: the view before it is {width_before:g} wide, so a fresh width-{cfg.classifier_width:g} classifier learns from scratch")
            if is_trained(run_dir):
                info[f"view_{k}"] = json.loads((run_dir / "metrics.json").read_text())
                continue
            schedule = {"steps": cfg.student_steps} if fresh else {"steps": cfg.selftrain_steps, "learning_rate": cfg.selftrain_learning_rate}
            st_cfg = replace(view_cfgs[k], extra_shift=cfg.selftrain_shift, extra_erase=cfg.selftrain_erase,
                             extra_erase_side=erase_side(self.synthesizer()), seed=cfg.seed + 10 * (r + 1) + (k == "b"), **schedule)
            info[f"view_{k}"] = self.train(st_cfg, run_dir, extra_data=(pseudo.x, pseudo.labels), extra_fraction=cfg.selftrain_fraction,
                                           init_model=None if fresh else views[k])

    def final_model(self) -> None:
        final_dir = self.out / "model"
        final_dir.mkdir(exist_ok=True)
        model, averaged, student = self.latest_model(self.cfg.real_students)
        if student is not None:
            self.log(f"final model: student {student + 1}")
        self._calibration = self.calibrate(model) if self.cfg.calibration_captchas else None
        if self._calibration is not None and student is not None:
            self._calibration = replace(self._calibration, student=True)
        entries = {CALIBRATION_ENTRY: self._calibration.to_dict()} if self._calibration else {}
        if self.cfg.adapt_batchnorm:
            entries[ADAPTED_ENTRY] = {"captchas": len(self.adapt_sample())}
        save_model_atomic(model, final_dir / "classifier.keras", self.spec, entries)
        self.spec.save(final_dir)
        copy_atomic(self.refiner_path, final_dir / "refiner.keras")
        if self.mask_path.is_file():
            copy_atomic(self.mask_path, final_dir / "mask.png")
        self._model = model
        final = {"averaged_views": averaged}
        if self._calibration is not None:
            final["calibration"] = self._calibration.to_dict()
        if self.real_eval is not None:
            probs = predict_probs(model, self.real_eval.x)
            captcha_acc, char_acc = accuracy(decode_probs(probs, self.spec)[0], self.real_eval.texts)
            final.update({"val/real_captcha_acc": captcha_acc, "val/real_char_acc": char_acc})
            if self._calibration is not None:
                final["val/real_estimated_acc"] = self._calibration.estimate(probs)
                note = caveat(probs, self.spec, self._calibration)
                self.log(f"held-out real captchas: read {captcha_acc:.2%}, estimated without labels "
                         f"{final['val/real_estimated_acc']:.2%}" + (f" ({note})" if note else ""))
        self.report["final"] = final

    def views_model(self) -> tuple[object, bool]:
        """The model the views make after the last round, and whether it averages both."""
        import keras

        # The raw view's latest model is a round older when the last round trains only the refined view.
        paths = {k: self.latest_view(k, self.cfg.selftrain_rounds) for k in ("a", "b")}
        model = keras.models.load_model(paths["a"], compile=False)
        # CTC views each place a character on frames of their own, and an average of two such sequences
        # blurs both: CTC models are not averaged (the `captcha` style: 66.5% averaged, 68.1% refined view).
        averaged = self.cfg.average_views and not is_ctc(model, self.spec)
        if averaged:
            model = average_classifiers([model, keras.models.load_model(paths["b"], compile=False)])
        elif self.cfg.average_views:
            self.log("the views' model: the refined view alone (CTC views are not averaged)")
        return model, averaged

    def latest_model(self, before_student: int) -> tuple[object, bool, int | None]:
        """The newest reader before real student `before_student` (from 0): the last student trained before it,
        else the views' model; whether it averages both views; which student it is (None: the views)."""
        import keras

        trained = [j for j in range(before_student) if is_trained(student_dir(self.out, j, self.cfg))]
        if trained:
            path = student_dir(self.out, trained[-1], self.cfg) / "classifier.keras"
            return self.adapted(keras.models.load_model(path, compile=False)), False, trained[-1]
        model, averaged = self.views_model()
        return self.adapted(model), averaged, None

    def adapted(self, model):
        """`model` with its normalization statistics measured on real training captchas, unless --no-adapt-batchnorm
        (AdaBN; the files on disk keep the trained ones); else `model` as it is."""
        if self.cfg.adapt_batchnorm:
            adapt_batchnorm(model, self.real_x[self.adapt_sample()])
        return model

    def adapt_sample(self) -> np.ndarray:
        """Indices of the real training captchas AdaBN measures the statistics on (the same every time)."""
        return np.sort(np.random.default_rng((self.cfg.seed, 4)).permutation(len(self.real_x))[:ADAPT_SAMPLE])

    def real_student(self, i: int) -> None:
        """Student i: a fresh classifier trained on the confident reads of the real captchas by the model before it
        (the views' model, or student i - 1), with a few refined synthetic captchas in each batch."""
        cfg = self.cfg
        students = self.report.setdefault("students", [])
        del students[i:]
        teacher, _, _ = self.latest_model(i)
        pseudo, info = self.pseudo_labels({"a": teacher, "b": teacher}, balance=False)
        self.log(f"student {i + 1} learns from {len(pseudo.texts)} of {pseudo.considered} real captchas, {pseudo.known_chars} known characters "
                 + json.dumps({k: v for k, v in info.items() if k in ("held_out", "labelled")}))
        students.append(info)
        if len(pseudo.texts) < cfg.min_pseudo_labels:
            self.log(f"student {i + 1}: too few real captchas read surely enough to learn from; the model before it stays the final one")
            return
        st_cfg = replace(self.view_configs()["a"], steps=cfg.real_student_steps, extra_shift=cfg.selftrain_shift,
                         extra_erase=cfg.selftrain_erase, extra_erase_side=erase_side(self.synthesizer()),
                         seed=cfg.seed + 1000 + i)
        info["student"] = self.train(st_cfg, student_dir(self.out, i, cfg), extra_data=(pseudo.x, pseudo.labels),
                                     extra_fraction=cfg.real_student_fraction)

    def calibrate(self, model) -> AccuracyCalibration:
        """The final model's certainty threshold, on refined synthetic captchas no stage trained on (another seed)."""
        return calibrate_on_synthetic(model, self.synthesizer(), load_refiner(self.refiner_path),
                                      self.cfg.calibration_captchas, seed=self.cfg.seed + 7919,
                                      own_normalization=self.cfg.adapt_batchnorm)

    def solve(self) -> None:
        start = time.perf_counter()
        result = solve_loaded(self.loaded, Solver.from_keras(self._model, self.spec, str(self.out / "model"), self._calibration))
        seconds = time.perf_counter() - start
        write_solutions(result, self.out / "solutions.json")
        self.log(estimate_line(result))
        estimate = result.estimated_accuracy()
        if estimate is not None:
            self.report["estimated_accuracy"] = round(estimate, 6)
        self.report["solve"] = {"captchas": len(result.solutions), "seconds": round(seconds, 2),
                                "per_second": round(len(result.solutions) / max(seconds, 1e-9))}


def run_stages(stages: list[Stage], report: dict, previous: dict, resume: bool, log=print, progress: bool = True) -> None:
    """Run each stage in order; on resume, a stage whose outputs exist is skipped and keeps the earlier run's
    report entries and time. A stage killed part-way continues from its own checkpoint when run again, and one
    an earlier run finished but that has more to do now (a round that gains a view) adds both runs' times."""
    from tqdm import tqdm

    bar = tqdm(total=len(stages), desc="pipeline", position=0, disable=not progress, dynamic_ncols=True)
    report.setdefault("stage_seconds", {})
    for stage in stages:
        start = time.time()
        earlier = previous.get("stage_seconds", {}).get(stage.name)
        if resume and stage.done is not None and stage.done():
            log(f"{stage.name}: done before, kept")
            for key in stage.keys:
                if key in previous:
                    report[key] = previous[key]
            seconds = earlier if earlier is not None else 0.0
        else:
            stage.run()
            seconds = round(time.time() - start, 1)
            if resume and stage.done is not None and earlier is not None:
                seconds = round(earlier + seconds, 1)
        report["stage_seconds"][stage.name] = seconds
        bar.update(1)
        bar.set_postfix(last=stage.name)
    bar.close()


def run_pipeline(loaded: LoadResult, out_dir, spec: CaptchaSpec, cfg: PipelineConfig = PipelineConfig(),
                 real_eval: RealEval | None = None, eval_labels: dict | None = None, log=print, progress: bool = True,
                 resume: bool = False, look: Look | None = None) -> dict:
    """Train everything from unlabelled captchas of `spec` and solve them. `real_eval` captchas are held out of all training.

    look: the real captchas' look (simcaptcha.look.estimate_look), when the caller has measured it already.

    resume: stages whose outputs are already in `out_dir` are skipped, and a stage that was
    killed continues from its checkpoint; more self-training rounds can be added this way.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if resume and (out / SPEC_FILE).is_file():
        before = CaptchaSpec.load(out)
        if before != spec:
            raise InputError(f"{out} was made for {before.describe()}, not {spec.describe()}; give the same --length and --alphabet")
    held_out = set(real_eval.names) if real_eval else set()
    train_idx = [i for i, c in enumerate(loaded.captchas) if c.name not in held_out]
    if len(train_idx) < 3:
        raise InputError("fewer than 3 captchas left for training once the evaluation captchas are held out")
    memory = machine_memory()
    pool = pool_that_fits(cfg.synthetic_pool, spec, len(loaded.captchas), memory)
    if pool != cfg.synthetic_pool:
        log(f"synthetic pool: {pool:,} captchas instead of {cfg.synthetic_pool:,}, so that it fits in {POOL_MEMORY_SHARE:.0%} of this machine's "
            f"{memory / 2**30:.1f} GiB" + ("" if pool else " (none: batches are rendered as they are drawn)") + "; --synthetic-pool sets it")
        cfg = replace(cfg, synthetic_pool=pool)
    spec.save(out)
    write_json_atomic(out / "pipeline.json", asdict(cfg))
    if held_out and len(train_idx) < len(loaded.captchas):
        log(f"{len(loaded.captchas) - len(train_idx)} captchas share a name with a held-out one (--eval-real): left out of training")
    images = np.stack([loaded.captchas[i].image for i in train_idx])
    previous = read_json(out / "report.json", what="report") if resume and (out / "report.json").is_file() else {}
    report: dict = {"captchas": len(loaded.captchas), "training_captchas": len(images), "spec": spec.to_dict()}
    if resume and previous.get("rounds"):
        report["rounds"] = list(previous["rounds"])
    if resume and previous.get("students"):
        report["students"] = list(previous["students"])
    run = Pipeline(out, cfg, spec, loaded, images, [loaded.captchas[i].name for i in train_idx], real_eval, eval_labels,
                   look, log, progress, resume, report, previous)
    started = time.time()
    run_stages(run.stages(), report, previous, resume, log, progress)
    report["rounds"] = report.get("rounds", [])[: cfg.selftrain_rounds]
    report["students"] = report.get("students", [])[: cfg.real_students]
    report["pseudo_labels"] = report["rounds"][0] if report["rounds"] else {}
    if report["rounds"] and "view_a" in report["rounds"][-1]:
        report["selftrained"] = report["rounds"][-1]["view_a"]
    report["total_seconds"] = round(sum(report["stage_seconds"].values()), 1)  # kept stages count their earlier time
    report["seconds_this_run"] = round(time.time() - started, 1)
    write_json_atomic(out / "report.json", report)
    return report
