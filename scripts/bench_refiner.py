"""Does the refiner teach? Two recognizers of the same steps and seed, one on raw synthetic captchas, one on
the same captchas refined, both scored on labelled real ones (used for that score only).

Trains a refiner on the unlabelled real captchas (--real) with a run folder's synthesizer (--synth: its
synth.json and mask.png), with any SimGANConfig setting replaced (--set), or reuses one (--refiner); then,
for each --seeds, trains a raw and a refined recognizer on one shared synthetic pool and prints one JSON
line per seed and one summary line. Compare variants side by side in one sitting: times drift between runs.

    python scripts/bench_refiner.py --synth runs/p26_slots --real ../shared/data/hackmit/challenges \\
        --eval-real ../shared/data/hackmit/challenges/challenge-14.json \\
        --eval-labels ../shared/data/hackmit/dev-labels.json -o runs/br_default --set reg_lambda=2
"""

import argparse
import json
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from bench_synth_real import parse_setting  # scripts/ is on the path when a script runs
from simcaptcha import quiet
from simcaptcha.pipeline import PipelineConfig

PIPELINE = PipelineConfig()  # the pipeline's refiner steps, reader steps and width are the defaults here


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--synth", required=True, help="run folder whose synth.json (and mask.png) to draw with")
    parser.add_argument("--real", nargs="+", required=True, help="unlabelled real captchas the refiner learns from (folders, files)")
    parser.add_argument("--exclude", nargs="*", default=["challenge-14"], help="names under --real to leave out (the held-out set)")
    parser.add_argument("--set", dest="settings", action="append", type=parse_setting, default=[],
                        help="replace one SimGANConfig setting, KEY=JSON (repeatable), e.g. reg_lambda=2")
    parser.add_argument("--refiner", default=None, help="reuse this refiner.keras instead of training one")
    parser.add_argument("--eval-real", nargs="+", required=True, help="labelled real captchas (folders, files)")
    parser.add_argument("--eval-labels", required=True, help="their labels: JSON name -> text, or a folder named by text")
    parser.add_argument("--steps", type=int, default=PIPELINE.classifier_steps, help="training steps of each recognizer")
    parser.add_argument("--head", default=PIPELINE.head, choices=["auto", "slots", "ctc"],
                        help="recognizer head; auto picks as the pipeline does (slots for a fixed length, unless characters move far)")
    parser.add_argument("--width", type=float, default=PIPELINE.classifier_width, help="recognizer width")
    parser.add_argument("--pool", type=int, default=32_000, help="synthetic captchas rendered once for both recognizers")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0], help="seeds: of the refiner (the first) and of each pair")
    parser.add_argument("--raw", action=argparse.BooleanOptionalAction, default=True, help="also train the raw recognizer")
    parser.add_argument("-o", "--out", required=True, help="folder for the refiner and recognizers")
    args = parser.parse_args()
    quiet.tensorflow()

    from simcaptcha.challenges import captcha_files, load_captchas
    from simcaptcha.classifier import ClassifierConfig, load_real_eval, resolve_head, slot_window, train_classifier
    from simcaptcha.preprocess import preprocess
    from simcaptcha.refiner import load_refiner, refine_pool
    from simcaptcha.simgan import SimGANConfig, train_refiner
    from simcaptcha.synth import Synthesizer, _tuples, render_pool_with_bar

    out = Path(args.out)
    synth = Synthesizer.load(args.synth)
    real_eval = load_real_eval(args.eval_real, args.eval_labels, ink=synth.spec.ink)
    head = resolve_head(args.head, synth.spec, synth)
    line = {"synth": args.synth, "set": dict(args.settings), "steps": args.steps, "width": args.width, "head": head}
    pool = render_pool_with_bar(synth, args.pool, seed=args.seeds[0])
    refiner_path = args.refiner
    if refiner_path is None:
        files = [f for f in captcha_files(args.real) if not any(x in Path(f).name for x in args.exclude)]
        real_x = preprocess(load_captchas(files).images(), synth.spec.ink)
        cfg = SimGANConfig(seed=args.seeds[0], steps=PIPELINE.refiner_steps, synthetic_pool=args.pool)
        cfg = replace(cfg, **{k: _tuples(v) for k, v in args.settings})
        start = time.perf_counter()
        result = train_refiner(cfg, real_x, synth, out / "refiner", pool=pool, log=print)
        del real_x
        line["refiner_seconds"] = round(time.perf_counter() - start)
        line["gap"] = {k: round(result["gap"][k], 4) for k in ("synthetic_gap", "refined_gap", "mean_change")}
        line["alarms"] = result["alarms"]
        refiner_path = out / "refiner" / "refiner.keras"
    refiner = load_refiner(refiner_path)
    refined = refine_pool(pool, refiner, str(refiner_path))
    rows = []
    for seed in args.seeds:
        base = ClassifierConfig(steps=args.steps, width=args.width, synthetic_pool=args.pool, eval_every=args.steps, seed=seed, head=head)
        base = replace(base, head_window=slot_window(synth, base))
        row = {"seed": seed}
        readers = [("refined", refined, refiner, replace(base, refiner=str(refiner_path)))] + ([("raw", pool, None, base)] if args.raw else [])
        for name, data, used, cfg in readers:
            start = time.perf_counter()
            metrics = train_classifier(cfg, synth, out / f"{name}_s{seed}", refiner=used, pool=data, real_eval=real_eval, log=lambda *_: None)
            row[name] = round(metrics["val/real_captcha_acc"], 4)
            row[f"{name}_chars"] = round(metrics["val/real_char_acc"], 4)
            row[f"{name}_seconds"] = round(time.perf_counter() - start)
        print(json.dumps({**line, **row}), flush=True)
        rows.append(row)
    summary = {k: round(float(np.mean([r[k] for r in rows])), 4) for k in ("refined", "raw") if k in rows[0]}
    if "raw" in summary:
        summary["refined_minus_raw"] = round(summary["refined"] - summary["raw"], 4)
    print(json.dumps({**line, "mean": summary}), flush=True)


if __name__ == "__main__":
    main()
