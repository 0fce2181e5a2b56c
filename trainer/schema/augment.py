"""Schemas of the `augment` group: builders of the train-time transform."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class AugmentConfig:
    """A builder that returns the train-time transform (or None for no augmentation)."""

    _target_: str = "trainer.augment.none"


SCHEMAS = {"augment": AugmentConfig}
