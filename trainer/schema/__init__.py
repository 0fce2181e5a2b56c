"""Typed schemas for every config group, registered in Hydra's ConfigStore.

Each option file in `configs/<group>/` starts from one of these dataclasses (through
`/schema/<group>@_here_` in its defaults list), so an unknown key or a wrong type fails at
composition. Value ranges are checked in `__post_init__`, which runs when `validate()` turns the
composed config into objects: before any data is loaded or torch is imported.
"""

from __future__ import annotations

import dataclasses

from hydra.core.config_store import ConfigStore
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from trainer.errors import ConfigError, UnknownKeyError, did_you_mean
from trainer.schema import augment, data, logger, model, optim, regularization, run, scheduler

GROUP_SCHEMAS: dict[str, dict[str, type]] = {
    "data": data.SCHEMAS,
    "model": model.SCHEMAS,
    "optim": optim.SCHEMAS,
    "scheduler": scheduler.SCHEMAS,
    "augment": augment.SCHEMAS,
    "regularization": regularization.SCHEMAS,
    "logger": logger.SCHEMAS,
    **run.SCHEMAS,
}


def register_configs() -> None:
    """Put the root schema and every group schema into Hydra's ConfigStore (idempotent)."""
    store = ConfigStore.instance()
    store.store(name="train_schema", node=run.TrainConfig)
    for group, schemas in GROUP_SCHEMAS.items():
        for name, node in schemas.items():
            store.store(group=f"schema/{group}", name=name, node=node)


def unknown_keys(node: DictConfig, prefix: str = "") -> list[tuple[str, type]]:
    """Keys of `node` and of its nested schema nodes that their dataclass does not declare, each with that
    dataclass (`+key=value` adds such keys past Hydra's own check)."""
    schema = OmegaConf.get_type(node)
    if not (isinstance(schema, type) and dataclasses.is_dataclass(schema)):  # a plain dict: `logger`'s named loggers
        return [found for key, value in node.items_ex(resolve=False) if isinstance(value, DictConfig)
                for found in unknown_keys(value, f"{prefix}{key}.")]
    fields = [f.name for f in dataclasses.fields(schema)]
    found = [(f"{prefix}{key}", schema) for key in node if key not in fields]
    for key, value in node.items_ex(resolve=False):  # unresolved: an interpolation may point at a missing value
        if key in fields and isinstance(value, DictConfig) and not OmegaConf.is_missing(node, key):
            found += unknown_keys(value, f"{prefix}{key}.")
    return found


def refuse_unknown_keys(cfg: DictConfig) -> None:
    """An UnknownKeyError (exit 1, like Hydra's own) for the first key no schema declares, with a did-you-mean."""
    unknown = unknown_keys(cfg)
    if unknown:
        full_key, schema = unknown[0]
        parent, _, key = full_key.rpartition(".")
        hint = did_you_mean(key, (f.name for f in dataclasses.fields(schema)), f"{parent}." if parent else "")
        raise UnknownKeyError(f"unknown key {full_key}: {schema.__name__} has no such field, and a + override "
                              f"cannot add one{hint}")


def validate(cfg: DictConfig) -> None:
    """Check every value's range; raise ConfigError with a one-line message naming the key."""
    refuse_unknown_keys(cfg)
    missing = [str(key) for key in cfg if OmegaConf.is_missing(cfg, key)]
    if missing:
        raise ConfigError(f"invalid config: no {' or '.join(missing)} chosen; pick one with {missing[0]}=OPTION "
                          "(python -m trainer --help lists the options)")
    # trainer and data first: other groups interpolate their values (T_max, num_classes).
    groups = sorted((key for key in cfg if OmegaConf.is_dict(cfg[key])),
                    key=lambda key: (key not in ("trainer", "data"), key != "trainer"))
    keys = [*groups, None]
    for key in keys:
        node = cfg if key is None else cfg[key]
        try:
            OmegaConf.to_object(node)
        except ValueError as err:
            prefix = f"{key}." if key else ""
            raise ConfigError(f"invalid config: {prefix}{err}") from None
        except OmegaConfBaseException as err:
            first_line = str(err).splitlines()[0]
            full_key = getattr(err, "full_key", None)
            raise ConfigError(f"invalid config at {full_key or key}: {first_line}") from None
    model.check_input_size(cfg)  # the model against data.image_size, once both groups are valid
    try:  # across groups: trainer.monitor and eval.tta against the data; class weights against its classes
        run.check_evaluation(cfg)
        regularization.check_class_weights(cfg)
    except ValueError as err:
        raise ConfigError(f"invalid config: {err}") from None
