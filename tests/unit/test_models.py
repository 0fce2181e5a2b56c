"""The model zoo: reference parameter counts, every model trains on small inputs, building blocks."""

from __future__ import annotations

import math

import pytest
import torch
import torchvision
from omegaconf import OmegaConf

from tests.conftest import compose
from trainer.build import build_model, count_parameters
from trainer.errors import ConfigError
from trainer.models import catalog
from trainer.models.efficientnet import EfficientNet, compound_coefficients, round_filters
from trainer.models.googlenet import GoogLeNet
from trainer.models.layers import ACTIVATIONS, NORMS, ConvNormAct, make_activation
from trainer.models.mlp import MLP
from trainer.models.resnet import ResNet
from trainer.models.simple_cnn import SimpleCNN
from trainer.models.vgg import VGG
from trainer.schema import model as model_schema
from trainer.schema import validate

# The guide's table: 224x224 RGB, 1000 classes.
GUIDE_COUNTS = [
    (lambda: VGG(3, 1000, 16), 138_357_544),
    (lambda: ResNet(3, 1000, 18), 11_689_512),
    (lambda: ResNet(3, 1000, 34), 21_797_672),
    (lambda: ResNet(3, 1000, 50), 25_557_032),
    (lambda: ResNet(3, 1000, 101), 44_549_160),
    (lambda: ResNet(3, 1000, 152), 60_192_808),
    (lambda: GoogLeNet(3, 1000, branch5x5_kernel=3), 6_624_904),
    (lambda: EfficientNet(3, 1000, "b0"), 5_288_548),
]


def on_meta(build):
    """Build on the meta device: shapes and parameter counts without allocating or initialising weights."""
    with torch.device("meta"):
        return build()


@pytest.mark.parametrize(("build", "expected"), GUIDE_COUNTS)
def test_parameter_counts_match_the_guide(build, expected: int) -> None:
    assert abs(count_parameters(on_meta(build)) - expected) <= 0.005 * expected


@pytest.mark.parametrize(("depth", "batch_norm"), [(11, False), (13, True), (19, False)])
def test_vgg_variants_match_torchvision(depth: int, batch_norm: bool) -> None:
    reference = on_meta(getattr(torchvision.models, f"vgg{depth}{'_bn' if batch_norm else ''}"))
    assert count_parameters(on_meta(lambda: VGG(3, 1000, depth, batch_norm))) == count_parameters(reference)


def test_googlenet_paper_5x5_and_aux_heads() -> None:
    # The paper's 5x5 kernels add (25 - 9) weights per 5x5-branch filter pair over torchvision's 3x3 layout.
    branch_pairs = 16 * 32 + 32 * 96 + 16 * 48 + 24 * 64 + 24 * 64 + 32 * 64 + 32 * 128 + 32 * 128 + 48 * 128
    assert count_parameters(on_meta(lambda: GoogLeNet(3, 1000))) == 6_624_904 + 16 * branch_pairs
    reference = on_meta(lambda: torchvision.models.googlenet(aux_logits=True, init_weights=True))
    aux = on_meta(lambda: GoogLeNet(3, 1000, aux_logits=True, branch5x5_kernel=3))
    assert count_parameters(aux) == count_parameters(reference)


def test_googlenet_aux_heads_only_in_training() -> None:
    model = GoogLeNet(1, 5, aux_logits=True)
    outputs = model.train()(torch.randn(2, 1, 64, 64))
    assert isinstance(outputs, tuple) and [o.shape for o in outputs] == [(2, 5)] * 3
    assert model.eval()(torch.randn(2, 1, 64, 64)).shape == (2, 5)


def test_efficientnet_compound_rule_scales_b0() -> None:
    width, depth, resolution = compound_coefficients(1)
    assert (width, depth, resolution) == (pytest.approx(1.1), pytest.approx(1.2), 258)
    scaled = EfficientNet(3, 10, "b0", phi=1)
    blocks = [m for m in scaled.modules() if type(m).__name__ == "MBConv"]
    assert len(blocks) == sum(math.ceil(n * 1.2) for n in (1, 2, 2, 3, 3, 4, 1))
    assert scaled.features[0][0].out_channels == round_filters(32 * 1.1) == 32
    assert scaled.head[-1].in_features == 4 * round_filters(320 * 1.1) == 1408
    assert all(round_filters(c) % 8 == 0 for c in (3.3, 17.6, 35.2, 352))


def test_efficientnet_stochastic_depth_grows_with_depth() -> None:
    probs = [m.drop_path.p for m in EfficientNet(3, 10, "b0").modules() if type(m).__name__ == "MBConv"]
    assert probs[0] == 0 and probs == sorted(probs) and max(probs) < 0.2


@pytest.mark.parametrize("model", [
    MLP(in_channels=1, num_classes=7, image_size=12, hidden_sizes=[16], act="tanh", dropout=0.1),
    SimpleCNN(in_channels=1, num_classes=7, widths=[4, 8, 8, 8], act="gelu", norm="group", dropout=0.1,
              spatial_dropout=0.1),
    ResNet(in_channels=1, num_classes=7, depth=18, stem="cifar", width=8),
    ResNet(in_channels=1, num_classes=7, depth=50, stem="imagenet", width=8, zero_init_residual=True),
])
def test_forward_backward_gives_finite_gradients(model: torch.nn.Module) -> None:
    logits = model(torch.randn(2, 1, 12, 12))
    assert logits.shape == (2, 7)
    logits.sum().backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)


def test_default_simple_cnn_survives_8x8_inputs() -> None:
    # Four 2x2 pools would take 8 px to 0 without ceil_mode; the default run (simple_cnn on digits) depends on this.
    cfg = compose()
    assert cfg.data.image_size == 8
    assert build_model(cfg.model)(torch.randn(3, 1, 8, 8)).shape == (3, 10)


@pytest.mark.parametrize("norm", NORMS)
def test_conv_block_has_bias_only_without_norm(norm: str) -> None:
    block = ConvNormAct(3, 16, norm=norm, spatial_dropout=0.2)
    assert (block[0].bias is not None) == (norm == "none")
    assert isinstance(block[-1], torch.nn.Dropout2d)
    assert block(torch.randn(2, 3, 5, 5)).shape == (2, 16, 5, 5)


def test_zero_init_residual_makes_blocks_start_as_identity_branches() -> None:
    model = ResNet(3, 10, depth=18, zero_init_residual=True)
    last_norms = [block.last_norm().weight for stage in model.stages for block in stage]
    assert all(torch.count_nonzero(w) == 0 for w in last_norms)


FORMULAS = {
    "relu": (lambda x: torch.clamp(x, min=0), lambda x: (x > 0).double()),
    "leaky_relu": (lambda x: torch.where(x > 0, x, 0.01 * x), lambda x: torch.where(x > 0, 1.0, 0.01)),
    "elu": (lambda x: torch.where(x > 0, x, torch.exp(x) - 1), lambda x: torch.where(x > 0, 1.0, torch.exp(x))),
    "gelu": (lambda x: x * 0.5 * (1 + torch.erf(x / math.sqrt(2))),
             lambda x: 0.5 * (1 + torch.erf(x / math.sqrt(2))) + x * torch.exp(-x * x / 2) / math.sqrt(2 * math.pi)),
    "silu": (lambda x: x / (1 + torch.exp(-x)),
             lambda x: torch.sigmoid(x) * (1 + x * (1 - torch.sigmoid(x)))),
    "sigmoid": (lambda x: 1 / (1 + torch.exp(-x)), lambda x: torch.sigmoid(x) * (1 - torch.sigmoid(x))),
    "tanh": (lambda x: (torch.exp(x) - torch.exp(-x)) / (torch.exp(x) + torch.exp(-x)),
             lambda x: 1 - torch.tanh(x) ** 2),
}


@pytest.mark.parametrize("name", sorted(FORMULAS))
def test_activations_match_their_formulas_and_derivatives(name: str) -> None:
    value, derivative = FORMULAS[name]
    grid = torch.linspace(-4, 4, 161, dtype=torch.float64).reshape(-1)
    grid = grid[grid.abs() > 1e-9].requires_grad_(True)  # skip the kink at 0
    out = make_activation(name)(grid)
    out.sum().backward()
    torch.testing.assert_close(out.detach(), value(grid.detach()))
    torch.testing.assert_close(grid.grad, derivative(grid.detach()).double())


# Every name the schema accepts, set on an option that uses it: (option, key, names).
SCHEMA_CHOICES = [
    ("mlp", "act", model_schema.ACTIVATION_NAMES),
    ("simple_cnn", "norm", model_schema.NORMS),
    ("resnet18", "depth", model_schema.RESNET_DEPTHS),
    ("resnet18", "stem", catalog.RESNET_STEMS),
    ("vgg11", "depth", model_schema.VGG_DEPTHS),
    ("efficientnet_b0", "variant", model_schema.EFFICIENTNET_VARIANTS),
]


@pytest.mark.parametrize(("option", "key", "value"),
                         [(option, key, value) for option, key, names in SCHEMA_CHOICES for value in names])
def test_every_choice_the_schema_accepts_builds(option: str, key: str, value) -> None:
    cfg = compose(f"model={option}", f"model.{key}={value}", "data=fake", "model.classifier_width=64"
                  if option.startswith("vgg") else "data.image_size=32")
    validate(cfg)
    model = on_meta(lambda: build_model(cfg.model))
    assert count_parameters(model) > 0


@pytest.mark.parametrize(("key", "value"), [("act", "mish"), ("norm", "instance")])
def test_a_name_no_model_implements_fails_validation(key: str, value: str) -> None:
    with pytest.raises(ConfigError, match=f"model.{key} must be one of"):
        validate(compose("model=simple_cnn", f"model.{key}={value}"))


def test_activation_table_names_torch_modules() -> None:
    assert set(ACTIVATIONS) == set(catalog.ACTIVATIONS) and set(NORMS) == set(model_schema.NORMS)
    assert all(isinstance(make_activation(name), torch.nn.Module) for name in model_schema.ACTIVATION_NAMES)


# Each option, built from its config at 224 px, 3 channels, 1000 classes, is the reference architecture:
# (option, overrides, torchvision builder, its arguments).
REFERENCE_OPTIONS = [
    *((f"resnet{depth}", [], f"resnet{depth}", {}) for depth in (18, 34, 50, 101, 152)),
    *((f"vgg{depth}", [], f"vgg{depth}", {}) for depth in (11, 13, 16, 19)),
    *((f"efficientnet_b{v}", [], f"efficientnet_b{v}", {}) for v in range(8)),
    ("googlenet", ["model.branch5x5_kernel=3"], "googlenet", {"aux_logits": False, "init_weights": True}),
]


@pytest.mark.parametrize(("option", "overrides", "reference", "kwargs"), REFERENCE_OPTIONS,
                         ids=[option for option, *_ in REFERENCE_OPTIONS])
def test_options_with_schema_defaults_build_the_reference_models(option: str, overrides: list[str], reference: str,
                                                                 kwargs: dict) -> None:
    cfg = compose(f"model={option}", "data=fake", "data.num_classes=1000", "data.image_size=224", *overrides)
    validate(cfg)
    expected = count_parameters(on_meta(lambda: torchvision.models.get_model(reference, **kwargs)))
    assert count_parameters(on_meta(lambda: build_model(cfg.model))) == expected


# ---- the smallest input each model can use (catalog.*_min_size), checked at validation

@pytest.mark.parametrize("resize", sorted({*catalog.RESNET_STEM_RESIZES["imagenet"], catalog.RESNET_DOWNSAMPLE,
                                           catalog.POOL_2X2, *catalog.GOOGLENET_RESIZES, catalog.EFFICIENTNET_STEM,
                                           (5, 2, 2, False)}))
def test_output_size_is_torchs(resize: catalog.Resize) -> None:
    kernel, stride, padding, ceil_mode = resize
    layer = (torch.nn.MaxPool2d(kernel, stride, padding, ceil_mode=True) if ceil_mode
             else torch.nn.Conv2d(1, 1, kernel, stride, padding))
    for size in range(1, 40):
        try:
            expected = layer(torch.zeros(1, 1, size, size)).shape[-1]
        except RuntimeError:  # "Output size is too small"
            expected = 0
        assert catalog.output_size(size, resize) == expected, (resize, size)


def conv_input_sizes(model: torch.nn.Module, size: int) -> dict[str, int] | None:
    """Each conv's input size in one eval-mode forward pass at `size` px (None: the pass fails)."""
    sizes: dict[str, int] = {}

    def record(name: str):
        def hook(_module: torch.nn.Module, args: tuple[torch.Tensor, ...]) -> None:
            sizes[name] = args[0].shape[-1]
        return hook

    hooks = [module.register_forward_pre_hook(record(name))
             for name, module in model.named_modules() if isinstance(module, torch.nn.Conv2d)]
    try:
        with torch.no_grad():
            model.eval()(torch.randn(2, 3, size, size))
    except RuntimeError:
        return None
    finally:
        for hook in hooks:
            hook.remove()
    return sizes


def convs_before_last_stage(model: torch.nn.Module) -> set[str]:
    """The convs not at the model's lowest resolution (seen at 64 px; 1-px inputs, after a global pool, aside)."""
    reference = conv_input_sizes(model, 64)
    assert reference
    lowest = min(size for size in reference.values() if size > 1)
    return {name for name, size in reference.items() if size > lowest}


# One member per structure, built small: (option, overrides).
MIN_SIZE_CASES = [
    ("simple_cnn", ["model.widths=[4,4,4,4]"]),
    ("simple_cnn", ["model.widths=[4,4,4,4,4,4]"]),
    ("resnet18", ["model.width=4"]),
    ("resnet50", ["model.width=4", "model.stem=cifar"]),
    ("vgg11", ["model.classifier_width=8", "model.pool_size=1"]),
    ("googlenet", []),
    ("efficientnet_b0", []),
    ("airbench", ["model.widths=[4,4,4]"]),
]


@pytest.mark.parametrize(("option", "overrides"), MIN_SIZE_CASES, ids=[" ".join([o, *r]) for o, r in MIN_SIZE_CASES])
@pytest.mark.usefixtures("single_thread")
def test_each_minimum_image_size_is_the_boundary(option: str, overrides: list[str]) -> None:
    # At the minimum the model runs and every conv before its last stage sees >= 2 px; one pixel less
    # collapses a map to 1 px before the last stage (or fails), and validation refuses it.
    def config(size: int):
        return compose(f"model={option}", "data=fake", "data.num_classes=3", f"data.image_size={size}", *overrides)

    cfg = config(64)
    minimum = OmegaConf.to_object(cfg.model).min_image_size()
    model = build_model(cfg.model)
    before_last = convs_before_last_stage(model)
    at_minimum = conv_input_sizes(model, minimum)
    assert at_minimum is not None and min(at_minimum[name] for name in before_last) >= 2
    below = conv_input_sizes(model, minimum - 1)
    assert below is None or min(below[name] for name in before_last) == 1
    validate(config(minimum))
    with pytest.raises(ConfigError, match=rf"needs data.image_size >= {minimum} \(got {minimum - 1}\)"):
        validate(config(minimum - 1))


def test_minimum_sizes_follow_the_structure() -> None:
    assert catalog.resnet_min_size("imagenet") == 17 and catalog.resnet_min_size("cifar") == 5
    assert [catalog.simple_cnn_min_size(n) for n in range(1, 6)] == [1, 2, 3, 5, 9]
    assert {catalog.vgg_min_size(depth) for depth in catalog.VGG_LAYERS} == {9}
    assert (catalog.googlenet_min_size(), catalog.efficientnet_min_size()) == (31, 17)
    assert [catalog.airbench_min_size(n, 2) for n in range(1, 5)] == [3, 5, 9, 17]
    validate(compose())  # the default run: simple_cnn (4 blocks, minimum 5 px) on 8-px digits
    validate(compose("model=mlp", "data.image_size=1", "model.hidden_sizes=[4]"))  # the MLP takes any size


def test_the_check_skips_modes_that_build_the_checkpoints_model() -> None:
    validate(compose("mode=eval", "ckpt=some.pt", "model=googlenet"))
    with pytest.raises(ConfigError, match=r"^invalid config: googlenet needs data.image_size >= 31 \(got 8\)"):
        validate(compose("model=googlenet"))


def test_build_model_raises_the_builders_own_error_unwrapped() -> None:
    cfg = {"_target_": "trainer.models.torchvision_model.build", "name": "resnet_18", "in_channels": 1,
           "num_classes": 3, "image_size": 8, "weights": None, "kwargs": None}
    with pytest.raises(ConfigError, match="did you mean resnet18"):
        build_model(cfg)
