"""The shipped HackMIT 2017 models (refiner.keras, classifier.keras), found by the solver when no --model is given."""
