"""Training: `train()` (train.py) runs what `build_run` (setup.py) builds, epoch by epoch (loop.py), and hands
each event to the run's hooks (hooks.py): checkpoints, the console, loggers, the report."""
