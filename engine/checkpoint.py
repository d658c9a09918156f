"""Checkpoints: written atomically, read with weights_only=True (a checkpoint is untrusted input)."""
import os
from pathlib import Path

import torch

import models


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
    """Write to a temporary file, flush to disk, then rename: a crash leaves the old file intact."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        torch.save(obj, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def training_state(model, optimizer, scheduler, scaler, epoch, best_acc, args):
    return {"model": model.state_dict(), "optimizer": optimizer.state_dict(),
            "lr_scheduler": scheduler.state_dict(), "scaler": scaler.state_dict(),
            "epoch": epoch, "best_acc": best_acc, "args": plain(vars(args))}


def restore(path, model, optimizer=None, scheduler=None, scaler=None):
    """Load weights (ours or official, through models.checkpoint_filter_fn) and, when given, the
    optimizer, scheduler and scaler. Returns (next epoch, best accuracy)."""
    state = models.read_checkpoint(path)
    model.load_state_dict(models.checkpoint_filter_fn(state, model))
    if optimizer is None:
        return 0, 0.0
    missing = [k for k in ("optimizer", "lr_scheduler", "scaler", "epoch") if k not in state]
    if missing:
        raise RuntimeError(f"{path} holds weights only (no {', '.join(missing)}): it cannot continue a "
                           "run; evaluate it with --eval, or start a new run from it")
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["lr_scheduler"])
    scaler.load_state_dict(state["scaler"])
    return state["epoch"] + 1, state.get("best_acc")
