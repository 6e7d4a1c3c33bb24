"""simcaptcha: solve text captchas with zero hand labels (synthesizer -> SimGAN refiner -> classifier -> solver)."""

__version__ = "0.1.0"
