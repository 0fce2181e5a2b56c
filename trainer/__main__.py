"""`python -m trainer`: the command line (trainer/cli.py) as a process of its own."""

from trainer.cli import console_main

console_main()
