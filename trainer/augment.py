"""Train-time augmentation builders, one per `configs/augment/*.yaml` option."""

from __future__ import annotations


def none() -> None:
    """No augmentation: the data module applies only its own tensor conversion and normalisation."""
    return None
