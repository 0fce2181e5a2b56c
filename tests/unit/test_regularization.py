"""Label smoothing, class weights, mixup, cutmix and EMA match the guide's formulas on fixed tensors."""

from __future__ import annotations

import pytest
import torch
from hydra.utils import instantiate
from torch import nn

from tests.conftest import compose
from trainer.errors import ConfigError
from trainer.schema import validate
from trainer.training.ema import create_ema
from trainer.training.regularization import MixedTargets, Regularization, cutmix


def test_label_smoothing_matches_the_formula() -> None:
    eps, logits, targets = 0.1, torch.randn(5, 4), torch.tensor([0, 3, 1, 2, 3])
    log_p = logits.log_softmax(dim=1)
    # (1 - eps) * CE(y) + eps * mean over classes of -log p
    expected = ((1 - eps) * -log_p[torch.arange(5), targets] + eps * -log_p.mean(dim=1)).mean()
    assert Regularization(label_smoothing=eps).loss(logits, targets).item() == pytest.approx(expected.item())


def test_mixup_mixes_inputs_and_loss_with_one_lambda() -> None:
    torch.manual_seed(0)
    reg = Regularization(mixup_alpha=0.4)
    inputs, targets = torch.randn(6, 3, 4, 4), torch.arange(6) % 3
    mixed, mt = reg.mix(inputs, targets)
    assert isinstance(mt, MixedTargets) and 0 <= mt.lam <= 1
    # Each mixed image is lam * its own image + (1 - lam) * its partner's, whose label is in mt.b.
    partners = [next(j for j in range(6) if torch.allclose(mixed[i], mt.lam * inputs[i] + (1 - mt.lam) * inputs[j],
                                                           atol=1e-6)) for i in range(6)]
    assert [int(targets[j]) for j in partners] == mt.b.tolist()
    logits = torch.randn(6, 3)
    ce = nn.CrossEntropyLoss()
    expected = mt.lam * ce(logits, mt.a) + (1 - mt.lam) * ce(logits, mt.b)
    assert reg.loss(logits, mt).item() == pytest.approx(expected.item())


def test_mixup_lambda_follows_beta_alpha_alpha() -> None:
    torch.manual_seed(1)
    reg = Regularization(mixup_alpha=0.2)
    lams = [reg.mix(torch.zeros(2, 1, 2, 2), torch.tensor([0, 1]))[1].lam for _ in range(2000)]
    # Beta(0.2, 0.2): mean 0.5, variance 1 / (4 * (2 * 0.2 + 1)) = 0.1786, mass near 0 and 1.
    mean = sum(lams) / len(lams)
    var = sum((x - mean) ** 2 for x in lams) / len(lams)
    assert mean == pytest.approx(0.5, abs=0.03) and var == pytest.approx(0.1786, abs=0.02)


def test_cutmix_pastes_a_box_and_reports_its_true_area() -> None:
    torch.manual_seed(2)
    inputs, donors = torch.zeros(2, 1, 10, 10), torch.ones(2, 1, 10, 10)
    mixed, lam = cutmix(inputs, donors, 0.75)
    pasted = mixed.mean().item()
    assert pasted == pytest.approx(1 - lam) and 0 < pasted < 0.5


def test_no_regularization_leaves_the_batch_alone() -> None:
    inputs, targets = torch.randn(3, 2), torch.tensor([0, 1, 0])
    out, out_targets = Regularization().mix(inputs, targets)
    assert out is inputs and out_targets is targets


def test_ema_equals_the_closed_form_average() -> None:
    decay, model = 0.9, nn.Linear(2, 1)
    ema = create_ema(model, decay)
    snapshots = []
    for step in range(5):
        with torch.no_grad():
            model.weight.add_(float(step + 1))
        snapshots.append(model.weight.detach().clone())
        ema.update(model)
    n = len(snapshots)
    # The first update copies; later ones blend: ema_N = d^(N-1) p_1 + (1 - d) * sum_k d^(N-k) p_k.
    expected = decay ** (n - 1) * snapshots[0] + sum((1 - decay) * decay ** (n - k) * snapshots[k - 1]
                                                     for k in range(2, n + 1))
    torch.testing.assert_close(ema.module.weight, expected)


CPU = torch.device("cpu")


def weighted_ce(logits: torch.Tensor, targets: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """sum_i w[y_i] * -log softmax(x_i)[y_i] / sum_i w[y_i]."""
    w = weights[targets]
    return (w * -logits.log_softmax(dim=1)[torch.arange(len(targets)), targets]).sum() / w.sum()


def test_class_weights_weigh_each_sample_by_its_class() -> None:
    torch.manual_seed(3)
    logits, targets = torch.randn(6, 3), torch.tensor([0, 2, 1, 2, 2, 0])
    reg = Regularization(class_weights=[1.0, 3.0, 0.5])
    weights = reg.use_class_weights(targets, 3, CPU)
    assert weights.tolist() == [1.0, 3.0, 0.5]
    expected = weighted_ce(logits, targets, weights)
    assert reg.loss(logits, targets).item() == pytest.approx(expected.item())
    assert reg.loss(logits, targets).item() != pytest.approx(nn.CrossEntropyLoss()(logits, targets).item())


def test_mixed_targets_use_the_weighted_loss() -> None:
    torch.manual_seed(4)
    logits, a, b = torch.randn(4, 3), torch.tensor([0, 1, 2, 2]), torch.tensor([2, 2, 0, 1])
    reg = Regularization(mixup_alpha=0.4, class_weights=[2.0, 1.0, 0.25])
    weights = reg.use_class_weights(a, 3, CPU)
    expected = 0.3 * weighted_ce(logits, a, weights) + 0.7 * weighted_ce(logits, b, weights)
    assert reg.loss(logits, MixedTargets(a, b, 0.3)).item() == pytest.approx(expected.item())


def test_auto_class_weights_are_inverse_frequencies() -> None:
    labels = torch.tensor([0, 0, 0, 1, 2, 2])  # N = 6 over 3 classes: w_c = 6 / (3 * n_c)
    weights = Regularization(class_weights="auto").use_class_weights(labels, 3, CPU)
    torch.testing.assert_close(weights, torch.tensor([6 / 9, 6 / 3, 6 / 6]))
    # Every class then adds the same total weight: w_c * n_c = N / num_classes.
    torch.testing.assert_close(weights * torch.bincount(labels), torch.full((3,), 2.0))


def test_no_class_weights_keep_the_plain_loss() -> None:
    logits, targets = torch.randn(3, 2), torch.tensor([0, 1, 1])
    reg = Regularization()
    assert reg.use_class_weights(targets, 2, CPU) is None
    assert reg.loss(logits, targets).item() == pytest.approx(nn.CrossEntropyLoss()(logits, targets).item())


def test_auto_refuses_a_class_with_no_training_labels() -> None:
    with pytest.raises(ConfigError, match=r"regularization.class_weights=auto: class 1 ") as err:
        Regularization(class_weights="auto").use_class_weights(torch.tensor([0, 2, 2]), 3, CPU)
    assert "\n" not in str(err.value)


def test_a_weight_list_of_the_wrong_length_names_both_numbers() -> None:
    with pytest.raises(ConfigError) as err:
        Regularization(class_weights=[1, 2]).use_class_weights(torch.tensor([0, 1, 2]), 3, CPU)
    message = str(err.value)
    assert "regularization.class_weights has 2 entries" in message and "3 classes" in message
    assert "\n" not in message


@pytest.mark.parametrize(("override", "expected"), [
    ("regularization.class_weights=auto", "auto"),
    ("regularization.class_weights=[1,2.5,3]", [1.0, 2.5, 3.0]),
    ("regularization.class_weights=null", None),
])
def test_class_weight_overrides_compose_validate_and_instantiate(override: str, expected) -> None:
    cfg = compose(override, "regularization.ema_every_n_steps=4", "regularization.ema_warmup=true", "data=fake",
                  "data.num_classes=3")
    validate(cfg)
    reg = instantiate(cfg.regularization)
    assert reg.class_weights == expected
    assert (reg.ema_every_n_steps, reg.ema_warmup) == (4, True)


@pytest.mark.parametrize(("override", "message"), [
    ("regularization.class_weights=[1,-2]", "regularization.class_weights must be null, auto or a non-empty list"),
    ("regularization.class_weights=[]", "regularization.class_weights must be null, auto or a non-empty list"),
    ("regularization.class_weights=often", "regularization.class_weights must be null, auto or a non-empty list"),
    ("regularization.ema_every_n_steps=0", "regularization.ema_every_n_steps must be >= 1"),
])
def test_bad_class_weights_and_ema_intervals_are_refused(override: str, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        validate(compose(override))
    assert message in str(err.value)
    assert "\n" not in str(err.value)
