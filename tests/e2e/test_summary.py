"""`mode=summary` through the CLI: ResNet-50's totals at ImageNet size, and no run files beyond the summary."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import read_json, run_cli_in_process


def test_summary_command_reports_resnet50_at_imagenet_size(tmp_path: Path) -> None:
    result = run_cli_in_process("mode=summary", "model=resnet50", "data=fake", "data.num_classes=1000",
                                "data.image_size=224", f"hydra.run.dir={tmp_path}", "trainer.progress=plain")
    assert result.returncode == 0, result.stderr
    assert "25,557,032" in result.stdout
    summary = read_json(tmp_path / "model_summary.json")
    assert summary["total_params"] == 25_557_032
    assert summary["macs"] == pytest.approx(4.09e9, rel=0.01)  # the well-known ~4.1 GMACs
    assert summary["receptive_field"] == 427
    assert not (tmp_path / "checkpoints").exists()
