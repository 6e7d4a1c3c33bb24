"""`python -m simcaptcha` runs the command line, as `simcaptcha` does."""

from .cli import main

main()
