"""The hand-written reference of the benchmark's image-folder section (scripts/bench_imagefolder.py): one epoch of
the minimal PyTorch loop over torchvision's ImageFolder + DataLoader, then one validation pass and the two
checkpoints the trainer writes (last.pt and best.pt), as a user would write it without the trainer.

    .venv/bin/python scripts/bench_imagefolder_hand.py SPEC.json RESULT.json

SPEC.json holds the settings the benchmark takes from the trainer's composed config (folders, decoder, batch sizes,
workers, transforms, model class and arguments, AdamW's hyperparameters, seed, where the checkpoints go);
RESULT.json gets the in-process wall seconds (from after the imports), their phases and the scores. The section
imports `build_loaders` too, to time the loader alone beside the trainer's.
"""

from __future__ import annotations

import importlib
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn
from torch.utils.data import DataLoader
from torchvision.datasets import ImageFolder
from torchvision.io import ImageReadMode, decode_image
from torchvision.transforms import v2


@dataclass(frozen=True)
class Spec:
    """What the hand loop runs: the trainer's settings for the same job, as plain values."""

    train_dir: str
    val_dir: str
    decoder: str  # pil | torchvision
    batch_size: int
    eval_batch_size: int
    num_workers: int
    resize: int  # the short side, before a centre crop of image_size (the trainer's eval resize)
    image_size: int
    padding: int  # augment=basic's random crop padding
    flip: float  # augment=basic's horizontal flip probability
    mean: list[float]
    std: list[float]
    model_target: str  # the model's class, e.g. trainer.models.resnet.ResNet
    model_kwargs: dict[str, Any]
    lr: float
    betas: list[float]
    eps: float
    weight_decay: float
    epochs: int
    seed: int
    checkpoint_dir: str

    @classmethod
    def read(cls, path: str | Path) -> Spec:
        return cls(**json.loads(Path(path).read_text()))


def pil_loader(path: str) -> Image.Image:
    """ImageFolder's own default loader: PIL, converted to RGB."""
    with open(path, "rb") as handle:
        return Image.open(handle).convert("RGB")


def torchvision_loader(path: str) -> torch.Tensor:
    """libjpeg-turbo through torchvision.io: a uint8 3 x H x W tensor."""
    return decode_image(path, mode=ImageReadMode.RGB)


LOADERS = {"pil": pil_loader, "torchvision": torchvision_loader}


def transforms(spec: Spec) -> tuple[v2.Compose, v2.Compose]:
    """(train, eval): resize + centre crop, augment=basic's crop and flip for training, to float, normalise."""
    fit = [v2.ToImage(), v2.Resize(spec.resize, antialias=True), v2.CenterCrop(spec.image_size)]
    tail = [v2.ToDtype(torch.float32, scale=True), v2.Normalize(spec.mean, spec.std)]
    augment = [v2.RandomCrop(spec.image_size, padding=spec.padding)] if spec.padding else []
    augment += [v2.RandomHorizontalFlip(spec.flip)] if spec.flip else []
    return v2.Compose([*fit, *augment, *tail]), v2.Compose([*fit, *tail])


def build_loaders(spec: Spec) -> tuple[DataLoader, DataLoader]:
    """The train loader (shuffled, seeded) and the val loader (in order) over two ImageFolders."""
    train_tf, eval_tf = transforms(spec)
    loader = LOADERS[spec.decoder]
    train_set = ImageFolder(spec.train_dir, transform=train_tf, loader=loader)
    val_set = ImageFolder(spec.val_dir, transform=eval_tf, loader=loader)
    generator = torch.Generator().manual_seed(spec.seed)
    train = DataLoader(train_set, batch_size=spec.batch_size, shuffle=True, num_workers=spec.num_workers,
                       generator=generator)
    val = DataLoader(val_set, batch_size=spec.eval_batch_size, num_workers=spec.num_workers)
    return train, val


def build_model(spec: Spec) -> nn.Module:
    """The same class with the same arguments as the trainer's `model=` option builds."""
    module, name = spec.model_target.rsplit(".", 1)
    return getattr(importlib.import_module(module), name)(**spec.model_kwargs)


def train_epoch(model: nn.Module, loader: DataLoader, optimizer: torch.optim.Optimizer) -> tuple[int, float]:
    """One epoch of forward, cross-entropy, zero_grad, backward, step; (samples, mean loss)."""
    model.train()
    samples, loss_sum = 0, 0.0
    for x, y in loader:
        loss = F.cross_entropy(model(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        samples += len(y)
        loss_sum += loss.item() * len(y)
    return samples, loss_sum / max(samples, 1)


def validate(model: nn.Module, loader: DataLoader) -> tuple[float, float]:
    """(accuracy, mean loss) over the whole loader, under torch.inference_mode()."""
    model.eval()
    correct, loss_sum, samples = 0, 0.0, 0
    with torch.inference_mode():
        for x, y in loader:
            logits = model(x)
            loss_sum += F.cross_entropy(logits, y, reduction="sum").item()
            correct += (logits.argmax(1) == y).sum().item()
            samples += len(y)
    return correct / max(samples, 1), loss_sum / max(samples, 1)


def run(spec: Spec) -> dict[str, Any]:
    """The whole job, timed by phase as the trainer's summary.json times its own (`other`: the rest)."""
    start = time.perf_counter()
    phases: dict[str, float] = {"setup": 0.0, "train": 0.0, "validate": 0.0, "checkpoint": 0.0}

    def lap(name: str, since: float) -> float:
        now = time.perf_counter()
        phases[name] += now - since
        return now

    torch.manual_seed(spec.seed)
    train_loader, val_loader = build_loaders(spec)
    model = build_model(spec)
    optimizer = torch.optim.AdamW(model.parameters(), lr=spec.lr, betas=tuple(spec.betas), eps=spec.eps,
                                  weight_decay=spec.weight_decay, fused=True)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=spec.epochs)
    folder = Path(spec.checkpoint_dir)
    folder.mkdir(parents=True, exist_ok=True)
    now = lap("setup", start)
    samples, best_acc, scores = 0, -1.0, {}
    for epoch in range(spec.epochs):
        epoch_samples, train_loss = train_epoch(model, train_loader, optimizer)
        samples, now = samples + epoch_samples, lap("train", now)
        val_acc, val_loss = validate(model, val_loader)
        now = lap("validate", now)
        scheduler.step()
        payload = {"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                   "scheduler": scheduler.state_dict(), "epoch": epoch + 1}
        if val_acc > best_acc:
            best_acc = val_acc
            torch.save(payload, folder / "best.pt")
        torch.save(payload, folder / "last.pt")
        now = lap("checkpoint", now)
        scores = {"train_loss": train_loss, "val_acc": val_acc, "val_loss": val_loss}
    wall = time.perf_counter() - start
    phases["other"] = wall - sum(phases.values())
    return {"wall_s": wall, "phase_s": phases, "train_samples": samples,
            "train_samples_per_s": samples / phases["train"] if phases["train"] else None, **scores}


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(__doc__.strip().splitlines()[0], "\nusage: bench_imagefolder_hand.py SPEC.json RESULT.json",
              file=sys.stderr)
        return 2
    result = run(Spec.read(argv[0]))
    Path(argv[1]).write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
