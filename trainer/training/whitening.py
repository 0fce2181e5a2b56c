"""`model.whiten_init=true`: a model's patch-whitening first layer set from the run's training images."""

from __future__ import annotations

from torch import nn

from trainer.data.base import DataModule
from trainer.errors import ConfigError

WHITENING_IMAGES = 5000  # the first training images the whitening filters are computed from (airbench's count)


def whiten_first_layer(model: nn.Module, datamodule: DataModule, enabled: bool, resumed: bool) -> list[str]:
    """Call `model.init_whitening` on the first WHITENING_IMAGES training images (normalised); the console lines
    saying so. A resumed run keeps its checkpoint's filters; a model without whitening is a ConfigError."""
    if not enabled or resumed:
        return []
    init = getattr(model, "init_whitening", None)
    if not callable(init):
        raise ConfigError(f"model.whiten_init=true needs a model with a whitening layer (model=airbench), not "
                          f"{type(model).__name__}")
    images = datamodule.first_train_images(WHITENING_IMAGES)
    init(images)
    return [f"whitening: the first layer's filters set from {len(images)} training images"]
