"""Checkpoints: written atomically, read with weights_only=True (a checkpoint is untrusted input).

A run keeps checkpoint-last.pth, checkpoint-best.pth and, if asked, checkpoint-EPOCH.pth. The best
and periodic ones are hard links to the file written for the epoch (no copy, and no window in which
a kill leaves the best file holding an older epoch than the run reports; see `repair_best`).
"""
import contextlib
import errno
import fcntl
import io
import itertools
import os
import shutil
import socket
import time
from pathlib import Path

import torch
from timm.scheduler import PlateauLRScheduler

import models
from models import CheckpointError, CheckpointMismatchError, ConfigError, UserError
from .model_config import ModelConfig


def plain(value):
    """argparse values -> types torch.load(weights_only=True) accepts."""
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return str(value)


WRITE_ERRORS = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EACCES, errno.EROFS, errno.EIO)


class _RecordingFile(io.RawIOBase):
    """A file whose write errors are kept: torch.save reports a failed write as a RuntimeError
    ("file write failed"), which no longer says why; this keeps the OSError (ENOSPC, ...)."""

    def __init__(self, f):
        self.f, self.error = f, None

    def writable(self):
        return True

    def write(self, data):
        try:
            return self.f.write(data)
        except OSError as exc:
            self.error = exc
            raise


def save_atomic(obj, path):
    """Write to a temporary file, flush to disk, then rename: a crash leaves the old file intact, and a
    failed write (a full disk) leaves no temporary file behind and is one CheckpointError line."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    recording = None
    try:
        with open(tmp, "wb") as f:
            recording = _RecordingFile(f)
            torch.save(obj, recording)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        tmp.unlink(missing_ok=True)
        cause = exc if isinstance(exc, OSError) else getattr(recording, "error", None)
        if isinstance(cause, OSError) and cause.errno in WRITE_ERRORS:
            raise CheckpointError(f"cannot write {path}: {cause.strerror or cause}; the previous checkpoint is "
                                  "intact (free space or fix permissions, then continue with --resume)") from None
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


def training_state(model, optimizer, scheduler, scaler, epoch, best_acc, best_epoch, config, model_args):
    """`config`: the run's resolved configuration (plain values), stored as "args" as MAE/timm do;
    `model_args`: the model's own settings (ModelConfig.record), from which --eval, --resume and the
    tools rebuild it."""
    return {"model": model.state_dict(), "optimizer": optimizer.state_dict(),
            "lr_scheduler": scheduler.state_dict(), "scaler": scaler.state_dict(),
            "epoch": epoch, "best_acc": best_acc, "best_epoch": best_epoch, "args": config,
            "model_args": model_args}


def save_epoch(state, run_dir, is_best, keep_epoch):
    """checkpoint-last.pth, then the best/periodic links to it."""
    last = run_dir / "checkpoint-last.pth"
    save_atomic(state, last)
    if is_best:
        link_atomic(last, run_dir / "checkpoint-best.pth")
    if keep_epoch:
        link_atomic(last, run_dir / f"checkpoint-{state['epoch'] + 1}.pth")


def restore(path, model, optimizer=None, scheduler=None, scaler=None, settings=None, state=None, dry_run=False):
    """Load weights (ours or official, through models.checkpoint_filter_fn) and, when given, the
    optimizer, scaler and a stateful (plateau) scheduler. Returns the checkpoint. `settings`: the
    run's ModelConfig; weights that do not fit then name the flags the checkpoint was trained with.

    Other timm schedulers are functions of the epoch whose state is only their configuration, so
    the command line's schedule applies (a larger --epochs lengthens it); `schedule_changes` says so.
    `state`: the checkpoint at `path`, when already read. dry_run: only check that the weights fit
    (`model` may live on the meta device).
    """
    state = models.read_checkpoint(path) if state is None else state
    try:
        weights = models.checkpoint_filter_fn(state, model)
        if dry_run:
            return state
        model.load_state_dict(weights)
    except CheckpointMismatchError as exc:
        recorded = ModelConfig.recorded_in(state, path) if settings is not None else {}
        classes = recorded.pop("num_classes", None)
        if settings is not None and classes not in (None, settings.num_classes):  # the data decides, not a flag
            raise CheckpointMismatchError(f"{path} classifies {classes} classes, and this data has "
                                          f"{settings.num_classes}: use it with the dataset it was trained on, "
                                          "or start a new run from it with --finetune") from None
        flags = settings.flags_for(recorded) if settings is not None else []
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


def _peek(path):
    """A checkpoint of ours, memory-mapped (cheap), or None when absent or unreadable."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception:  # absent or unreadable: there is nothing to compare
        return None


def checkpoint_epoch(path):
    """The epoch whose end a checkpoint of ours holds, or None (also for a mid-epoch one)."""
    state = _peek(path)
    return state.get("epoch") if isinstance(state, dict) and "position" not in state else None


def progress_of(path):
    """(epochs done, steps into the next) of a checkpoint of ours, or None."""
    state = _peek(path)
    if not isinstance(state, dict) or not isinstance(state.get("epoch"), int):
        return None
    position = state.get("position") or {}
    return (state["epoch"] + 1, position.get("step", 0))


def mid_epoch_position(state, args, d):
    """The position a mid-epoch checkpoint (saved on a signal) continues from, or None. Continuing
    exactly needs the same batches: the same batch size, accumulation and number of processes."""
    position = state.get("position")
    if not position:
        return None
    now = {"batch_size": args.batch_size, "accum_iter": args.accum_iter, "world_size": d.world_size}
    differ = {k: (position[k], v) for k, v in now.items() if position[k] != v}
    if differ:
        flags = {"batch_size": "--batch-size", "accum_iter": "--accum-iter", "world_size": "processes"}
        raise CheckpointError(f"{args.resume} stopped mid-epoch; continuing it needs the run's "
                              + ", ".join(f"{flags[k]} {saved} (now {v})" for k, (saved, v) in differ.items()))
    return position


def check_finite(model, when, run_dir):
    """A model whose weights or BN statistics are not finite is never saved (nor marked best): the
    checkpoints on disk stay the last good state."""
    bad = [name for name, t in itertools.chain(model.named_parameters(), model.named_buffers())
           if t.is_floating_point() and not torch.isfinite(t).all()]
    if bad:
        last = run_dir / "checkpoint-last.pth"
        progress = progress_of(last)
        kept = (f"{last} ({describe_progress(progress)}) is the last good state" if progress
                else "no checkpoint was written before")
        raise NonFiniteState(f"{len(bad)} tensors of the model are nan/inf {when} (first: {bad[0]}): the run "
                             f"diverged (lower --lr?); nothing was saved, {kept}")


def describe_progress(progress):
    epoch, step = progress
    return f"epoch {epoch} done" if not step else f"epoch {epoch + 1}, step {step}"


class NonFiniteState(UserError):
    """Weights or running statistics that became nan/inf."""


@contextlib.contextmanager
def lock_run_folder(run_dir):
    """Hold run_dir/run.lock (an advisory lock the system releases when the process ends, however it
    ends), so two runs never write into one folder. A folder left holding nothing but the lock (a run
    that failed before its first save) is removed on the way out."""
    path = run_dir / "run.lock"
    f = open(path, "a+")
    _lock(f, path, run_dir)  # raises when another run holds it: then nothing here is ours to tidy
    try:
        yield
    finally:
        f.close()
        if [p.name for p in run_dir.iterdir()] == ["run.lock"]:
            path.unlink(missing_ok=True)
            run_dir.rmdir()


def _lock(f, path, run_dir):
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        f.seek(0)
        owner = f.read().strip() or "another process"
        f.close()
        raise ConfigError(f"{run_dir} is in use by {owner}; wait for that run to end, or choose another "
                          "output folder") from None
    except OSError as exc:  # a filesystem without locks (some network mounts): say so and go on
        print(f"note: cannot lock {path} ({exc.strerror}); make sure no other run writes into {run_dir}",
              flush=True)
        return
    f.seek(0)
    f.truncate()
    f.write(f"pid {os.getpid()} on {socket.gethostname()} since {time.strftime('%Y-%m-%d %H:%M:%S')}\n")
    f.flush()


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
