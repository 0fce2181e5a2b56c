"""What a resume must keep of a run's config: the model, and everything that decides the run's batches and its
lr schedule; which differences are refused, and the one-line error that says so (README, Reliability)."""

from __future__ import annotations

from pathlib import Path

from trainer.errors import CheckpointError
from trainer.schema.model import RUN_ONLY_KEYS, WEIGHT_SOURCE_KEYS
from trainer.schema.optim import OptimConfig
from trainer.schema.run import monitor_mode
from trainer.schema.scheduler import with_warmup_resolved

# Modules that have moved: a checkpoint made before names its `_target_`s by the old paths.
MOVED_MODULES = {"trainer.optim.": "trainer.training.optim.", "trainer.augment.": "trainer.data.augment.",
                 "trainer.regularization.": "trainer.training.regularization.",
                 "trainer.loggers.": "trainer.reporting.loggers."}


def current_target(target: object) -> object:
    """A `_target_` by its current module path (unchanged unless its module has moved)."""
    for old, new in MOVED_MODULES.items():
        if isinstance(target, str) and target.startswith(old):
            return new + target[len(old):]
    return target


def config_mismatch(saved: dict, wanted: dict, prefix: str = "") -> list[str]:
    """The dotted keys (`prefix` + key) whose values differ between two configs, sorted; nested sections are
    compared key by key, and a `_target_` by its current module path."""
    differing: list[str] = []
    for key in set(saved) | set(wanted):
        old, new, name = saved.get(key), wanted.get(key), f"{prefix}{key}"
        if key == "_target_":
            old = current_target(old)
        if isinstance(old, dict) and isinstance(new, dict):
            differing += config_mismatch(old, new, f"{name}.")
        elif old != new:
            differing.append(name)
    return sorted(differing)


def value_at(cfg: dict, key: str) -> object:
    """`cfg`'s value at a dotted key (None where it has none)."""
    if key in cfg or "." not in key:
        return cfg.get(key)
    head, rest = key.split(".", 1)
    return value_at(cfg[head], rest) if isinstance(cfg.get(head), dict) else None


def differences(saved: dict, wanted: dict, keys: list[str]) -> str:
    return ", ".join(f"{k}: checkpoint {value_at(saved, k)!r} vs requested {value_at(wanted, k)!r}" for k in keys)


def check_model_config(saved: dict, wanted: dict, path: str | Path) -> None:
    differing = config_mismatch(saved, wanted)
    if differing:
        details = differences({"model": saved}, {"model": wanted}, [f"model.{k}" for k in differing])
        raise CheckpointError(f"checkpoint {path} was made for another model ({details})")


def architecture(cfg: dict) -> dict:
    """A run's model config less its RUN_ONLY_KEYS and WEIGHT_SOURCE_KEYS: a resume's weights are its checkpoint's,
    whatever model.init_from or a timm model.pretrained_file say now; model.freeze is `check_freezing`'s."""
    ignored = (*RUN_ONLY_KEYS, *WEIGHT_SOURCE_KEYS)
    return {key: value for key, value in (cfg.get("model") or {}).items() if key not in ignored}


def check_freezing(saved: dict, wanted: dict, path: str | Path) -> None:
    """Refuse a resume that would freeze other parameters, or lift the freeze at another epoch, than its run did."""
    settings = [("[" + ", ".join(value_at(cfg, "model.freeze") or []) + "]", value_at(cfg, "trainer.unfreeze_at_epoch"))
                for cfg in (saved, wanted)]
    if settings[0] != settings[1]:
        (old, old_at), (new, new_at) = settings
        raise CheckpointError(f"checkpoint {path} was made with model.freeze={old} and trainer.unfreeze_at_epoch="
                              f"{old_at} (requested {new} and {new_at}); resume with those, or start a new run "
                              f"from its weights (model.init_from={path}) to train other parameters")


# What a resume keeps (README, Reliability): the keys that decide the epochs' batches and the lr schedule. `optim`
# too: the optimizer's settings, its lr among them, come back from the checkpoint, so a changed one would be ignored.
RESUME_KEYS = ("seed", "data", "optim", "scheduler", "trainer.accumulate_grad_batches", "trainer.limit_train_batches",
               "trainer.overfit_batches", "trainer.max_epochs")
# data keys that change only how fast the same batches come (in_memory's and decoder=cuda's augmentation draws
# aside), or where the same files lie
SPEED_ONLY_KEYS = ("data.num_workers", "data.in_memory", "data.root", "data.download", "data.decoder",
                   "data.eval_batch_size", "data.prefetch_factor", "data.pin_memory")


def resume_view(cfg: dict, world_size: int) -> dict:
    """What of a run's config (resolved, as checkpoints store it) and process count a resume must keep; a null
    scheduler.warmup_epochs as the epochs it means."""
    view = {key: value_at(cfg, key) for key in RESUME_KEYS} | {"world_size": world_size}
    if isinstance(view["scheduler"], dict):
        view["scheduler"] = with_warmup_resolved(view["scheduler"])
    return view


def follows_length(cfg: dict) -> bool:
    """Whether the lr schedule's shape depends on trainer.max_epochs: a cosine T_max equal to it (its default
    follows it), or a per-step schedule whose total_steps is left to the run's length."""
    scheduler, max_epochs = cfg.get("scheduler") or {}, value_at(cfg, "trainer.max_epochs")
    return scheduler.get("T_max") == max_epochs or ("total_steps" in scheduler and scheduler["total_steps"] is None)


def length_keys(saved: dict, wanted: dict) -> set[str]:
    """The keys that differ only because the schedule follows a changed trainer.max_epochs."""
    if not (follows_length(saved) or follows_length(wanted)):
        return {"trainer.max_epochs"}
    both_follow = all((c.get("scheduler") or {}).get("T_max") == value_at(c, "trainer.max_epochs") for c in (saved,
                                                                                                         wanted))
    return {"trainer.max_epochs"} | ({"scheduler.T_max"} if both_follow else set())


def extends_schedule(checkpoint: dict, wanted: dict) -> bool:
    """Whether this resume rebuilds the schedule (trainer.extend_schedule): from an epoch boundary, with a raised
    trainer.max_epochs, for a schedule whose shape depends on it."""
    saved, state = checkpoint["config"], checkpoint.get("state") or {}
    raised = (value_at(wanted, "trainer.max_epochs") or 0) > (value_at(saved, "trainer.max_epochs") or 0)
    return bool(value_at(wanted, "trainer.extend_schedule")) and not state.get("batch_in_epoch") and raised and \
        follows_length(saved)


def check_resume_config(checkpoint: dict, wanted: dict, path: str | Path, world_size: int) -> None:
    """Refuse a resume whose config (resolved) would change the model, or the run's batches or lr schedule."""
    saved = with_legacy_optimisation(with_legacy_data(checkpoint["config"], wanted, path), wanted)
    state = checkpoint.get("state") or {}
    check_selection(checkpoint, wanted, path)
    check_model_config(architecture(saved), architecture(wanted), path)
    check_freezing(saved, wanted, path)
    old, new = resume_view(saved, checkpoint.get("world_size", 1)), resume_view(wanted, world_size)
    length = length_keys(saved, wanted)
    differing = [k for k in config_mismatch(old, new) if k not in SPEED_ONLY_KEYS]
    if not (follows_length(saved) or follows_length(wanted)) or extends_schedule(checkpoint, wanted):
        differing = [k for k in differing if k not in length]  # the same schedule, run longer or shorter
    if not differing:
        return
    saved_epochs, epochs = old["trainer.max_epochs"], new["trainer.max_epochs"]
    boundary, raised = not state.get("batch_in_epoch"), (epochs or 0) > (saved_epochs or 0)
    if set(differing) <= length and boundary and raised and state.get("epoch", checkpoint["epoch"]) >= saved_epochs:
        groups = (checkpoint.get("optimizer") or {}).get("param_groups") or [{}]
        lr = groups[0].get("lr", float("nan"))
        raise CheckpointError(
            f"checkpoint {path} finished its {saved_epochs}-epoch lr schedule, at lr {lr:g}: epochs "
            f"{saved_epochs + 1}..{epochs} would start at lr {lr:g} on that ended schedule; set "
            "trainer.extend_schedule=true to run a fresh schedule over them from optim.lr, or resume with "
            f"trainer.max_epochs={saved_epochs}")
    hint = ""
    if "trainer.max_epochs" in differing and raised:
        hint = ("; trainer.extend_schedule=true rebuilds the schedule for a raised trainer.max_epochs" if boundary
                else "; trainer.extend_schedule needs an epoch-boundary checkpoint: finish this epoch first")
    raise CheckpointError(f"checkpoint {path} was made with other settings for the run's batches or lr schedule "
                          f"({differences(old, new, differing)}); resume with the checkpoint's values or start a "
                          f"new run{hint}")


def check_selection(checkpoint: dict, wanted: dict, path: str | Path) -> None:
    """Refuse a checkpoint holding EMA weights as its model (a best.pt selected on val_ema/*), and one whose
    run selected on another metric: its best and top-k epochs were ranked by that one."""
    selected = checkpoint.get("selected") or {}
    if checkpoint.get("weights") == "ema":
        raise CheckpointError(f"checkpoint {path} holds the EMA weights as its model (selected on "
                              f"{selected.get('monitor')}); resume from the run's checkpoints/last.pt")
    saved_cfg = checkpoint["config"]
    saved = value_at(saved_cfg, "trainer.monitor") or "val/acc"  # checkpoints from before monitors selected on it
    saved_mode = monitor_mode(saved, value_at(saved_cfg, "trainer.monitor_mode"))
    name = value_at(wanted, "trainer.monitor") or "val/acc"
    if (saved, saved_mode) != (name, monitor_mode(name, value_at(wanted, "trainer.monitor_mode"))):
        raise CheckpointError(f"checkpoint {path} was made selecting on trainer.monitor={saved} ({saved_mode}); "
                              "resume with those settings, or start a new run to select on another metric")
    top_k, wanted_k = value_at(saved_cfg, "trainer.save_top_k") or 1, value_at(wanted, "trainer.save_top_k")
    if wanted_k is not None and top_k != wanted_k:
        raise CheckpointError(f"checkpoint {path} was made keeping trainer.save_top_k={top_k} best checkpoints; "
                              f"resume with trainer.save_top_k={top_k} (another value would drop or misrank them)")


# The data keys that came with validation apart from test, and what a config saved before them meant: stored sets
# validated on their test split, with a plain shuffle. digits' and an imagefolder train_dir's seeded split became
# class-stratified at the same time, so their old checkpoints held out other images.
LEGACY_DATA = {"sampler": "shuffle", "val_fraction": 0.0, "split_seed": 0, "test_size": 0, "test_dir": None,
               "folds": None, "fold": 0}
RESPLIT = {"trainer.data.digits.DigitsDataModule": "digits", "trainer.data.imagefolder.ImageFolderDataModule":
           "imagefolder"}


def with_legacy_data(saved: dict, wanted: dict, path: str | Path) -> dict:
    """`saved` with the data keys a checkpoint from before `data.sampler` lacks, as they behaved then; a
    CheckpointError for a data set whose split has changed since (its train and val images would differ)."""
    data = saved.get("data") or {}
    if not isinstance(wanted.get("data"), dict):
        return saved
    option = RESPLIT.get(data.get("_target_"))
    if "sampler" not in data and option and not data.get("val_dir"):
        raise CheckpointError(f"checkpoint {path} was made before data={option}'s val split was class-stratified: "
                              "a resume would train and validate on other images; start a new run")
    filled = {key: value for key, value in LEGACY_DATA.items() if key in wanted["data"] and key not in data}
    return {**saved, "data": {**data, **filled}}


# The optim and scheduler keys that came with per-group lrs, lr scaling and warm-ups, and what a config saved before
# them meant. scheduler=warmup_cosine then said its warm-up as `warmup` + `warmup_unit` (and its schedule's saved
# state carries that warm-up, so it resumes as it would have run).
LEGACY_OPTIM = {key: getattr(OptimConfig, key)  # the schema's defaults: what runs before these keys trained with
                for key in ("layer_decay", "head_lr_mult", "scale_lr_with_batch", "base_batch_size")}
LEGACY_SCHEDULER = {"warmup_epochs": 0, "warmup_steps": 0}


def with_legacy_optimisation(saved: dict, wanted: dict) -> dict:
    """`saved` with the optim and scheduler keys a checkpoint from before them lacks, as they behaved then."""
    optim, scheduler = dict(saved.get("optim") or {}), dict(saved.get("scheduler") or {})
    if "warmup_unit" in scheduler and scheduler.get("steps_per_epoch") is None:
        amount, unit = scheduler.pop("warmup"), scheduler.pop("warmup_unit")
        scheduler.pop("steps_per_epoch", None)
        scheduler |= {"warmup_epochs": amount if unit == "epochs" else 0, "warmup_steps": amount if unit == "steps"
                      else 0}
    for section, legacy, group in ((optim, LEGACY_OPTIM, "optim"), (scheduler, LEGACY_SCHEDULER, "scheduler")):
        section |= {key: value for key, value in legacy.items() if key in (wanted.get(group) or {})
                    and key not in section}
    return {**saved, "optim": optim, "scheduler": scheduler}
