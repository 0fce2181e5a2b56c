"""model=vit, model=rnn, model=timm and torchvision's model.kwargs: layouts, counts by formula, config errors."""

from __future__ import annotations

from pathlib import Path
from unittest import mock

import pytest
import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn

from tests.conftest import compose
from trainer.build import build_model, count_parameters, model_config_from_checkpoint, without_weight_sources
from trainer.errors import CheckpointError, ConfigError
from trainer.schema import validate
from trainer.schema.model import RNNConfig, TimmConfig, TorchvisionConfig, ViTConfig


def on_meta(build):
    """Build on the meta device: shapes and parameter counts without allocating or initialising weights."""
    with torch.device("meta"):
        return build()


# ---- the Vision Transformer

def vit_parameters(channels: int, classes: int, image: int, patch: int, dim: int, depth: int, mlp_ratio: float,
                   pool: str) -> int:
    """The ViT's parameter count by formula: patch conv, class token, position embedding, blocks, norm, head."""
    tokens = (image // patch) ** 2 + (pool == "cls")
    hidden = int(dim * mlp_ratio)
    block = 2 * 2 * dim + (dim * 3 * dim + 3 * dim) + (dim * dim + dim) + (dim * hidden + hidden) + (hidden * dim + dim)
    return (channels * patch * patch * dim + dim) + dim * (pool == "cls") + tokens * dim + depth * block + 2 * dim + (
        dim * classes + classes)


RGB_10 = {"in_channels": 3, "num_classes": 10, "image_size": 32}  # what data=fake gives the model


def model_config(schema: type, **values) -> DictConfig:
    """A model group as a run composes it (the schema's defaults, `values` set), without composing a run."""
    return OmegaConf.structured(schema(**values))


def built(schema: type, channels: int, classes: int, image: int, **values) -> nn.Module:
    """The schema's model (its defaults, `values` set) for `channels` x `image` px inputs and `classes` classes:
    the builders take every argument from the config."""
    return build_model(model_config(schema, in_channels=channels, num_classes=classes, image_size=image, **values))


@pytest.mark.parametrize("values", [{}, {"pool": "mean", "patch_size": 8, "dim": 96, "heads": 4, "depth": 3,
                                         "mlp_ratio": 2.5}])
def test_vit_parameter_count_follows_the_formula(values: dict) -> None:
    m = model_config(ViTConfig, **RGB_10, **values)
    model = on_meta(lambda: build_model(m))
    assert count_parameters(model) == vit_parameters(m.in_channels, m.num_classes, m.image_size, m.patch_size, m.dim,
                                                     m.depth, m.mlp_ratio, m.pool)
    if not values:
        assert 5_000_000 < count_parameters(model) < 6_000_000  # vit_tiny's size


def test_vit_has_timms_parameter_names_and_shapes() -> None:
    import timm

    ours = on_meta(lambda: built(ViTConfig, 3, 10, 32, patch_size=4, dim=48, depth=2, heads=3))
    theirs = on_meta(lambda: timm.create_model("vit_tiny_patch16_224", img_size=32, patch_size=4, embed_dim=48,
                                               depth=2, num_heads=3, num_classes=10))
    assert {k: v.shape for k, v in ours.state_dict().items()} == {k: v.shape for k, v in theirs.state_dict().items()}
    assert [name for name, _ in ours.named_children()] == ["patch_embed", "pos_drop", "blocks", "norm", "head"]


@pytest.mark.parametrize("pool", ["cls", "mean"])
def test_vit_forward_shapes_and_initialisation(pool: str) -> None:
    torch.manual_seed(0)
    model = built(ViTConfig, 1, 7, 16, patch_size=4, dim=64, depth=2, heads=4, pool=pool, stochastic_depth=0.3)
    assert model(torch.randn(3, 1, 16, 16)).shape == (3, 7)
    assert model.pos_embed.shape == (1, 16 + (pool == "cls"), 64)
    assert (model.cls_token is None) == (pool == "mean")
    assert [block.drop_path.p for block in model.blocks] == pytest.approx([0.0, 0.3])  # linear; the last at the rate
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    assert all(torch.count_nonzero(m.bias) == 0 for m in linears)
    qkv = model.blocks[0].attn.qkv.weight
    assert 0.018 < qkv.std().item() < 0.022 and qkv.abs().max() < 0.2  # truncated normal, std 0.02


def test_vit_no_weight_decay_names_its_embeddings_and_norms() -> None:
    model = built(ViTConfig, 3, 10, 8, patch_size=4, dim=16, depth=2, heads=2)
    names = dict(model.named_parameters())
    exempt = model.no_weight_decay()
    assert exempt <= set(names)
    norm_params = {name for name in names if "." in name and name.split(".")[-2].startswith("norm")}
    assert exempt == {"pos_embed", "cls_token"} | norm_params
    assert len(norm_params) == 2 * (2 * 2 + 1)  # norm1 and norm2 of each block, the final norm: weight and bias
    mean_pooled = built(ViTConfig, 3, 10, 8, patch_size=4, dim=16, depth=2, heads=2, pool="mean")
    assert "cls_token" not in mean_pooled.no_weight_decay()


def test_a_tiny_vit_trains() -> None:
    torch.manual_seed(0)
    model = built(ViTConfig, 3, 4, 8, patch_size=4, dim=32, depth=2, heads=2, dropout=0.1)
    x, y = torch.randn(16, 3, 8, 8), torch.arange(16) % 4
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(8):
        loss = nn.functional.cross_entropy(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.7 * losses[0]


def test_vit_config_errors_name_the_key() -> None:
    with pytest.raises(ConfigError, match=r"^invalid config: model.patch_size must be a divisor of data.image_size "
                                          r"\(30\) \(got 4\)$"):
        validate(compose("model=vit", "data=fake", "data.image_size=30"))
    for values, message in [({"heads": 5}, "heads must be a divisor of model.dim (192) (got 5)"),
                            ({"pool": "max"}, "pool must be one of cls, mean (got 'max')"),
                            ({"stochastic_depth": 1.0}, "stochastic_depth must be in [0, 1) (got 1.0)")]:
        with pytest.raises(ValueError) as err:
            ViTConfig(image_size=32, **values)
        assert str(err.value) == message


# ---- the row-by-row RNN

def rnn_parameters(cell: str, inputs: int, hidden: int, layers: int, directions: int, classes: int) -> int:
    gates = {"lstm": 4, "gru": 3}[cell]
    total = 0
    for layer in range(layers):
        width = inputs if layer == 0 else hidden * directions
        total += directions * gates * (hidden * width + hidden * hidden + 2 * hidden)
    return total + hidden * directions * classes + classes


@pytest.mark.parametrize(("cell", "layers", "bidirectional"), [("lstm", 1, False), ("gru", 2, True),
                                                                ("lstm", 2, True)])
def test_rnn_reads_rows_and_heads_on_each_directions_final_state(cell: str, layers: int, bidirectional: bool) -> None:
    torch.manual_seed(0)
    model = built(RNNConfig, 2, 5, 6, cell=cell, hidden_size=8, num_layers=layers, bidirectional=bidirectional).eval()
    assert count_parameters(model) == rnn_parameters(cell, 6 * 2, 8, layers, 1 + bidirectional, 5)
    x = torch.randn(3, 2, 6, 6)
    # step t is row t: its 6 pixels, each with both channels
    rows = torch.stack([x[:, :, t, :].transpose(1, 2).reshape(3, 12) for t in range(6)], dim=1)
    out, _ = model.rnn(rows)
    final = torch.cat([out[:, -1, :8], out[:, 0, 8:]], dim=1) if bidirectional else out[:, -1]
    torch.testing.assert_close(model(x), model.head(final))


def test_rnn_lstm_starts_with_forget_gate_bias_one() -> None:
    model = built(RNNConfig, 1, 10, 28, hidden_size=16, num_layers=2)
    for layer in range(2):
        bias = getattr(model.rnn, f"bias_ih_l{layer}") + getattr(model.rnn, f"bias_hh_l{layer}")
        assert torch.equal(bias.detach(), torch.tensor([0.0] * 16 + [1.0] * 16 + [0.0] * 32))


def test_rnn_config_errors_name_the_key() -> None:
    with pytest.raises(ValueError, match=r"^cell must be one of lstm, gru \(got 'rnn'\)$"):
        RNNConfig(cell="rnn")
    with pytest.raises(ValueError, match=r"^hidden_size must be >= 1"):
        RNNConfig(hidden_size=0)


# ---- timm

def run_config(model: DictConfig, dropout: float | None = None, stochastic_depth: float | None = None) -> DictConfig:
    """The two groups `apply_regularization_to_model` reads: the model, and the regularization's rates."""
    return OmegaConf.create({"model": model, "regularization": {"dropout": dropout,
                                                                "stochastic_depth": stochastic_depth}})


@pytest.fixture
def no_downloads():
    """Every way timm fetches weights from the network fails the test."""
    def download(*args, **kwargs):
        raise AssertionError("timm tried to download weights")

    with mock.patch("timm.models._builder.load_state_dict_from_url", download), \
            mock.patch("timm.models._builder.load_state_dict_from_hf", download), \
            mock.patch("timm.models._builder.download_cached_file", download):
        yield


def test_an_unknown_timm_name_suggests_close_ones() -> None:
    with pytest.raises(ConfigError, match=r"model.name='resnet10' is not a timm model; did you mean resnet10t"):
        built(TimmConfig, 3, 10, 32, name="resnet10")


def test_rate_keys_and_kwargs_reach_timm_and_regularization_sets_them() -> None:
    import timm

    from trainer.training.train import apply_regularization_to_model

    cfg = run_config(model_config(TimmConfig, name="test_resnet", kwargs={"stem_width": 16}, **RGB_10), dropout=0.25,
                     stochastic_depth=0.1)
    apply_regularization_to_model(cfg)
    model = build_model(cfg.model)
    assert model.drop_rate == 0.25 and model.conv1[0].out_channels == 16
    drop_paths = [m.drop_prob for m in model.modules() if isinstance(m, timm.layers.DropPath)]
    assert drop_paths and max(drop_paths) == pytest.approx(0.1)
    default = build_model(model_config(TimmConfig, name="test_resnet", **RGB_10))
    assert default.drop_rate == 0.0 and not any(isinstance(m, timm.layers.DropPath) for m in default.modules())


def test_timm_settings_made_twice_are_refused() -> None:
    from trainer.training.train import apply_regularization_to_model

    for rates, message in [({"stochastic_depth": 0.2}, r"kwargs.drop_path_rate must be left out when "
                             r"model.stochastic_depth is set \(both set timm's drop_path_rate\) \(got 0.1\); "
                             r"regularization.stochastic_depth=0.2 sets model.stochastic_depth$"),
                           ({"dropout": 0.2}, r"kwargs.drop_rate must be left out when model.dropout is set .*"
                            r"regularization.dropout=0.2 sets model.dropout$")]:
        cfg = run_config(model_config(TimmConfig, kwargs={"drop_path_rate": 0.1, "drop_rate": 0.1}, **RGB_10),
                         **rates)
        with pytest.raises(ConfigError, match=r"^invalid config: model." + message):
            apply_regularization_to_model(cfg)
    for values, message in [({"kwargs": {"drop_rate": 0.1}, "dropout": 0.2}, "kwargs.drop_rate must be left out "
                             "when model.dropout is set (both set timm's drop_rate) (got 0.1)"),
                            ({"kwargs": {"in_chans": 1}}, "kwargs.in_chans must be left out (it is set by "
                             "data.in_channels) (got 1)"),
                            ({"kwargs": [1]}, "kwargs must be a dict of keyword arguments or null (got [1])"),
                            ({"kwargs": {"drop_rate": 2}}, "kwargs.drop_rate must be in [0, 1) (got 2)")]:
        with pytest.raises(ValueError) as err:
            TimmConfig(**values)
        assert str(err.value) == message


def test_an_argument_the_timm_model_lacks_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match=r"^timm model test_resnet takes no patch_size argument "
                                          r"\(set by model.kwargs.patch_size\)$"):
        built(TimmConfig, 3, 10, 32, name="test_resnet", kwargs={"patch_size": 4})


def test_a_fixed_size_timm_model_is_built_for_the_data() -> None:
    model = on_meta(lambda: built(TimmConfig, 3, 10, 32, name="vit_tiny_patch16_224", kwargs={"depth": 1}))
    assert model.patch_embed.img_size == (32, 32) and model.pos_embed.shape == (1, 2 * 2 + 1, 192)
    wider = on_meta(lambda: built(TimmConfig, 3, 10, 32, name="vit_tiny_patch16_224",
                                  kwargs={"img_size": 64, "dynamic_img_size": True, "depth": 1}))
    assert wider.patch_embed.img_size == (64, 64)  # model.kwargs wins


@pytest.mark.parametrize(("kwargs", "message"), [
    ({}, r"^timm model vit_tiny_patch16_224 cuts its input into 16-px patches, larger than data.image_size=8"),
    ({"img_size": 64, "patch_size": 4}, r"^timm model vit_tiny_patch16_224 is built for 64x64 px input .* but gets "
                                        r"data.image_size=8"),
    ({"embed_dim": 100}, r"^timm cannot build model.name=vit_tiny_patch16_224, model.kwargs=\{'embed_dim': 100, "
                         r"'depth': 1\}, data.image_size=8: AssertionError: dim should be divisible by num_heads$"),
])
def test_timm_settings_that_fail_on_the_data_are_one_line(kwargs: dict, message: str) -> None:
    """Each would end in a traceback: timm's own assertion, or the first forward pass on 8-px digits."""
    with pytest.raises(ConfigError, match=message):
        on_meta(lambda: built(TimmConfig, 1, 10, 8, name="vit_tiny_patch16_224", kwargs={**kwargs, "depth": 1}))


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_a_pretrained_file_loads_through_timm_with_its_adaptations(suffix: str, tmp_path: Path,
                                                                   no_downloads) -> None:
    import timm
    from safetensors.torch import save_file

    torch.manual_seed(0)
    source = timm.create_model("test_resnet")  # RGB, 1000 classes: like ImageNet weights
    weights = source.state_dict()
    path = tmp_path / f"weights{suffix}"
    if suffix == ".safetensors":
        save_file(weights, path)
    else:
        torch.save({"state_dict": {f"module.{k}": v for k, v in weights.items()}}, path)  # a DDP-style wrapper
    model = built(TimmConfig, 1, 10, 28, name="test_resnet", pretrained_file=str(path))
    loaded = model.state_dict()
    body = set(weights) - {"conv1.0.weight", "fc.weight", "fc.bias"}
    assert all(torch.equal(loaded[key], weights[key]) for key in body)
    torch.testing.assert_close(loaded["conv1.0.weight"], weights["conv1.0.weight"].sum(dim=1, keepdim=True))
    assert loaded["fc.weight"].shape == (10, weights["fc.weight"].shape[1])  # a fresh head for 10 classes


def test_a_pretrained_file_that_is_missing_or_of_another_model_is_refused(tmp_path: Path, no_downloads) -> None:
    import timm

    with pytest.raises(ConfigError, match=r"model.pretrained_file=.*nothing.pth is not a file"):
        built(TimmConfig, 3, 10, 32, name="test_resnet", pretrained_file=str(tmp_path / "nothing.pth"))
    torch.save(timm.create_model("test_resnet").state_dict(), tmp_path / "resnet.pth")
    with pytest.raises(ConfigError, match=r"holds no tensor of timm model test_vit"):
        built(TimmConfig, 3, 10, 32, name="test_vit", pretrained_file=str(tmp_path / "resnet.pth"))
    (tmp_path / "garbage.pth").write_bytes(b"not weights")
    with pytest.raises(CheckpointError, match=r"^model.pretrained_file=.*garbage.pth does not read as weights"):
        built(TimmConfig, 3, 10, 32, name="test_resnet", pretrained_file=str(tmp_path / "garbage.pth"))
    torch.save({"model": timm.create_model("test_resnet").state_dict(), "config": {}, "epoch": 1,
                "inference": {"classes": ["a", "b"]}}, tmp_path / "best.pt")
    with pytest.raises(ConfigError, match=r"is a checkpoint of this project: start from it with model.init_from="):
        built(TimmConfig, 3, 10, 32, name="test_resnet", pretrained_file=str(tmp_path / "best.pt"))


def test_a_pretrained_head_for_the_datas_classes_is_kept(tmp_path: Path, no_downloads) -> None:
    """timm's own rule keeps a head only for its config's 1000 classes: a 10-class head fine-tuned on the data
    comes back bit for bit (the 1000-class one: test_a_pretrained_file_loads_through_timm_with_its_adaptations)."""
    torch.manual_seed(0)
    saved = built(TimmConfig, 1, 10, 8, name="test_resnet").state_dict()
    torch.save(saved, path := tmp_path / "digits.pth")
    loaded = built(TimmConfig, 1, 10, 8, name="test_resnet", pretrained_file=str(path))
    assert all(torch.equal(tensor, saved[key]) for key, tensor in loaded.state_dict().items())
    assert "state_dict" not in loaded.pretrained_cfg  # timm's copy of the file is not kept with the model


def test_a_model_rebuilt_from_a_checkpoint_does_not_read_its_pretrained_file(tmp_path: Path, no_downloads) -> None:
    """eval/predict/export and a resumed run take the checkpoint's weights: a pretrained_file moved away since the
    run started is not read (without_weight_sources), while a fresh build still refuses it."""
    cfg = OmegaConf.structured(TimmConfig(in_channels=3, num_classes=10, image_size=32, name="test_resnet",
                                          pretrained_file=str(tmp_path / "moved.pth")))
    with pytest.raises(ConfigError, match="moved.pth is not a file"):
        build_model(cfg)
    saved = OmegaConf.to_container(cfg)
    rebuilt = model_config_from_checkpoint(saved, "ckpt.pt")
    assert rebuilt.pretrained_file is None and saved["pretrained_file"] == str(tmp_path / "moved.pth")
    assert isinstance(build_model(rebuilt), nn.Module)
    assert without_weight_sources(cfg).pretrained_file is None and cfg.pretrained_file is not None


# ---- torchvision's builder arguments

def test_torchvision_kwargs_reach_the_builder() -> None:
    cfg = model_config(TorchvisionConfig, name="mobilenet_v3_small", kwargs={"dropout": 0.3}, **RGB_10)
    model = on_meta(lambda: build_model(cfg))
    assert [m.p for m in model.modules() if isinstance(m, nn.Dropout)] == [0.3]
    with pytest.raises(ConfigError, match=r"^torchvision model resnet18 takes no dropout argument"):
        on_meta(lambda: built(TorchvisionConfig, 3, 10, 32, kwargs={"dropout": 0.3}))
    with pytest.raises(ConfigError, match=r"^torchvision cannot build model.name=mobilenet_v3_small, model.kwargs="
                                          r"\{'dropout': 2\}: ValueError: dropout probability"):
        on_meta(lambda: built(TorchvisionConfig, 3, 10, 32, name="mobilenet_v3_small", kwargs={"dropout": 2}))
    with pytest.raises(ValueError, match=r"^kwargs.num_classes must be left out \(it is set by data.num_classes\)"):
        TorchvisionConfig(kwargs={"num_classes": 3})


# ---- checkpoints of the new models load for eval, predict and export

@pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning")  # nn.LSTM's own input-size checks, while traced
@pytest.mark.parametrize(("schema", "values"), [
    (ViTConfig, {"patch_size": 2, "dim": 16, "depth": 1, "heads": 2, "pool": "mean"}),
    (TimmConfig, {"name": "test_resnet", "stochastic_depth": 0.1, "kwargs": {"stem_width": 16}}),
    (RNNConfig, {"hidden_size": 8, "bidirectional": True}),
])
def test_new_model_checkpoints_load_for_inference(schema: type, values: dict, digits_ckpt: Path,
                                                  tmp_path: Path) -> None:
    from trainer.modes.inference import load_for_inference
    from trainer.training.checkpoint import save_checkpoint

    payload = torch.load(digits_ckpt, weights_only=True)  # a run's checkpoint on the default data: 8-px digits
    model_cfg = OmegaConf.to_container(model_config(schema, in_channels=1, num_classes=10, image_size=8, **values))
    payload["config"]["model"] = model_cfg
    saved = payload["model"] = build_model(model_cfg).state_dict()
    save_checkpoint(payload, path := tmp_path / "model.pt")
    loaded = load_for_inference(path, torch.device("cpu"))
    assert not loaded.model.training and loaded.model.state_dict().keys() == saved.keys()
    assert all(torch.equal(tensor, saved[key]) for key, tensor in loaded.model.state_dict().items())
    assert loaded.model(torch.randn(2, 1, 8, 8)).shape == (2, 10)
    if schema is not TimmConfig:  # the project's own models export (mode=export's default format) for any batch
        from trainer.modes.export import export_torchscript

        exported, x = export_torchscript(loaded.model, torch.randn(2, 1, 8, 8), tmp_path / "model.ts"), torch.randn(
            5, 1, 8, 8)
        torch.testing.assert_close(exported(x), loaded.model(x))
