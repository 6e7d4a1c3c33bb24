"""Batch solving on Ray Data: the same code on a laptop's local Ray and on a cluster (`pip install 'simcaptcha[ray]'`).

Input files (challenge files and images, as `captcha_files` lists them for `load_captchas`) are spread over the
cluster; each is read and checked where it lands (a bad entry becomes an error row, as a
skipped line locally), and actors holding one Solver each read batches of captchas. The
driver gathers names, answers and confidences, keeps the first of a repeated name, and
writes the same files as `simcaptcha solve`. Model and input paths must be readable on every
node (a shared file system, or the same paths on each).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from .challenges import LoadResult, captcha_files, read_captcha_file
from .estimate import caveat
from .files import InputError
from .solver import Solution, SolveResult, Solver, answers_from_probs


def read_file(row: dict, size: tuple[int, int]) -> list[dict]:
    """One input file -> rows of {name, image, error}; a bad entry, or an image of another size than `size`
    (width, height), is a row with its error line."""
    result = LoadResult()
    read_captcha_file(Path(row["path"]), result)
    empty = np.zeros((size[1], size[0], 3), np.uint8)
    rows = [{"order": row["order"], "name": c.name, "image": c.image, "error": ""} for c in result.captchas
            if c.image.shape[:2] == empty.shape[:2]]
    rows += [{"order": row["order"], "name": "", "image": empty,
              "error": f"{c.source}: image is {c.image.shape[1]}x{c.image.shape[0]}, the model reads {size[0]}x{size[1]}"}
             for c in result.captchas if c.image.shape[:2] != empty.shape[:2]]
    rows += [{"order": row["order"], "name": "", "image": empty, "error": e} for e in result.errors]
    return rows


class SolveBatch:
    """A Ray Data actor: loads the model once, then reads batches of captchas."""

    def __init__(self, model: str | None):
        self.solver = Solver.load(model)

    def __call__(self, batch: dict) -> dict:
        probs = self.solver.probabilities(np.asarray(batch["image"], np.uint8))
        answers = answers_from_probs(probs, self.solver.spec)
        calibration = self.solver.calibration  # 1 / 0: above / below its certainty threshold; -1: no calibration
        sure = calibration.sure(probs).astype(np.int8) if calibration is not None else np.full(len(answers), -1, np.int8)
        note = (caveat(probs, self.solver.spec, calibration) if calibration is not None else None) or ""
        return {"order": batch["order"], "name": batch["name"], "error": batch["error"], "sure": sure,
                "caveat": np.array([note] * len(answers)),
                "text": np.array([a.text for a in answers]), "confidence": np.array([a.confidence for a in answers])}


def solve_with_ray(paths, model: str | Path | None = None, batch_size: int = 512, actors: int | None = None,
                   address: str | None = None) -> SolveResult:
    """Solve every captcha of `paths` on Ray (a local instance unless `address` names a cluster)."""
    try:
        import ray
    except ImportError:
        raise InputError("solving on Ray needs Ray Data: pip install 'simcaptcha[ray]'") from None
    files = captcha_files(paths)
    solver = Solver.load(model)  # the model fails here, once, rather than in every actor
    size = solver.spec.size
    if not ray.is_initialized():
        ray.init(address=address, include_dashboard=False, log_to_driver=False, configure_logging=False,
                 num_cpus=None if address else os.cpu_count())
    context = ray.data.DataContext.get_current()
    context.execution_options.preserve_order = True
    context.enable_progress_bars = False
    ds = ray.data.from_items([{"order": i, "path": str(f)} for i, f in enumerate(files)])
    ds = ds.flat_map(read_file, fn_kwargs={"size": size})
    ds = ds.map_batches(SolveBatch, fn_constructor_kwargs={"model": str(model) if model else None},
                        batch_size=batch_size, concurrency=actors or 1, batch_format="numpy")
    rows = sorted(ds.take_all(), key=lambda r: r["order"])  # file order, then order within a file (kept by preserve_order)
    result, seen = SolveResult(), {}
    for r in rows:
        if r["error"]:
            result.errors.append(str(r["error"]))
        elif r["name"] in seen:
            result.errors.append(f"{files[r['order']]}: duplicate name {r['name']} (first read in {files[seen[r['name']]]}); skipped")
        else:
            seen[r["name"]] = r["order"]
            result.estimate_caveat = result.estimate_caveat or str(r["caveat"]) or None
            sure = None if int(r["sure"]) < 0 else bool(r["sure"])
            result.solutions.append(Solution(str(r["name"]), str(r["text"]), float(r["confidence"]), sure))
    return result
