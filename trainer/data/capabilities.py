"""What the data modules implement, as plain names: read by the config schemas, which must not import torch.

`IN_MEMORY_OPTIONS` are the `data=` options whose module implements `DataModule.tensor_splits()`, i.e. supports
`data.in_memory=true`; tests/unit/test_device_data.py checks this list against the modules themselves.
"""

IN_MEMORY_OPTIONS: tuple[str, ...] = ("digits", "fake", "mnist", "fashion_mnist", "cifar10", "cifar100")

# `data.sampler`: how the training order is drawn each epoch (see trainer/data/sampler.py). shuffle: a seeded
# permutation; balanced: a seeded draw with replacement, each sample weighted by 1 / its class's count.
SAMPLERS: tuple[str, ...] = ("shuffle", "balanced")
