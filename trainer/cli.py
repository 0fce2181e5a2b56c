"""The `python -m trainer` entrypoint: compose the Hydra config, validate it, run the chosen mode.

Nothing heavy is imported here, so `--help` and `--cfg job` answer without loading torch.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig

from trainer.errors import TrainerError
from trainer.schema import register_configs, validate

log = logging.getLogger("trainer")

CONFIG_DIR = str(Path(__file__).resolve().parent.parent / "configs")

register_configs()


def one_line(err: TrainerError) -> str:
    """The error's own message, also when a DataLoader worker wrapped it in its traceback."""
    text = str(err).strip()
    if "Original Traceback" in text:
        text = text.splitlines()[-1].split(": ", 1)[-1]
    return text.splitlines()[0] if text else type(err).__name__


def run(cfg: DictConfig, run_dir: Path) -> float | None:
    """Validate `cfg`, then dispatch on `cfg.mode`; returns the objective (val accuracy) for sweepers."""
    validate(cfg)
    if cfg.mode == "eval":
        from trainer.evaluate import evaluate

        return evaluate(cfg, run_dir)
    if cfg.mode == "summary":
        from trainer.summary import summarize

        summarize(cfg, run_dir)
        return None
    if cfg.mode == "predict":
        from trainer.predict import predict

        predict(cfg, run_dir)
        return None
    if cfg.mode == "export":
        from trainer.export import export

        export(cfg, run_dir)
        return None
    from trainer.train import train

    return train(cfg, run_dir)


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="train")
def _hydra_task(cfg: DictConfig) -> float | None:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    hydra_cfg = HydraConfig.get()
    try:
        return run(cfg, Path(hydra_cfg.runtime.output_dir))
    except TrainerError as err:
        log.error("%s", err)
        if os.environ.get("HYDRA_FULL_ERROR") == "1" or hydra_cfg.mode == RunMode.MULTIRUN:
            raise  # a sweep records the failed job and carries on with the others
        print(f"error: {one_line(err)}", file=sys.stderr)
        sys.exit(err.exit_code)


def main() -> None:
    _hydra_task()
