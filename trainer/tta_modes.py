"""The test-time augmentation modes (`trainer/training/tta.py` implements them), importable without torch.

none: the model's logits as they are. flip: the mean of the logits of the image and its mirror image.
flip_translate: half flip, half the flip-averaged logits of the image shifted by 2 px down-right and up-left.
"""

TTA_MODES = ("none", "flip", "flip_translate")
