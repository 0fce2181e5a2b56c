"""Models refuse inputs they cannot use with one `error:` line and exit 2, before any training."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.conftest import run_cli_in_process

USER_EXIT = 2


def assert_one_error_line(result: subprocess.CompletedProcess, *expected: str) -> None:
    assert result.returncode == USER_EXIT, (result.returncode, result.stderr)
    assert "Traceback" not in result.stderr + result.stdout
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert all(text in lines[0] for text in expected), lines[0]


@pytest.mark.parametrize(("overrides", "expected"), [
    (["model=googlenet"], "googlenet needs data.image_size >= 31 (got 8)"),  # the default 8-px digits
    (["model=resnet18", "data.image_size=3"], "resnet18 with model.stem=imagenet needs data.image_size >= 17 (got 3)"),
])
def test_an_input_smaller_than_the_model_takes_is_refused_before_set_up(tmp_path: Path, overrides: list[str],
                                                                        expected: str) -> None:
    result = run_cli_in_process(f"hydra.run.dir={tmp_path / 'run'}", *overrides)
    assert_one_error_line(result, expected)
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_a_zoo_model_too_deep_for_the_images_is_one_line_at_its_first_step(tmp_path: Path) -> None:
    """timm and torchvision models are not sized up front: the first forward's error becomes the line."""
    result = run_cli_in_process(f"hydra.run.dir={tmp_path / 'run'}", "model=timm", "model.name=test_convnext",
                                "data.image_size=4", "trainer.max_epochs=1", "logger=none")
    assert_one_error_line(result, "model=timm does not fit data.image_size=4", "use larger images")
    assert not (tmp_path / "run").exists()


def test_an_unknown_torchvision_model_suggests_close_names(tmp_path: Path) -> None:
    result = run_cli_in_process(f"hydra.run.dir={tmp_path / 'run'}", "model=torchvision", "model.name=nonexistent_net")
    assert_one_error_line(result, "model.name='nonexistent_net' is not a torchvision model", "did you mean")


def test_uncached_pretrained_weights_name_the_file_and_its_folder(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))  # an empty hub cache
    result = run_cli_in_process(f"hydra.run.dir={tmp_path / 'run'}", "model=torchvision", "model.name=resnet18",
                                "model.weights=DEFAULT")
    assert_one_error_line(result, "resnet18-f37072fd.pth", str(tmp_path / "torch" / "hub" / "checkpoints"))
