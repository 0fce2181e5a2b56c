"""trainer: a configuration-driven PyTorch training CLI (`python -m trainer`)."""

__version__ = "0.1.0"
