"""simcaptcha: solve text captchas with zero hand labels (synthesizer -> SimGAN refiner -> classifier -> solver).

The Python API (no TensorFlow import until a Keras model is loaded):

    import simcaptcha
    solver = simcaptcha.load()                # the shipped model; or a model folder, or a model.onnx
    answer = solver.solve(image)              # bytes, a path, a PIL image or a NumPy array
    answer.text, answer.confidence, answer.char_probs
    answers = solver.solve_batch(images)
"""

from .solver import Answer, Solver, to_rgb

__version__ = "0.1.0"
__all__ = ["Answer", "Solver", "load", "to_rgb", "__version__"]


def load(model=None, backend: str = "auto") -> Solver:
    """A Solver for a model folder, a classifier.keras or a model.onnx; None: the model shipped with simcaptcha."""
    return Solver.load(model, backend)
