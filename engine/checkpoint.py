"""Checkpoints: written atomically, read with weights_only=True (a checkpoint is untrusted input).

A run keeps checkpoint-last.pth, checkpoint-best.pth and, if asked, checkpoint-EPOCH.pth. The best
and periodic ones are hard links to the file written for the epoch (no copy, and no window in which
a kill leaves the best file holding an older epoch than the run reports; see `repair_best`).
"""
import errno
import os
import shutil
from pathlib import Path

import torch
from timm.scheduler import PlateauLRScheduler

import models
from models import CheckpointError, CheckpointMismatchError
from models.config import ModelConfig


def plain(value):
    """argparse values -> types torch.load(weights_only=True) accepts."""
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return str(value)


def save_atomic(obj, path):
    """Write to a temporary file, flush to disk, then rename: a crash leaves the old file intact, and a
    failed write (a full disk) leaves no temporary file behind."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    try:
        with open(tmp, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        tmp.unlink(missing_ok=True)
        if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EACCES, errno.EROFS):
            raise CheckpointError(f"cannot write {path}: {exc.strerror}; the previous checkpoint is intact "
                                  "(free space or fix permissions, then continue with --resume)") from None
        raise


def link_atomic(src, dst):
    """dst becomes the same file as src (a hard link; a copy where the filesystem has none)."""
    dst = Path(dst)
    tmp = dst.with_name(dst.name + ".tmp")
    tmp.unlink(missing_ok=True)
    try:
        try:
            os.link(src, tmp)
        except OSError:
            shutil.copyfile(src, tmp)
        os.replace(tmp, dst)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def training_state(model, optimizer, scheduler, scaler, epoch, best_acc, best_epoch, config):
    """`config`: the run's resolved configuration (plain values), stored as "args" as MAE/timm do."""
    return {"model": model.state_dict(), "optimizer": optimizer.state_dict(),
            "lr_scheduler": scheduler.state_dict(), "scaler": scaler.state_dict(),
            "epoch": epoch, "best_acc": best_acc, "best_epoch": best_epoch, "args": config}


def save_epoch(state, run_dir, is_best, keep_epoch):
    """checkpoint-last.pth, then the best/periodic links to it."""
    last = run_dir / "checkpoint-last.pth"
    save_atomic(state, last)
    if is_best:
        link_atomic(last, run_dir / "checkpoint-best.pth")
    if keep_epoch:
        link_atomic(last, run_dir / f"checkpoint-{state['epoch'] + 1}.pth")


def restore(path, model, optimizer=None, scheduler=None, scaler=None, settings=None):
    """Load weights (ours or official, through models.checkpoint_filter_fn) and, when given, the
    optimizer, scaler and a stateful (plateau) scheduler. Returns the checkpoint. `settings`: the
    run's ModelConfig; weights that do not fit then name the flags the checkpoint was trained with.

    Other timm schedulers are functions of the epoch whose state is only their configuration, so
    the command line's schedule applies (a larger --epochs lengthens it); `schedule_changes` says so.
    """
    state = models.read_checkpoint(path)
    try:
        model.load_state_dict(models.checkpoint_filter_fn(state, model))
    except CheckpointMismatchError as exc:
        flags = settings.flags_for(ModelConfig.recorded_in(state, path)) if settings is not None else []
        if not flags:
            raise
        raise CheckpointMismatchError(f"{exc}\n  {path} was trained with {' '.join(flags)}: add that to the "
                                      "command line") from None
    if optimizer is None:
        return state
    missing = [k for k in ("optimizer", "lr_scheduler", "scaler", "epoch") if k not in state]
    if missing:
        raise CheckpointError(f"{path} holds weights only (no {', '.join(missing)}): it cannot continue a "
                              "run; evaluate it with --eval, or start a new run from it with --finetune")
    optimizer.load_state_dict(state["optimizer"])
    scaler.load_state_dict(state["scaler"])
    if isinstance(scheduler, PlateauLRScheduler):
        scheduler.load_state_dict(state["lr_scheduler"])
    return state


def schedule_changes(saved, scheduler):
    """'t_initial 2 -> 4, ...': the schedule settings the command line changed since `saved`."""
    if isinstance(scheduler, PlateauLRScheduler):
        return ""
    now = scheduler.state_dict()
    keys = [k for k in now if k not in ("base_values", "metric") and k in saved and saved[k] != now[k]]
    return ", ".join(f"{k} {saved[k]} -> {now[k]}" for k in keys)


def checkpoint_epoch(path):
    """The epoch a checkpoint of ours records (memory-mapped, so cheap), or None."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=True).get("epoch")
    except Exception:  # absent or unreadable: there is nothing to compare
        return None


def repair_best(resume, state, run_dir):
    """Make run_dir/checkpoint-best.pth hold the epoch `state` reports as best: after a kill between
    writing checkpoint-last.pth and linking it as the best, or when a run continues in a new folder."""
    best_epoch = state.get("best_epoch")
    target = run_dir / "checkpoint-best.pth"
    if best_epoch is None or checkpoint_epoch(target) == best_epoch:
        return
    resume = Path(resume)
    candidates = [resume] + [resume.parent / n for n in ("checkpoint-best.pth", f"checkpoint-{best_epoch + 1}.pth")]
    for source in candidates:
        if checkpoint_epoch(source) == best_epoch:
            link_atomic(source, target)
            print(f"{target} now holds epoch {best_epoch + 1}, the best so far", flush=True)
            return
    print(f"note: no checkpoint beside {resume} holds epoch {best_epoch + 1}, the best so far; "
          f"{target} will hold the best epoch from now on", flush=True)
