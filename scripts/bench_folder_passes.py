"""The image-folder section's timings inside one process (scripts/bench_imagefolder.py runs them): each side's
train loader alone, what a loader worker spends per image, and the trainer's validation pass against a hand-written
`torch.inference_mode()` loop over the same val loader. `hand_spec` gives scripts/bench_imagefolder_hand.py the
trainer's settings for the same job.
"""

from __future__ import annotations

import tempfile
from functools import partial
from itertools import islice
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench_measure import Say, compose, free_memory, timed

if TYPE_CHECKING:
    from collections.abc import Iterable

    from bench_imagefolder import FolderPlan
    from omegaconf import DictConfig

TRAINER, HAND = "trainer", "hand loop"


def hand_spec(cfg: DictConfig, decoder: str, checkpoint_dir: Path) -> dict[str, Any]:
    """scripts/bench_imagefolder_hand.py's Spec for the job `cfg` runs: every setting read from that config."""
    from omegaconf import OmegaConf

    from trainer.data.capabilities import eval_batch
    from trainer.schema.model import RUN_ONLY_KEYS

    data, aug, optim = cfg.data, cfg.augment, cfg.optim
    model = OmegaConf.to_container(cfg.model, resolve=True)
    target = model.pop("_target_")
    return {"train_dir": data.train_dir, "val_dir": data.val_dir, "decoder": decoder,
            "batch_size": int(data.batch_size),
            "eval_batch_size": eval_batch(int(data.batch_size), data.eval_batch_size),
            "num_workers": int(data.num_workers), "resize": round(data.image_size / data.crop_fraction),
            "image_size": int(data.image_size), "padding": data.image_size // 8 if aug.padding is None else aug.padding,
            "flip": 0.5 if aug.flip else 0.0, "mean": list(data.mean), "std": list(data.std),
            "model_target": target, "model_kwargs": {k: v for k, v in model.items() if k not in RUN_ONLY_KEYS},
            "lr": float(optim.lr), "betas": list(optim.betas), "eps": float(optim.eps),
            "weight_decay": float(optim.weight_decay), "epochs": int(cfg.trainer.max_epochs), "seed": int(cfg.seed),
            "checkpoint_dir": str(checkpoint_dir)}


# ---- the loader alone: epochs of each train loader, no model


def loader_epochs(jobs: dict[str, list[str]], plan: FolderPlan, say: Say) -> dict[str, dict[str, list[float]]]:
    """samples/s of whole epochs of the trainer's train loader (built as train.py builds it) and of the hand
    loop's, for each decoder; the loaders take turns, in reverse order every other round."""
    from bench_imagefolder_hand import Spec, build_loaders

    from trainer.training.setup import build_run

    loaders: dict[tuple[str, str], Any] = {}
    for decoder, overrides in jobs.items():
        run = build_run(compose(*overrides))
        loaders[decoder, TRAINER] = (run.datamodule, run.train_loader)
        spec = Spec(**hand_spec(run.cfg, decoder, Path(tempfile.gettempdir())))
        loaders[decoder, HAND] = (None, build_loaders(spec)[0])
        del run
    for key, (datamodule, loader) in loaders.items():  # starts the trainer's persistent workers
        say(f"imagefolder: loader warm-up, decoder={key[0]}, {key[1]}")
        served(datamodule, loader, 0, plan.loader_warmup)
    rates: dict[str, dict[str, list[float]]] = {d: {TRAINER: [], HAND: []} for d in jobs}
    for r in range(plan.loader_rounds):
        for key in (list(loaders) if r % 2 == 0 else list(reversed(loaders))):
            samples, seconds = timed(partial(served, *loaders[key], r + 1, None))
            rates[key[0]][key[1]].append(samples / seconds)
        say(f"imagefolder: loader round {r + 1}/{plan.loader_rounds}: " +
            ", ".join(f"{d} {s} {v[-1]:,.0f}/s" for d, sides in rates.items() for s, v in sides.items()))
    loaders.clear()  # the workers go before the next section builds anything
    free_memory()
    return rates


def per_image_costs(overrides: list[str], decoder: str, images: int) -> dict[str, Any]:
    """Microseconds per image, on the first `images` training files after a few untimed ones, on one torch
    thread as in a loader worker: the trainer's train set (an ImageFolder, data.val_dir being given) in its
    loader (data.decoder's decode) and its train transform; the hand loop's v2.Compose on the same decoded
    images, op by op."""
    import time

    import torch
    from bench_imagefolder_hand import Spec, build_loaders

    from trainer.build import build_data

    cfg = compose(*overrides)
    ours = build_data(cfg).train_set
    hand = build_loaders(Spec(**hand_spec(cfg, decoder, Path(tempfile.gettempdir()))))[0].dataset.transform
    paths = [path for path, _ in ours.samples[:images]]
    threads, clock = torch.get_num_threads(), time.perf_counter
    torch.set_num_threads(1)
    try:
        for path in paths[:5]:  # the decoders' and ops' first calls set themselves up
            ours.transform(ours.loader(path))
            hand(ours.loader(path))
        start = clock()
        decoded = [ours.loader(path) for path in paths]
        decode_s, start = clock() - start, clock()
        for image in decoded:
            ours.transform(image)
        transform_s, ops_s = clock() - start, [0.0] * len(hand.transforms)
        for image in decoded:
            for i, op in enumerate(hand.transforms):
                start = clock()
                image = op(image)
                ops_s[i] += clock() - start
    finally:
        torch.set_num_threads(threads)
    ops_us = {f"{i}:{type(op).__name__}": ops_s[i] / len(paths) * 1e6 for i, op in enumerate(hand.transforms)}
    return {"images": len(paths), "decode_us": decode_s / len(paths) * 1e6,
            "transform_us": transform_s / len(paths) * 1e6, "transform": type(ours.transform).__name__,
            "hand_transform_us": sum(ops_us.values()), "hand_ops_us": ops_us}


def served(datamodule: Any, loader: Iterable, epoch: int, batches: int | None) -> int:
    """Samples in the first `batches` batches (None: all) of `epoch`, made and thrown away."""
    if datamodule is not None:
        datamodule.set_train_epoch(epoch)
    return sum(len(labels) for _, labels in islice(loader, batches))


# ---- validation: the trainer's pass against a hand inference_mode loop over the same loader


def validation_passes(jobs: dict[str, list[str]], rounds: int, say: Say) -> dict[str, dict[str, list[float]]]:
    """Seconds of whole validation passes over the trainer's val loader (persistent workers, data.eval_batch_size),
    by decoder and side: the trainer's own pass and the hand loop's; see `timed_validations`."""
    from trainer.training.setup import build_run

    seconds = {}
    for decoder, overrides in jobs.items():
        seconds[decoder] = timed_validations(build_run(compose(*overrides)), rounds)
        say(f"imagefolder: validation passes, decoder={decoder}: " +
            ", ".join(f"{side} {min(times):.2f}-{max(times):.2f} s" for side, times in seconds[decoder].items()))
        free_memory()
    return seconds


def timed_validations(run: Any, rounds: int) -> dict[str, list[float]]:
    """The trainer's pass (`validate_epoch`, collecting the report's predictions as a run does) and the hand
    loop's `validate` (inference_mode, a host read per batch) over `run.val_loader`, taking turns, the order
    reversed every other round, after one untimed pass of each (which starts the workers)."""
    from bench_imagefolder_hand import validate

    from trainer.reporting.console import RunConsole
    from trainer.training.scoring import collected_split, validate_epoch

    passes = {TRAINER: partial(validate_epoch, run, RunConsole("none"), collect=collected_split(run) == "val"),
              HAND: partial(validate, run.model, run.val_loader)}
    for work in passes.values():
        work()
    seconds: dict[str, list[float]] = {TRAINER: [], HAND: []}
    for r in range(rounds):
        for side in (list(passes) if r % 2 == 0 else list(reversed(passes))):
            seconds[side].append(timed(passes[side])[1])
    return seconds
