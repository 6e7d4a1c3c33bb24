"""The whole job in one call: mask -> refine-train -> train (refined and raw views) -> self-train -> solve."""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np

from .alphabet import ALPHABET
from .challenges import LoadResult
from .files import InputError, copy_atomic, write_json_atomic
from .classifier import ClassifierConfig, RealEval, average_classifiers, predict_probs, score, train_classifier
from .preprocess import BACKGROUND_SAMPLE, estimate_background, load_background, preprocess, save_background
from .runs import RunDir, save_model_atomic
from .simgan import SimGANConfig, train_refiner
from .solver import solve_loaded, write_solutions
from .synth import SynthConfig, render_pool_with_bar


@dataclass(frozen=True)
class PipelineConfig:
    seed: int = 0
    refiner_steps: int = 300
    classifier_steps: int = 1500  # on refined synthetic captchas
    raw_view_steps: int = 1200  # second view for self-training, on raw synthetic captchas
    classifier_width: float = 1.5  # ClassifierConfig.width of both views: 92.2% vs 87.5% at 1.0, 16.5 vs 16.0 min (seed 0)
    selftrain_steps: int = 700  # fine-tuning steps per view and round, on synthetic + pseudo-labelled real
    selftrain_rounds: int = 2  # pseudo-label -> fine-tune rounds; both views learn from each round but the last
    selftrain_threshold: float = 0.6  # both views at least this sure of the same character
    selftrain_fraction: float = 0.5  # share of each fine-tuning batch taken from pseudo-labelled real captchas
    selftrain_learning_rate: float = 5e-4
    # A view whose width is not classifier_width (a run resumed with another --width) is not
    # fine-tuned: a fresh classifier of the new width learns the round's pseudo-labels from scratch.
    student_steps: int = 3000
    selftrain_shift: int = 2  # pseudo-labelled real captchas move by up to this many pixels in each fine-tuning batch
    min_pseudo_labels: int = 32  # a round with fewer pseudo-labelled captchas is skipped
    balance_classes: bool = True  # correct each view's class prior on the real captchas before pseudo-labelling
    average_views: bool = True  # the final model averages both views' probabilities (else: the refined view alone)
    synthetic_pool: int = 64_000  # synthetic captchas rendered once up front and shared by all stages (0: render every batch)


def stage_names(cfg: PipelineConfig) -> list[str]:
    rounds = [f"self-train {r + 1}" for r in range(cfg.selftrain_rounds)]
    synth = ["synth"] if cfg.synthetic_pool else []
    return ["mask", *synth, "refine-train", "train (refined)", "train (raw view)", *rounds, "solve"]


def round_run_dirs(out: Path, r: int, cfg: PipelineConfig) -> dict[str, Path]:
    """The views trained in self-training round r (from 0): both, except in the last round (only the refined view)."""
    trained = ["a"] if r == cfg.selftrain_rounds - 1 else ["a", "b"]
    return {k: out / f"selftrain_{r + 1}_{k}" for k in trained}


def view_width(classifier_path: Path) -> float:
    """The width a view was trained at, from the config of its run folder."""
    return RunDir(Path(classifier_path).parent).load_config(ClassifierConfig).width


def refiner_health(refiner_dir: Path, reader_path: Path, mask_path: Path, simgan: SimGANConfig, log=print) -> dict:
    """The refiner's gap scores (from refine-train's gap.json) with label preservation: how many of the gap's
    synthetic captchas the raw-synthetic view reads right once refined, against unrefined. Alarms that
    refine-train did not already print are logged."""
    import keras

    from .classifier import decode_probs
    from .domaingap import GapReport, health_alarms, label_preservation
    from .refiner import load_refiner, refine_images
    from .simgan import gap_synthetic
    from .synth import Synthesizer

    gap_path = refiner_dir / "gap.json"
    gap = json.loads(gap_path.read_text()) if gap_path.is_file() else {}
    synthetic, texts = gap_synthetic(Synthesizer(load_background(mask_path)), simgan)
    refined = refine_images(load_refiner(refiner_dir / "refiner.keras"), synthetic)
    reader = keras.models.load_model(reader_path, compile=False)
    kept = label_preservation(lambda x: decode_probs(predict_probs(reader, x))[0], synthetic, refined, texts)
    log(f"label preservation: the raw-synthetic view reads {kept['synthetic_acc']:.1%} of synthetic captchas and "
        f"{kept['refined_acc']:.1%} of the same refined")
    unknown = float("nan")  # an older refiner run without gap.json: no gap alarm can fire
    report = GapReport(gap.get("synthetic_gap", unknown), gap.get("refined_gap", unknown), gap.get("mean_change", unknown), kept["kept"])
    for line in health_alarms(report):
        if line not in gap.get("alarms", []):
            log(f"alarm: {line}")
    return {**{k: v for k, v in gap.items() if k != "alarms"}, "label_preservation": kept}


def run_pipeline(loaded: LoadResult, out_dir, cfg: PipelineConfig = PipelineConfig(), real_eval: RealEval | None = None,
                 eval_labels: dict | None = None, log=print, progress: bool = True, resume: bool = False) -> dict:
    """Train everything from unlabelled captchas and solve them. `real_eval` captchas are held out of all training.

    resume: stages whose model is already in `out_dir` are skipped, and a stage that was
    killed continues from its checkpoint; more self-training rounds can be added this way.
    """
    from tqdm import tqdm

    import keras

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out / "pipeline.json", asdict(cfg))
    held_out = set(real_eval.names) if real_eval else set()
    train_idx = [i for i, c in enumerate(loaded.captchas) if c.name not in held_out]
    if len(train_idx) < 3:
        raise InputError("fewer than 3 captchas left for training once the evaluation captchas are held out")
    images = np.stack([loaded.captchas[i].image for i in train_idx])
    names = [loaded.captchas[i].name for i in train_idx]
    report: dict = {"captchas": len(loaded.captchas), "training_captchas": len(images), "stage_seconds": {}}
    # On --resume, stages kept from the earlier run keep that run's timings and round figures.
    previous = {}
    if resume and (out / "report.json").is_file():
        previous = json.loads((out / "report.json").read_text())
    stages = tqdm(total=len(stage_names(cfg)), desc="pipeline", position=0, disable=not progress, dynamic_ncols=True)
    started = time.time()
    clock = [started]

    def stage_done(name, kept=False, partly_kept=False):
        """kept: the stage was skipped, so it keeps the earlier run's time; partly_kept: both runs' times add up."""
        now = time.time()
        earlier = previous.get("stage_seconds", {}).get(name)
        seconds = round(now - clock[0], 1)
        if earlier is not None and kept:
            seconds = earlier
        elif earlier is not None and partly_kept:
            seconds = round(earlier + seconds, 1)
        report["stage_seconds"][name] = seconds
        clock[0] = now
        stages.update(1)
        stages.set_postfix(last=name)

    def is_done(run_dir):
        return resume and (run_dir / "classifier.keras").is_file() and (run_dir / "metrics.json").is_file()

    mask_path = out / "mask.png"
    save_background(estimate_background(images[:BACKGROUND_SAMPLE]), mask_path)
    real_x = preprocess(images)
    stage_done("mask")

    refiner_path = out / "refiner" / "refiner.keras"
    refiner_kept = resume and refiner_path.is_file()
    classifier_dirs = [out / "classifier_refined", out / "classifier_raw"]
    classifier_dirs += [d for r in range(cfg.selftrain_rounds) for d in round_run_dirs(out, r, cfg).values()]
    all_trained = refiner_kept and all(is_done(d) for d in classifier_dirs)
    pool = None
    if cfg.synthetic_pool and all_trained:
        log("every model is trained already: the synthetic pool is not rendered")
        stage_done("synth", kept=True)
    elif cfg.synthetic_pool:
        # Rendered again on --resume (the same captchas: the seed fixes them); cheaper than storing 1 GB.
        pool = render_pool_with_bar(load_background(mask_path), SynthConfig(), cfg.synthetic_pool, seed=cfg.seed, show=progress)
        stage_done("synth")

    refined_pools = {}  # refiner path -> the pool refined once, drawn from by every refined-view stage

    def classifier_stage(stage_cfg, run_dir, **kwargs):
        if is_done(run_dir):
            log(f"{run_dir}: done before, kept")
            return json.loads((run_dir / "metrics.json").read_text())
        stage_pool = pool
        if pool is not None and stage_cfg.refiner:
            if stage_cfg.refiner not in refined_pools:
                refined_pools[stage_cfg.refiner] = pool.refined(stage_cfg.refiner)
            stage_pool = refined_pools[stage_cfg.refiner]
        return train_classifier(stage_cfg, run_dir, resume=resume, real_eval=real_eval, pool=stage_pool, progress=progress, log=log, **kwargs)

    # Stage configs record the pool's size; the stages draw from the one rendered above.
    simgan = SimGANConfig(steps=cfg.refiner_steps, seed=cfg.seed, mask=str(mask_path), synthetic_pool=cfg.synthetic_pool)
    if not refiner_kept:
        train_refiner(simgan, real_x, out / "refiner", resume=resume, pool=pool, progress=progress, log=log)
    stage_done("refine-train", kept=refiner_kept)

    base = ClassifierConfig(seed=cfg.seed, mask=str(mask_path), width=cfg.classifier_width, synthetic_pool=cfg.synthetic_pool)
    refined_cfg = replace(base, steps=cfg.classifier_steps, refiner=str(refiner_path))
    kept = is_done(out / "classifier_refined")
    report["refined"] = classifier_stage(refined_cfg, out / "classifier_refined")
    stage_done("train (refined)", kept)

    raw_cfg = replace(base, steps=cfg.raw_view_steps, seed=cfg.seed + 1)
    kept = is_done(out / "classifier_raw")
    report["raw"] = classifier_stage(raw_cfg, out / "classifier_raw")
    stage_done("train (raw view)", kept)
    report["gap"] = refiner_health(out / "refiner", out / "classifier_raw" / "classifier.keras", mask_path, simgan, log)

    from .selftrain import agreeing_pseudo_labels, class_balance_weights, pseudo_label_accuracy, reweight

    held_out_labels = dict(zip(real_eval.names, real_eval.texts)) if real_eval else {}
    view_paths = {"a": out / "classifier_refined" / "classifier.keras", "b": out / "classifier_raw" / "classifier.keras"}
    view_cfgs = {"a": refined_cfg, "b": raw_cfg}
    report["rounds"] = []
    previous_rounds = previous.get("rounds", [])
    for r in range(cfg.selftrain_rounds):
        run_dirs = round_run_dirs(out, r, cfg)
        if r < len(previous_rounds) and all(is_done(d) for d in run_dirs.values()):
            # Finished in an earlier run: keep its models and its pseudo-label figures.
            log(f"self-train round {r + 1}: done before, kept")
            report["rounds"].append(previous_rounds[r])
            view_paths.update({k: d / "classifier.keras" for k, d in run_dirs.items()})
            stage_done(f"self-train {r + 1}", kept=True)
            continue
        # The last round of an earlier run trained only the refined view; resuming trains the raw one too.
        partly_kept = r < len(previous_rounds) and any(is_done(d) for d in run_dirs.values())
        views = {k: keras.models.load_model(p, compile=False) for k, p in view_paths.items()}
        probs = {k: predict_probs(v, real_x) for k, v in views.items()}
        weights = {k: class_balance_weights(p) if cfg.balance_classes else np.ones(p.shape[-1]) for k, p in probs.items()}
        pseudo = agreeing_pseudo_labels(real_x, names, reweight(probs["a"], weights["a"]), reweight(probs["b"], weights["b"]), cfg.selftrain_threshold)
        info = {"considered": pseudo.considered, "kept": len(pseudo.texts), "known_chars": pseudo.known_chars}
        if cfg.balance_classes:
            info["class_weights"] = {k: dict(zip(ALPHABET, np.round(w, 3).tolist())) for k, w in weights.items()}
        if real_eval is not None:
            # The same filter (and weights) on the held-out captchas says how accurate kept pseudo-labels are.
            held = {k: reweight(predict_probs(v, real_eval.x), weights[k]) for k, v in views.items()}
            probe = agreeing_pseudo_labels(real_eval.x, real_eval.names, held["a"], held["b"], cfg.selftrain_threshold)
            info["held_out"] = {"considered": len(real_eval.names), **pseudo_label_accuracy(probe, held_out_labels)}
        if eval_labels:
            labelled = pseudo_label_accuracy(pseudo, eval_labels)
            if labelled["captchas"]:
                info["labelled"] = labelled
        log(f"round {r + 1} pseudo-labels: {len(pseudo.texts)} of {pseudo.considered} real captchas, {pseudo.known_chars} known characters " + json.dumps({k: v for k, v in info.items() if k in ("held_out", "labelled")}))
        if len(pseudo.texts) < cfg.min_pseudo_labels:
            log("too few pseudo-labels to self-train; stopping self-training here")
            report["rounds"].append(info)
            stage_done(f"self-train {r + 1}")
            continue
        for k, run_dir in run_dirs.items():
            width_before = view_width(view_paths[k])
            fresh = not is_done(run_dir) and width_before != cfg.classifier_width
            if fresh:
                log(f"{run_dir}: the view before it is {width_before:g} wide, so a fresh width-{cfg.classifier_width:g} classifier learns from scratch")
            schedule = {"steps": cfg.student_steps} if fresh else {"steps": cfg.selftrain_steps, "learning_rate": cfg.selftrain_learning_rate}
            st_cfg = replace(view_cfgs[k], extra_shift=cfg.selftrain_shift, seed=cfg.seed + 10 * (r + 1) + (k == "b"), **schedule)
            info[f"view_{k}"] = classifier_stage(
                st_cfg, run_dir, extra_data=(pseudo.x, pseudo.labels), extra_fraction=cfg.selftrain_fraction,
                init_model=None if fresh else str(view_paths[k]),
            )
            view_paths[k] = run_dir / "classifier.keras"
        report["rounds"].append(info)
        stage_done(f"self-train {r + 1}", partly_kept=partly_kept)
    report["pseudo_labels"] = report["rounds"][0] if report["rounds"] else {}
    if report["rounds"] and "view_a" in report["rounds"][-1]:
        report["selftrained"] = report["rounds"][-1]["view_a"]

    final_dir = out / "model"
    final_dir.mkdir(exist_ok=True)
    if cfg.average_views:
        # The raw view's latest model is a round older when the last round trains only the refined view.
        views = [keras.models.load_model(view_paths[k], compile=False) for k in ("a", "b")]
        model = average_classifiers(views)
        save_model_atomic(model, final_dir / "classifier.keras")
    else:
        copy_atomic(view_paths["a"], final_dir / "classifier.keras")
        model = keras.models.load_model(final_dir / "classifier.keras", compile=False)
    copy_atomic(refiner_path, final_dir / "refiner.keras")
    copy_atomic(mask_path, final_dir / "mask.png")
    if real_eval is not None:
        captcha_acc, char_acc = score(model, real_eval.x, real_eval.texts)
        report["final"] = {"val/real_captcha_acc": captcha_acc, "val/real_char_acc": char_acc, "averaged_views": cfg.average_views}

    start = time.perf_counter()
    result = solve_loaded(loaded, model)
    solve_seconds = time.perf_counter() - start
    write_solutions(result, out / "solutions.json")
    report["solve"] = {"captchas": len(result.solutions), "seconds": round(solve_seconds, 2), "per_second": round(len(result.solutions) / max(solve_seconds, 1e-9))}
    stage_done("solve")
    stages.close()
    report["total_seconds"] = round(sum(report["stage_seconds"].values()), 1)  # kept stages count their earlier time
    report["seconds_this_run"] = round(time.time() - started, 1)
    write_json_atomic(out / "report.json", report)
    return report
