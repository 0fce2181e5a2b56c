"""What the data modules implement, as plain names: read by the config schemas, which must not import torch.

`IN_MEMORY_OPTIONS` are the `data=` options whose module implements `DataModule.tensor_splits()`, i.e. supports
`data.in_memory=true`; tests/unit/test_device_data.py checks this list against the modules themselves.
"""

IN_MEMORY_OPTIONS: tuple[str, ...] = ("digits", "fake", "mnist", "fashion_mnist", "cifar10", "cifar100")

# `data.sampler`: how the training order is drawn each epoch (see trainer/data/sampler.py). shuffle: a seeded
# permutation; balanced: a seeded draw with replacement, each sample weighted by 1 / its class's count.
SAMPLERS: tuple[str, ...] = ("shuffle", "balanced")

# `data.decoder` (data=imagefolder): how image files become pixels. pil: Pillow, per sample in the loader workers;
# torchvision: libjpeg-turbo/libpng through torchvision.io, per sample in the workers, straight into a uint8 tensor
# (other formats through Pillow); the same pixels as pil, faster. cuda: the workers read bytes, nvjpeg decodes each
# batch on the GPU and augment=none|basic|standard run there as batched ops. The first is the default.
DECODERS: tuple[str, ...] = ("torchvision", "pil", "cuda")
DEFAULT_DECODER: str = DECODERS[0]


def eval_batch(batch_size: int, eval_batch_size: int | None) -> int:
    """The val/test batch (`data.eval_batch_size`): as given, or twice the training batch when null (no
    gradients or optimizer state are kept at eval time, so twice the batch fits where the training batch does)."""
    return eval_batch_size if eval_batch_size is not None else 2 * batch_size
