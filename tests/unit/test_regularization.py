"""Label smoothing, mixup, cutmix and EMA match the guide's formulas on fixed tensors."""

from __future__ import annotations

import pytest
import torch
from torch import nn

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
        ema.update_parameters(model)
    n = len(snapshots)
    # The first update copies; later ones blend: ema_N = d^(N-1) p_1 + (1 - d) * sum_k d^(N-k) p_k.
    expected = decay ** (n - 1) * snapshots[0] + sum((1 - decay) * decay ** (n - k) * snapshots[k - 1]
                                                     for k in range(2, n + 1))
    torch.testing.assert_close(ema.module.weight, expected)
