"""Model architectures, each a plain nn.Module built from a `configs/model/*.yaml` option."""
