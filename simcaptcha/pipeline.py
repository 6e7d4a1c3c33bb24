"""The whole job in one call: mask -> refine-train -> train (refined and raw views) -> self-train -> solve."""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np

from .challenges import InputError, LoadResult, write_json_atomic
from .classifier import ClassifierConfig, RealEval, decode_probs, predict_probs, train_classifier
from .preprocess import estimate_background, preprocess
from .simgan import SimGANConfig, train_refiner
from .solver import solve_loaded, write_solutions


@dataclass(frozen=True)
class PipelineConfig:
    seed: int = 0
    refiner_steps: int = 300
    classifier_steps: int = 1500  # on refined synthetic captchas
    raw_view_steps: int = 1000  # second view for self-training, on raw synthetic captchas
    selftrain_steps: int = 800  # fine-tuning on refined synthetic + pseudo-labelled real
    selftrain_threshold: float = 0.9  # both views at least this confident in the same text
    selftrain_fraction: float = 0.5  # share of each fine-tuning batch taken from pseudo-labelled real captchas
    selftrain_learning_rate: float = 5e-4


STAGES = ["mask", "refine-train", "train (refined)", "train (raw view)", "pseudo-label", "self-train", "solve"]


def run_pipeline(loaded: LoadResult, out_dir, cfg: PipelineConfig = PipelineConfig(), real_eval: RealEval | None = None,
                 eval_labels: dict | None = None, log=print, progress: bool = True) -> dict:
    """Train everything from unlabelled captchas and solve them. `real_eval` captchas are held out of all training."""
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
    stages = tqdm(total=len(STAGES), desc="pipeline", position=0, disable=not progress, dynamic_ncols=True)
    clock = [time.time()]

    def stage_done(name):
        now = time.time()
        report["stage_seconds"][name] = round(now - clock[0], 1)
        clock[0] = now
        stages.update(1)
        stages.set_postfix(last=name)

    from PIL import Image

    from .viz import save_png

    mask_path = out / "mask.png"
    save_png(Image.fromarray(estimate_background(images[:3000])), mask_path)
    real_x = preprocess(images)
    stage_done("mask")

    simgan = SimGANConfig(steps=cfg.refiner_steps, seed=cfg.seed, mask=str(mask_path))
    train_refiner(simgan, real_x, out / "refiner", progress=progress, log=log)
    refiner_path = out / "refiner" / "refiner.keras"
    stage_done("refine-train")

    base = ClassifierConfig(seed=cfg.seed, mask=str(mask_path))
    refined_cfg = replace(base, steps=cfg.classifier_steps, refiner=str(refiner_path))
    m_refined = train_classifier(refined_cfg, out / "classifier_refined", real_eval=real_eval, progress=progress, log=log)
    report["refined"] = m_refined
    stage_done("train (refined)")

    raw_cfg = replace(base, steps=cfg.raw_view_steps, seed=cfg.seed + 1)
    m_raw = train_classifier(raw_cfg, out / "classifier_raw", real_eval=real_eval, progress=progress, log=log)
    report["raw"] = m_raw
    stage_done("train (raw view)")

    from .selftrain import agreeing_pseudo_labels, pseudo_label_accuracy

    view_a = keras.models.load_model(out / "classifier_refined" / "classifier.keras", compile=False)
    view_b = keras.models.load_model(out / "classifier_raw" / "classifier.keras", compile=False)
    pseudo = agreeing_pseudo_labels(real_x, names, predict_probs(view_a, real_x), predict_probs(view_b, real_x), cfg.selftrain_threshold)
    report["pseudo_labels"] = {"considered": pseudo.considered, "kept": len(pseudo.texts)}
    if real_eval is not None:
        # The same filter on the held-out captchas says how accurate kept pseudo-labels are.
        probe = agreeing_pseudo_labels(real_eval.x, real_eval.names, predict_probs(view_a, real_eval.x), predict_probs(view_b, real_eval.x), cfg.selftrain_threshold)
        n, acc = pseudo_label_accuracy(probe, dict(zip(real_eval.names, real_eval.texts)))
        report["pseudo_labels"].update({"held_out_kept": n, "held_out_considered": len(real_eval.names), "held_out_accuracy": acc})
    if eval_labels:
        n, acc = pseudo_label_accuracy(pseudo, eval_labels)
        if n:
            report["pseudo_labels"].update({"labelled_kept": n, "labelled_accuracy": acc})
    log(f"pseudo-labels: kept {len(pseudo.texts)} of {pseudo.considered} real captchas " + json.dumps({k: v for k, v in report["pseudo_labels"].items() if k not in ("considered", "kept")}))
    stage_done("pseudo-label")

    final_dir = out / "model"
    if len(pseudo.texts) >= 32:
        st_cfg = replace(refined_cfg, steps=cfg.selftrain_steps, learning_rate=cfg.selftrain_learning_rate, seed=cfg.seed + 2)
        report["selftrained"] = train_classifier(
            st_cfg, final_dir, real_eval=real_eval, extra_data=(pseudo.x, pseudo.labels), extra_fraction=cfg.selftrain_fraction,
            init_model=str(out / "classifier_refined" / "classifier.keras"), progress=progress, log=log,
        )
    else:
        log("too few pseudo-labels to self-train; the refined classifier is the final model")
        final_dir.mkdir(exist_ok=True)
        shutil.copyfile(out / "classifier_refined" / "classifier.keras", final_dir / "classifier.keras")
    shutil.copyfile(refiner_path, final_dir / "refiner.keras")
    shutil.copyfile(mask_path, final_dir / "mask.png")
    stage_done("self-train")

    model = keras.models.load_model(final_dir / "classifier.keras", compile=False)
    start = time.perf_counter()
    result = solve_loaded(loaded, model)
    solve_seconds = time.perf_counter() - start
    write_solutions(result, out / "solutions.json")
    report["solve"] = {"captchas": len(result.solutions), "seconds": round(solve_seconds, 2), "per_second": round(len(result.solutions) / max(solve_seconds, 1e-9))}
    stage_done("solve")
    stages.close()
    report["total_seconds"] = round(sum(report["stage_seconds"].values()), 1)
    write_json_atomic(out / "report.json", report)
    return report
