"""`mode=predict` through the CLI: from a checkpoint written in-process, and from one a real training run saved."""

from __future__ import annotations

from pathlib import Path

import torch

from tests.conftest import compose, digits_module, read_csv, run_cli_in_process
from trainer.modes.predict import predict
from trainer.schema import validate

FAST = ("trainer.progress=plain",)


def test_predict_a_folder_writes_one_row_per_image(digits_ckpt: Path, digit_pngs, tmp_path: Path) -> None:
    folder, _ = digit_pngs
    result = run_cli_in_process("mode=predict", f"ckpt={digits_ckpt}", f"predict.input={folder}", "predict.topk=3",
                                f"hydra.run.dir={tmp_path / 'predict'}", *FAST)
    assert result.returncode == 0, result.stderr
    rows = read_csv(tmp_path / "predict" / "predictions.csv")
    assert [r["file"] for r in rows] == [f"digit_{n}.png" for n in range(5)]
    assert list(rows[0]) == ["file", "top1_class", "top1_prob", "top2_class", "top2_prob", "top3_class", "top3_prob"]
    for row in rows:
        probs = [float(row[f"top{k}_prob"]) for k in (1, 2, 3)]
        assert probs == sorted(probs, reverse=True) and 0 < sum(probs) <= 1 + 1e-6
    assert "predictions (first 5 of 5)" in result.stdout


def test_a_trained_checkpoint_holds_the_preprocessing_predict_uses(digit_pngs, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    result = run_cli_in_process(f"hydra.run.dir={run_dir}", "trainer.max_epochs=1", "logger=none", *FAST)
    assert result.returncode == 0, result.stderr
    best = run_dir / "checkpoints" / "best.pt"
    module = digits_module()
    module.setup()
    assert torch.load(best, weights_only=True)["inference"] == module.inference_info()
    folder, _ = digit_pngs
    cfg = compose("mode=predict", f"ckpt={best}", f"predict.input={folder}", "trainer.progress=none")
    validate(cfg)
    assert len(read_csv(predict(cfg, tmp_path))) == 5
