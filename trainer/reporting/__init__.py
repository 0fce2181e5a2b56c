"""What a run shows and leaves behind: the console, experiment loggers, run files, figures and the report."""
