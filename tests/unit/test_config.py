"""Every option of every config group composes, validates and instantiates; bad values fail clearly."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from hydra.core.config_store import ConfigStore
from hydra.errors import ConfigCompositionException
from hydra.utils import instantiate
from omegaconf import OmegaConf
from omegaconf.errors import ConfigKeyError, ValidationError

from tests.conftest import CONFIGS, compose, composed
from trainer.build import build_data, build_model
from trainer.errors import ConfigError
from trainer.schema import GROUP_SCHEMAS, validate
from trainer.training.optim import create_optimizer, create_scheduler


def options(group: str) -> list[str]:
    return sorted(path.stem for path in (CONFIGS / group).glob("*.yaml"))


def test_every_group_has_options() -> None:
    for group in ("data", "model", "optim", "scheduler", "augment", "regularization", "trainer", "logger",
                  "paths", "hydra", "debug", "experiment"):
        assert options(group), f"configs/{group}/ has no options"


@pytest.mark.parametrize("option", options("data"))
def test_data_options_build_datasets(option: str, tmp_path) -> None:
    from tests.conftest import data_overrides  # writes a tiny real-format set for file-based options

    cfg = compose(f"data={option}", *data_overrides(option, tmp_path))
    validate(cfg)
    datamodule = build_data(cfg)
    x, y = datamodule.train_set[0]
    assert tuple(x.shape) == (cfg.data.in_channels, cfg.data.image_size, cfg.data.image_size)
    assert 0 <= int(y) < cfg.data.num_classes
    assert len(datamodule.val_set) > 0
    batch_x, batch_y = next(iter(datamodule.train_loader(seed=0)))
    assert batch_x.shape[0] == min(cfg.data.batch_size, len(datamodule.train_set)) == batch_y.shape[0]


# One member of each family on 1-channel digits and on 3-channel fake data; the deeper and wider variants share
# its code (tests/unit/test_models.py builds every one of them against its reference), so their own forward and
# backward pass, a sizeable share of the suite's time, runs in the slow tier.
FAMILY_REPRESENTATIVES = ("mlp", "simple_cnn", "vgg11", "resnet18", "resnet50", "googlenet", "efficientnet_b0",
                          "torchvision", "vit", "rnn", "timm", "airbench")
MODEL_DATA = [(option, "digits") if option in FAMILY_REPRESENTATIVES else
              pytest.param(option, "digits", marks=pytest.mark.slow) for option in options("model")] + [
    (option, "fake") for option in options("model") if option in FAMILY_REPRESENTATIVES]


@pytest.mark.parametrize(("option", "data"), MODEL_DATA)
def test_model_options_follow_the_data_config_and_train(option: str, data: str) -> None:
    small = ["model.classifier_width=64"] if option.startswith("vgg") else []  # keep VGG's FC layers cheap
    cfg = compose(f"model={option}", f"data={data}", "data.image_size=32", *small)
    validate(cfg)
    assert cfg.model.num_classes == cfg.data.num_classes
    assert cfg.model.in_channels == cfg.data.in_channels
    model = build_model(cfg.model).train()
    outputs = model(torch.randn(2, cfg.data.in_channels, 32, 32))
    logits = outputs[0] if isinstance(outputs, tuple) else outputs
    assert logits.shape == (2, cfg.data.num_classes)
    logits.logsumexp(dim=1).sum().backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)


@pytest.mark.usefixtures("single_thread")
@pytest.mark.parametrize("optim", options("optim"))
@pytest.mark.parametrize("scheduler", options("scheduler"))
def test_optim_and_scheduler_options_step(optim: str, scheduler: str) -> None:
    # Each option composed once (the pairs would cost a compose each): the scheduler's node, unresolved, joins the
    # optim's config, where its interpolations (onecycle's max_lr: ${optim.lr}) resolve as in one compose.
    cfg = composed(f"optim={optim}", values={"optim.no_decay_norm_bias": True})
    cfg.scheduler = composed(f"scheduler={scheduler}").scheduler
    validate(cfg)
    assert cfg.scheduler.get("max_lr", cfg.optim.lr) == cfg.optim.lr  # resolved in this config
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.LayerNorm(3))
    optimizer = create_optimizer(cfg.optim, model)
    assert type(optimizer).__name__.lower() == optim.lower()
    assert [group["lr"] for group in optimizer.param_groups] == [pytest.approx(cfg.optim.lr)] * 2
    schedule = create_scheduler(cfg.scheduler, optimizer, steps_per_epoch=4, max_epochs=cfg.trainer.max_epochs)
    assert schedule.interval in ("epoch", "step")
    before = model[0].weight.detach().clone()
    model(torch.randn(8, 4)).pow(2).sum().backward()
    optimizer.step()
    schedule.step_batch()
    schedule.step_epoch(val_loss=1.0)
    assert not torch.equal(before, model[0].weight)
    assert all(group["lr"] > 0 for group in optimizer.param_groups)


@pytest.mark.parametrize("option", options("augment"))
def test_augment_options_instantiate(option: str) -> None:
    from trainer.data.augment import Augment
    from trainer.data.transforms import train_transform

    cfg = compose(f"augment={option}", "data=fake")
    validate(cfg)
    augment = instantiate(cfg.augment)
    assert (augment is None) == (option == "none")
    assert augment is None or (isinstance(augment, Augment) and augment.name == option)
    image = torch.randint(0, 256, (3, 32, 32), dtype=torch.uint8)
    out = train_transform(augment, [0.5] * 3, [0.5] * 3)(image)
    assert out.shape == (3, 32, 32) and out.dtype == torch.float32


@pytest.mark.parametrize("option", options("regularization"))
def test_regularization_options_mix_and_give_a_loss(option: str) -> None:
    cfg = compose(f"regularization={option}")
    validate(cfg)
    regularization = instantiate(cfg.regularization)
    inputs, targets = regularization.mix(torch.randn(4, 3, 8, 8), torch.tensor([0, 1, 2, 3]))
    assert inputs.shape == (4, 3, 8, 8)
    loss = regularization.loss(torch.randn(4, 10), targets)
    assert loss.ndim == 0 and torch.isfinite(loss)


# mlflow and wandb (and many, which holds mlflow) start their libraries for seconds: tests/unit/test_loggers.py
# reads back what they write, so here they join the slow tier.
LOGGER_OPTIONS = [option if option not in ("mlflow", "wandb", "many") else pytest.param(option, marks=pytest.mark.slow)
                  for option in options("logger")]


@pytest.mark.parametrize("option", LOGGER_OPTIONS)
def test_logger_options_log(option: str, tmp_path) -> None:
    from trainer.build import build_logger

    cfg = compose(f"logger={option}", f"paths.output_root={tmp_path}")
    validate(cfg)
    logger = build_logger(cfg.logger, str(tmp_path), cfg)
    logger.log_scalars({"val/acc": 0.5}, step=1)
    logger.close()
    wrote = any(tmp_path.rglob("events.out.tfevents*"))
    assert wrote == (option in ("tensorboard", "many"))
    assert len(logger.loggers) == len(cfg.logger)


@pytest.mark.parametrize("option", options("debug"))
def test_debug_options_compose(option: str) -> None:
    cfg = compose(f"debug={option}")
    validate(cfg)
    assert cfg.trainer.max_epochs >= 1
    assert (cfg.trainer.limit_train_batches or cfg.trainer.overfit_batches) > 0


@pytest.mark.parametrize("option", options("experiment"))
def test_experiment_options_compose(option: str) -> None:
    cfg = compose(f"+experiment={option}")
    validate(cfg)
    build_model(cfg.model)


@pytest.mark.parametrize(("override", "message"), [
    ("optim.lr=-1", "optim.lr must be > 0"),
    ("optim.lr=0", "optim.lr must be > 0"),
    ("optim.weight_decay=-0.1", "optim.weight_decay must be >= 0"),
    ("data.batch_size=0", "data.batch_size must be > 0"),
    ("data.batch_size=-5", "data.batch_size must be > 0"),
    ("data.num_workers=-1", "data.num_workers must be >= 0"),
    ("data.val_fraction=1.5", "data.val_fraction must be in (0, 1)"),
    ("data.sampler=weighted", "data.sampler must be one of shuffle, balanced (got 'weighted')"),
    ("trainer.max_epochs=0", "trainer.max_epochs must be >= 1"),
    ("trainer.max_epochs=-3", "trainer.max_epochs must be >= 1"),
    ("trainer.precision=8", "trainer.precision must be one of 32, bf16, 16"),
    ("trainer.device=tpu", "trainer.device must be auto, cpu, cuda or cuda:N"),
    ("trainer.grad_clip_norm=0", "trainer.grad_clip_norm must be > 0"),
    ("trainer.progress=loud", "trainer.progress must be one of"),
    ("model.dropout=1.0", "model.dropout must be in [0, 1)"),
    ("regularization.label_smoothing=-0.1", "regularization.label_smoothing must be in [0, 1)"),
    ("mode=dance", "mode must be one of train, eval"),
    ("mode=eval", "ckpt must be a checkpoint path when mode=eval"),
])
def test_out_of_range_values_name_the_key(override: str, message: str) -> None:
    cfg = compose(override)
    with pytest.raises(ConfigError) as err:
        validate(cfg)
    assert message in str(err.value)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize(("override", "error"), [
    ("optim.lr=abc", ValidationError),
    ("trainer.max_epochs=many", ValidationError),
    ("optim.no_such_key=1", ConfigKeyError),
    ("model=resnet5000", ConfigCompositionException),
])
def test_wrong_types_and_unknown_keys_fail_at_composition(override: str, error: type) -> None:
    with pytest.raises((error, ConfigCompositionException)):
        compose(override)


def option_file(group: str, option: str) -> tuple[str, dict]:
    """(the schema an option file names in its defaults list, the values the file itself sets)."""
    raw = OmegaConf.to_container(OmegaConf.load(CONFIGS / group / f"{option}.yaml"), resolve=False)
    schemas = [name for entry in raw.pop("defaults", []) if isinstance(entry, dict)
               for key, name in entry.items() if key == f"/schema/{group}@_here_"]
    assert len(schemas) == 1, f"configs/{group}/{option}.yaml names no schema (or several)"
    return schemas[0], raw


def schema_defaults(group: str, schema: str) -> dict:
    return OmegaConf.to_container(OmegaConf.structured(GROUP_SCHEMAS[group][schema]), resolve=False)


SCHEMA_GROUPS = sorted(set(GROUP_SCHEMAS) - {"logger"})  # logger's options are named nodes: the test below


def test_logger_option_files_are_their_schema_under_their_name() -> None:
    for option in sorted(set(options("logger")) - {"many", "none"}):
        raw = OmegaConf.to_container(OmegaConf.load(CONFIGS / "logger" / f"{option}.yaml"), resolve=False)
        assert raw.pop("defaults") == [{f"/schema/logger@{option}": option}, "_self_"] and not raw, option
        assert option in GROUP_SCHEMAS["logger"]
    assert set(GROUP_SCHEMAS["logger"]) <= set(options("logger"))


@pytest.mark.parametrize("group", SCHEMA_GROUPS)
def test_option_files_set_only_what_makes_the_option(group: str) -> None:
    # The schema dataclass holds every default. An option file may repeat a default only for the key that tells
    # the options of one schema apart (resnet18's depth 18 beside resnet50's 50).
    files = {option: option_file(group, option) for option in options(group)}
    for option, (schema, values) in files.items():
        defaults = schema_defaults(group, schema)
        assert set(values) <= set(defaults), f"{group}={option} sets keys its schema lacks"
        siblings = [other for name, (other_schema, other) in files.items() if other_schema == schema and name != option]
        for key, value in values.items():
            if value == defaults[key]:
                assert any(key in other and other[key] != value for other in siblings), (
                    f"configs/{group}/{option}.yaml repeats {schema}'s default {key}={value!r}")


@pytest.mark.parametrize("option", options("model"))
def test_model_options_are_their_family_schema_plus_at_most_one_value(option: str) -> None:
    from trainer.schema import unknown_keys

    schema, values = option_file("model", option)
    family = schema_defaults("model", schema)
    cfg = compose(f"model={option}")
    assert unknown_keys(cfg) == [], option  # test_every_option_declares_each_of_its_keys for the model group
    composed = OmegaConf.to_container(cfg.model, resolve=False)
    assert list(composed) == list(family)
    assert len(values) <= 1 and {key for key in family if composed[key] != family[key]} <= set(values)


@pytest.fixture
def wider_resnet_schema():
    """The ResNet family's schema with another default width, as if someone edited ResNetConfig."""
    import trainer.cli  # noqa: F401  (registers every schema on import: first, so that it does not undo this one)

    store = ConfigStore.instance()
    original = GROUP_SCHEMAS["model"]["resnet"]
    store.store(group="schema/model", name="resnet", node=dataclasses.make_dataclass(
        "WiderResNetConfig", [("width", int, dataclasses.field(default=96))], bases=(original,)))
    yield 96
    store.store(group="schema/model", name="resnet", node=original)


def test_a_family_default_changed_in_its_schema_reaches_every_variant(wider_resnet_schema: int) -> None:
    variants = [option for option in options("model") if option_file("model", option)[0] == "resnet"]
    assert len(variants) == 5
    for option in variants:
        model = compose(f"model={option}").model
        assert (model.width, model.depth) == (wider_resnet_schema, int(option.removeprefix("resnet")))
    assert compose("model=resnet50", "model.width=8").model.width == 8


@pytest.mark.parametrize(("override", "message"), [
    ("+foo=1", "unknown key foo: TrainConfig has no such field"),
    ("+trainr=1", "unknown key trainr: TrainConfig has no such field, and a + override cannot add one; "
                  "did you mean trainer?"),
    ("+trainer.max_epoch=2", "unknown key trainer.max_epoch: TrainerConfig has no such field, and a + override "
                             "cannot add one; did you mean trainer.max_epochs?"),
    ("+optim.lrr=0.1", "did you mean optim.lr?"),
    ("+data.limit=3", "unknown key data.limit: DigitsConfig has no such field"),
])
def test_keys_no_schema_declares_are_refused(override: str, message: str) -> None:
    from trainer.errors import EXIT_COMPOSE_ERROR, UnknownKeyError

    with pytest.raises(UnknownKeyError) as err:
        validate(compose(override))
    assert message in str(err.value)
    assert err.value.exit_code == EXIT_COMPOSE_ERROR


# model's options: test_model_options_are_their_family_schema_plus_at_most_one_value checks them (the one compose
# of each option serves both)
@pytest.mark.parametrize("group", sorted(d.name for d in CONFIGS.iterdir()
                                         if d.is_dir() and d.name not in ("hydra", "local", "model")))
def test_every_option_declares_each_of_its_keys(group: str) -> None:
    from trainer.schema import unknown_keys

    for option in options(group):  # one group per test: the compositions spread over the workers
        cfg = compose(f"{'+' if group == 'experiment' else ''}{group}={option}")
        assert unknown_keys(cfg) == [], (group, option)


@pytest.mark.parametrize(("override", "message"), [
    ("trainer.max_epoch=2", "Key 'max_epoch' not in 'TrainerConfig'; did you mean trainer.max_epochs?"),
    ("trainer.progres=none", "did you mean trainer.progress?"),
    ("trainr.max_epochs=2", "Key 'trainr' not in 'TrainConfig'; did you mean trainer?"),
])
def test_an_unknown_key_suggests_the_schema_field_not_a_plus(override: str, message: str) -> None:
    from trainer.errors import composition_error_line

    with pytest.raises(ConfigCompositionException) as err:
        compose(override)
    line = composition_error_line(err.value)
    assert message in line
    assert "+" not in line and "append" not in line


def test_a_value_of_the_wrong_type_suggests_no_other_key() -> None:
    from trainer.errors import composition_error_line

    with pytest.raises(ConfigCompositionException) as err:
        compose("trainer.max_epochs=1.5")
    assert "did you mean" not in composition_error_line(err.value)
