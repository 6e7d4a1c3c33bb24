"""simcaptcha: solve text captchas with zero hand labels (synthesizer -> SimGAN refiner -> recognizer -> solver).

The Python API (no TensorFlow import until a Keras model is loaded):

    import simcaptcha
    solver = simcaptcha.load()                # the shipped model; or a model folder, or a model.onnx
    answer = solver.solve(image)              # bytes, a path, a PIL image or a NumPy array
    answer.text, answer.confidence, answer.char_probs
    answers = solver.solve_batch(images)
    solver.spec                               # what it reads: size, text length, alphabet

The API names are imported on first use (PEP 562), so `import simcaptcha.synth` loads the
synthesizer and what it needs, not the solver and everything to its right.
"""

__version__ = "0.2.0"
__all__ = ["Answer", "CaptchaSpec", "Solver", "load", "to_rgb", "__version__"]


def __getattr__(name):
    if name in ("Answer", "Solver", "to_rgb"):
        from . import solver

        return getattr(solver, name)
    if name == "CaptchaSpec":
        from .spec import CaptchaSpec

        return CaptchaSpec
    raise AttributeError(f"module 'simcaptcha' has no attribute {name!r}")


def load(model=None, backend: str = "auto"):
    """A Solver for a model folder, a classifier.keras or a model.onnx; None: the model shipped with simcaptcha."""
    from .solver import Solver

    return Solver.load(model, backend)
