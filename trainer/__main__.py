"""`python -m trainer`: the command line (trainer/cli.py) as a process of its own."""

import atexit
import gc

from trainer.cli import main

# The process's exit frees every object with it: frozen first, they escape the interpreter's final garbage-collector
# passes, which would walk the run's ~400,000 objects of torch, Hydra and the model (over a second on a small CPU).
atexit.register(gc.freeze)
main()
