"""Turn config groups into objects (Hydra `_target_` instantiation) for the train and eval modes."""

from __future__ import annotations

from typing import Any

from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from torch import nn

from trainer.data.base import DataModule
from trainer.errors import CheckpointError, ConfigError, TrainerError
from trainer.schema import GROUP_SCHEMAS
from trainer.schema.model import RUN_ONLY_KEYS, WEIGHT_SOURCE_KEYS


def build_data(cfg: DictConfig, with_augment: bool = True) -> DataModule:
    """The data module, set up with the augment option (an `Augment` or None; see trainer/data/augment.py)."""
    datamodule: DataModule = instantiate(cfg.data)
    datamodule.setup(augment=instantiate(cfg.augment) if with_augment else None)
    if cfg.trainer.overfit_batches:
        datamodule.overfit(cfg.trainer.overfit_batches)
    return datamodule


def build_model(model_cfg: DictConfig | dict[str, Any]) -> nn.Module:
    """The model (a TrainerError its builder raises, such as an unknown torchvision name or uncached weights,
    comes out as itself), freshly initialised: `model.init_from` and `model.freeze` (RUN_ONLY_KEYS) are not the
    builder's arguments; a training run applies them (trainer/training/setup.py)."""
    return instantiate_group(model_arguments(model_cfg), _convert_="all")


def model_arguments(model_cfg: DictConfig | dict[str, Any]) -> DictConfig | dict[str, Any]:
    """The model group without its RUN_ONLY_KEYS (resolved, when it holds any)."""
    if not any(key in model_cfg for key in RUN_ONLY_KEYS):
        return model_cfg
    node = OmegaConf.to_container(model_cfg, resolve=True) if isinstance(model_cfg, DictConfig) else model_cfg
    return {key: value for key, value in node.items() if key not in RUN_ONLY_KEYS}


def build_logger(logger_cfg: DictConfig | dict[str, Any], run_dir: str, cfg: DictConfig | None = None) -> Any:
    """The run's loggers as one `Loggers` (trainer/reporting/loggers.py): one per entry of the `logger` group
    (`{}`: none; a single node with a `_target_` is one logger), each given `run_dir`, and, from the run's
    `cfg`, its params and default name. A TrainerError a constructor raises, such as event files that cannot be
    created, comes out as itself."""
    from trainer.reporting.loggers import Loggers, run_label, run_params

    nodes = {"logger": logger_cfg} if "_target_" in logger_cfg else dict(logger_cfg.items())
    params, name = (run_params(cfg), run_label(cfg)) if cfg is not None else ({}, "")
    loggers: dict[str, Any] = {}
    try:
        for key, node in nodes.items():
            if not (isinstance(node, dict | DictConfig) and "_target_" in node):
                raise ConfigError(f"invalid config: logger.{key} must be a logger (pick them with logger=OPTION)")
            make = instantiate_group(node, _partial_=True, _convert_="all")
            loggers[key] = make(run_dir=run_dir, params=params, name=name)
    except BaseException:
        Loggers(loggers).close("FAILED")  # those already started end now, not at exit
        raise
    return Loggers(loggers)


def instantiate_group(node: DictConfig | dict[str, Any], **kwargs: Any) -> Any:
    """`instantiate(node, **kwargs)`, where a TrainerError raised inside comes out as itself, not wrapped in
    Hydra's InstantiationException, so the CLI reports it as one line."""
    try:
        return instantiate(node, **kwargs)
    except InstantiationException as err:
        cause = unwrapped(err)
        if isinstance(cause, TrainerError):
            raise cause from None
        raise


def unwrapped(err: BaseException) -> BaseException:
    """The first error in `err`'s chain that is not Hydra's InstantiationException (or `err` itself)."""
    seen: BaseException | None = err
    while isinstance(seen, InstantiationException):
        seen = seen.__cause__
    return seen if seen is not None else err


def model_config_from_checkpoint(saved: dict[str, Any], path: str) -> DictConfig:
    """A checkpoint's model config, re-validated against the model schemas before it builds anything.

    Only targets that a model schema declares are accepted, so a crafted checkpoint cannot make
    instantiation call arbitrary code.
    """
    group = "model"
    by_target = {schema._target_: schema for schema in GROUP_SCHEMAS[group].values()}
    schema = by_target.get(saved.get("_target_"))
    if schema is None:
        raise CheckpointError(f"checkpoint {path} names an unknown {group} {saved.get('_target_')!r}")
    try:
        model_cfg = OmegaConf.merge(OmegaConf.structured(schema), saved)
    except Exception as err:  # an unknown key or wrong type in the stored config
        raise CheckpointError(f"checkpoint {path} has an invalid {group} config: "
                              f"{str(err).splitlines()[0]}") from None
    return without_weight_sources(model_cfg)


def without_weight_sources(model_cfg: DictConfig) -> DictConfig:
    """A copy of the model group with its WEIGHT_SOURCE_KEYS (a timm `pretrained_file`) set to null: a model whose
    weights come from a checkpoint (eval, predict, export, a resumed run) neither reads nor needs that file."""
    if not any(key in model_cfg for key in WEIGHT_SOURCE_KEYS):
        return model_cfg
    model_cfg = model_cfg.copy()
    for key in WEIGHT_SOURCE_KEYS:
        if key in model_cfg:
            model_cfg[key] = None
    return model_cfg


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
