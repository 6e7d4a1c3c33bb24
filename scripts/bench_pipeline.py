"""Benchmark: run the whole pipeline on HackMIT 2017 and print one table.

Trains on challenge-0..13 only (unlabelled), holds challenge-14 out of all training, and scores
synthetic-only, refined, and refined + self-training classifiers on its 1,000 labels.

    python scripts/bench_pipeline.py -o runs/bench            # runs the pipeline (16.5-18.5 min here)
    python scripts/bench_pipeline.py -o runs/bench --report   # prints the table of a finished run
    python scripts/bench_pipeline.py -o runs/wide2 --width 2  # other options go to `simcaptcha pipeline`
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "hackmit"


def table(report: dict) -> str:
    secs = report["stage_seconds"]
    synth = secs.get("synth", 0)  # the shared pool of synthetic captchas, when the run rendered one
    student_secs = sum(v for k, v in secs.items() if k.startswith("student"))
    rows = [
        ("synthetic only", report["raw"], synth + secs["train (raw view)"]),
        ("refined (SimGAN)", report["refined"], synth + secs["refine-train"] + secs["train (refined)"]),
        ("refined + self-training", report.get("selftrained", report["refined"]),
         sum(v for k, v in secs.items() if k not in ("mask", "look", "model", "solve")) - student_secs),
    ]
    students = report.get("students") or []
    lines = [
        "| classifier | captcha acc. (held out) | char acc. | training time |",
        "| --- | --- | --- | --- |",
    ]
    if "final" in report:
        views = "both views averaged" if report["final"].get("averaged_views") else "refined view"
        if students:
            views = f"student {len(students)}"
        rows.append((f"final model ({views})", report["final"], rows[-1][2] + student_secs))
    for name, m, t in rows:
        lines.append(f"| {name} | {m['val/real_captcha_acc']:.1%} | {m['val/real_char_acc']:.1%} | {t / 60:.1f} min |")
    lines.append("")
    total = f"; total {report['total_seconds'] / 60:.1f} min"
    if report.get("seconds_this_run", report["total_seconds"]) < report["total_seconds"] - 60:
        total += f" (resumed: {report['seconds_this_run'] / 60:.1f} min in the last invocation)"
    gap = report.get("gap") or {}
    if "synthetic_gap" in gap:
        lines.append(f"domain gap (critic ROC AUC, 0.5: indistinguishable from real): synthetic {gap['synthetic_gap']:.3f}, refined {gap['refined_gap']:.3f}")
    if report.get("synthesizer"):
        lines.append(f"synthesizer: {report['synthesizer']}" + (f", fonts {', '.join(report['fonts']['chosen'])}" if report.get("fonts") else ""))
    lines.append("stages (s): " + ", ".join(f"{k} {v:.0f}" for k, v in secs.items()) + total)
    for r, p in enumerate(report.get("rounds", [])):
        held = p.get("held_out") or {}
        line = f"self-training round {r + 1}: {p['kept']} of {p['considered']} training captchas pseudo-labelled, {p.get('known_chars', '?')} characters known"
        if held.get("char_precision") is not None:
            line += (f"; the same filter on the held-out captchas knows {held['known_chars']} characters, {held['char_precision']:.1%} right"
                     f" ({held['full_captchas']} whole captchas, {held['full_captcha_precision'] or 0:.1%} right)")
        if "view_a" in p:
            line += f"; after it: {p['view_a']['val/real_captcha_acc']:.1%} captchas, {p['view_a']['val/real_char_acc']:.1%} characters"
        lines.append(line)
    for i, p in enumerate(students):
        held = p.get("held_out") or {}
        line = f"student {i + 1}: learned from {p['kept']} of {p['considered']} training captchas"
        if held.get("full_captcha_precision") is not None:
            line += f"; the same filter keeps {held['full_captchas']} held-out captchas, {held['full_captcha_precision']:.1%} right"
        if "student" in p:
            line += f"; it reads {p['student']['val/real_captcha_acc']:.1%} captchas, {p['student']['val/real_char_acc']:.1%} characters"
        lines.append(line)
    lines.append(f"solve throughput: {report['solve']['per_second']} captchas/s ({report['solve']['captchas']} captchas)")
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-o", "--out", type=Path, default=Path("runs/bench"), help="pipeline output folder")
    parser.add_argument("--report", action="store_true", help="only print the table of a finished run")
    parser.add_argument("--seed", type=int, default=0)
    # Any other option goes to `simcaptcha pipeline` as it is (for example --width 2).
    args, extra = parser.parse_known_args()
    if not args.report:
        if not (DATA / "challenges").is_dir():
            sys.exit(f"error: {DATA}: HackMIT data not found")
        train = [str(DATA / "challenges" / f"challenge-{i}") for i in range(14)]
        held = DATA / "challenges" / "challenge-14"
        cmd = ["simcaptcha", "pipeline", *train, "-o", str(args.out), "--seed", str(args.seed),
               "--eval-real", str(held), "--eval-labels", str(DATA / "dev-labels.json"), *extra]
        subprocess.run(cmd, check=True)
    print(table(json.loads((args.out / "report.json").read_text())))


if __name__ == "__main__":
    main()
