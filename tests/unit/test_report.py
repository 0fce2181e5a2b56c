"""The end-of-run report: PNGs that open, per-class scores that add up, TensorBoard figures and hparams."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tests.conftest import assert_real_png, compose, read_csv
from trainer.build import build_data, build_model
from trainer.reporting.classification import confusion_matrix, per_class_metrics
from trainer.reporting.console import config_tree, write_config_tree
from trainer.reporting.loggers import TensorBoardLogger
from trainer.reporting.report import write_run_report
from trainer.training.checkpoint import save_checkpoint
from trainer.training.runtime import Precision

HISTORY = [{"epoch": e, "step": 10 * e, "lr": 0.003 / e, "train_loss": 1.0 / e, "train_acc": 0.5 + 0.1 * e,
            "val_loss": 1.1 / e, "val_acc": 0.45 + 0.1 * e} for e in (1, 2, 3)]


@pytest.fixture(scope="module")
def digits_parts():
    """Digits config, data and a model with a saved best.pt whose weights differ from the live model's."""
    torch.manual_seed(0)
    cfg = compose()
    datamodule = build_data(cfg, with_augment=False)
    model = build_model(cfg.model)
    return cfg, datamodule, model


def report(tmp_path: Path, digits_parts, logger) -> tuple[dict, torch.nn.Module]:
    """The run report of the digits parts, as the run's RunReport hook writes it (a graph if the logger wants one)."""
    cfg, datamodule, model = digits_parts
    best = {k: v.clone() for k, v in model.state_dict().items()}
    save_checkpoint({"model": best, "config": {"model": {}}, "epoch": 3}, tmp_path / "checkpoints" / "best.pt")
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()
    written = write_run_report(tmp_path, HISTORY, model, datamodule.val_loader(), datamodule.classes,
                               Precision("32", torch.device("cpu")), logger, cfg, log_graph=logger.graph)
    for key, value in best.items():
        assert torch.equal(model.state_dict()[key], value), f"best.pt was not loaded ({key})"
    return written, model


@pytest.fixture(scope="module")
def tensorboard_report(tmp_path_factory, digits_parts) -> tuple[Path, dict]:
    """The report written once with the default logger config (TensorBoard), shared by the tests that read it."""
    from trainer.build import build_logger

    folder = tmp_path_factory.mktemp("report")
    logger = build_logger(digits_parts[0].logger, str(folder), digits_parts[0])
    assert [type(one) for one in logger.loggers.values()] == [TensorBoardLogger]
    written, _ = report(folder, digits_parts, logger)
    logger.close()
    return folder, written


def test_report_writes_readable_pngs_and_per_class_scores(tensorboard_report, digits_parts) -> None:
    folder, written = tensorboard_report
    datamodule = digits_parts[1]
    for name in ("curves.png", "confusion_matrix.png", "samples.png"):
        assert_real_png(folder / name)
    assert written["per_class"] == folder / "per_class.csv"
    rows = read_csv(folder / "per_class.csv")
    assert [r["class"] for r in rows] == datamodule.classes
    assert sum(int(r["support"]) for r in rows) == len(datamodule.val_set)
    assert all(0.0 <= float(r[k]) <= 1.0 for r in rows for k in ("precision", "recall", "f1"))


def test_report_logs_figures_and_hparams_to_tensorboard(tensorboard_report) -> None:
    """The default logger config: TensorBoard figures and hparams, but no model graph (tracing it costs time;
    tests/e2e/test_train.py's run sets logger.graph=true and finds the graph)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(tensorboard_report[0] / "tb"))
    events.Reload()
    assert {"report/confusion_matrix", "report/samples", "report/curves"} <= set(events.Tags()["images"])
    hparams = events.PluginTagToContent("hparams")
    assert "_hparams_/session_start_info" in hparams
    assert b"optim.lr" in hparams["_hparams_/session_start_info"]
    assert b"val/acc" in hparams["_hparams_/experiment"]  # a metric column that reads the val/acc curve
    assert not [tag for tag in events.Tags()["scalars"] if tag.startswith("hparam")]  # no one-point charts
    assert not events.Tags()["graph"]


def test_per_class_metrics_from_a_known_confusion_matrix() -> None:
    predicted = torch.tensor([0, 0, 1, 1, 1, 2])
    targets = torch.tensor([0, 1, 1, 1, 2, 2])
    matrix = confusion_matrix(predicted, targets, 3)
    assert matrix.tolist() == [[1, 0, 0], [1, 2, 0], [0, 1, 1]]
    rows = {r["class"]: r for r in per_class_metrics(matrix, ["a", "b", "c"])}
    assert rows["a"]["precision"] == pytest.approx(0.5) and rows["a"]["recall"] == pytest.approx(1.0)
    assert rows["b"]["precision"] == pytest.approx(2 / 3) and rows["b"]["recall"] == pytest.approx(2 / 3)
    assert rows["c"]["f1"] == pytest.approx(2 * 1.0 * 0.5 / 1.5)
    assert [r["support"] for r in rows.values()] == [1, 3, 2]


def test_config_tree_groups_keys_and_writes_text(tmp_path: Path) -> None:
    cfg = compose("optim=sgd")
    tree = config_tree(cfg)
    assert [str(child.label) for child in tree.children][:3] == ["[bold cyan]run[/bold cyan]",
                                                                 "[bold cyan]data[/bold cyan]",
                                                                 "[bold cyan]model[/bold cyan]"]
    write_config_tree(cfg, tmp_path / "config_tree.txt")
    text = (tmp_path / "config_tree.txt").read_text()
    assert "├── optim" in text and "torch.optim.SGD" in text and "seed: 42" in text


def test_sample_tiles_are_scaled_and_wrong_predictions_are_red() -> None:
    from trainer.reporting.plots import MAX_SAMPLE_NAME_CHARS, samples_figure

    images = torch.stack([torch.full((1, 4, 4), 5.0), torch.arange(16.0).view(1, 4, 4), -torch.ones(1, 4, 4)])
    long_name = "a class name far too long for a tile"
    figure = samples_figure(images, ["a", long_name, "c"], ["a", "x", "c"])
    ax = figure.axes[0]
    labels = [(t.get_text(), t.get_color()) for t in ax.texts]
    assert labels[0] == ("a / a", "black") and labels[2] == ("c / c", "black")
    assert labels[1][1] == "red" and "\u2026" in labels[1][0] and labels[1][0].endswith("tile / x")
    assert len(labels[1][0]) == MAX_SAMPLE_NAME_CHARS + len(" / x")
    mosaic = ax.images[0].get_array()
    assert mosaic.shape[2] == 3 and mosaic.min() >= 0 and mosaic.max() <= 1
    ramp = torch.linspace(0, 1, 16).view(4, 4).numpy()  # the second image, min-max scaled, somewhere in the mosaic
    assert any(abs(mosaic[r:r + 4, c:c + 4, 0] - ramp).max() < 1e-6
               for r in range(mosaic.shape[0] - 3) for c in range(mosaic.shape[1] - 3))


def test_long_class_names_are_shortened_on_the_confusion_matrix() -> None:
    from trainer.reporting.plots import MAX_TICK_CHARS, confusion_figure

    names = [f"{'prefix_' * 6}{i}" for i in range(12)]  # 43 characters, told apart only at the end
    ax = confusion_figure(torch.ones(12, 12, dtype=torch.long), names).axes[0]
    ticks = [t.get_text() for t in ax.get_yticklabels()]
    assert all(len(tick) == MAX_TICK_CHARS and "\u2026" in tick for tick in ticks)
    assert len(set(ticks)) == 12 and all(tick.endswith(str(i)) for i, tick in enumerate(ticks))
