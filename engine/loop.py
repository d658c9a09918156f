"""One training epoch and one evaluation, for every dataset."""
import contextlib
import math

import torch
import torch.nn.functional as F

from models import UserError

from .distributed import all_reduce_sum
from .preemption import set_rng_state
from .runlog import Meter, Progress


class NonFiniteLoss(UserError):
    """The loss became nan/inf (too high a learning rate, usually)."""


class OutOfMemory(UserError):
    """A step that does not fit the device's memory."""


def updates_per_epoch(loader, accum_iter):
    return math.ceil(len(loader) / accum_iter)


def autocast(device, amp_dtype):
    """Mixed precision on CUDA only; `amp_dtype` None means float32."""
    if amp_dtype is None or device.type != "cuda":
        return contextlib.nullcontext()
    return torch.autocast("cuda", dtype=amp_dtype)


def train_step(model, criterion, images, targets, optimizer, scaler, *, amp_dtype=None, accum_iter=1,
               update=True, clip_grad=None):
    """One micro-step: forward (both passes), loss, backward of loss / accum_iter, and with `update`
    the optimizer step. Returns the loss value; raises NonFiniteLoss before a nan/inf reaches the
    weights. The benchmark times exactly this."""
    try:
        with autocast(images.device, amp_dtype):
            loss = criterion(model(images, passes=True), targets)
        value = loss.item()  # one host sync per step, needed for the check anyway
        if not math.isfinite(value):
            raise NonFiniteLoss(f"loss is {value}")
        scaler.scale(loss / accum_iter).backward()
    except (torch.OutOfMemoryError, RuntimeError) as exc:
        if not isinstance(exc, torch.OutOfMemoryError) and "can't allocate memory" not in str(exc):
            raise
        raise OutOfMemory(f"out of memory in a training step of {images.shape[0]} inputs {list(images.shape[1:])}: "
                          "lower --batch-size (with --accum-iter to keep the effective batch), -T or "
                          "--img-size") from None
    if update:
        if clip_grad is not None:
            scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_(model.parameters(), clip_grad)
        scaler.step(optimizer)
        scaler.update()
        optimizer.zero_grad(set_to_none=True)
    return value


def train_one_epoch(model, criterion, loader, optimizer, scaler, d, epoch, *, amp_dtype=None, mixup=None,
                    accum_iter=1, clip_grad=None, log_interval=50, header="", scheduler=None, num_updates=0,
                    start_step=0, resumed=None, stop=None):
    """Returns {'loss': mean, 'img_s': throughput, 'stopped_at': None or the next step}. Raises
    NonFiniteLoss on nan/inf.

    `scheduler.step_update` is told the running update count (timm: a no-op unless the schedule is
    per update); `num_updates` is the count before `start_step`. A mid-epoch resume passes the step
    to continue from (the loader's sampler already starts there) and `resumed`, the stopped run's
    {'rng': this process's random state, 'meter': its running sums}. With `stop` (StopSignals), a
    signal ends the epoch after the update in flight: 'stopped_at' is then the step to resume at.
    """
    model.train()
    meter = Meter()
    total = start_step + len(loader)
    progress = Progress(header, total, log_interval, enabled=d.main)
    optimizer.zero_grad(set_to_none=True)
    batches = iter(loader)  # draws the loader's base seed: before the resumed random state is put back
    if resumed is not None:
        set_rng_state(resumed["rng"], d.device)
        meter.load(resumed["meter"])
    for step, (images, targets) in enumerate(batches, start_step):
        images = images.to(d.device, non_blocking=True)
        targets = targets.to(d.device, non_blocking=True)
        if mixup is not None:
            images, targets = mixup(images, targets)
        update = (step + 1) % accum_iter == 0 or step + 1 == total
        # a short last group (len(loader) not a multiple of accum_iter) is averaged over its own size
        group = min(accum_iter, total - step // accum_iter * accum_iter)
        # DDP all-reduces gradients only on the micro-step that updates the weights
        sync = model.no_sync() if d.enabled and not update else contextlib.nullcontext()
        try:
            with sync:
                value = train_step(model, criterion, images, targets, optimizer, scaler, amp_dtype=amp_dtype,
                                   accum_iter=group, update=update, clip_grad=clip_grad)
        except NonFiniteLoss as exc:
            raise NonFiniteLoss(f"{exc} at epoch {epoch}, step {step + 1}/{total}") from None
        if update:
            num_updates += 1
            if scheduler is not None:
                scheduler.step_update(num_updates=num_updates)
        meter.update(n=images.shape[0], loss=value)
        progress.step(step, images.shape[0] * d.world_size, meter, optimizer.param_groups[0]["lr"])
        # stop between updates only: accumulated gradients are not part of a checkpoint
        if update and step + 1 < total and stop is not None and stop.agreed(d):
            return {"loss": meter.avg("loss"), "img_s": progress.images_per_second(), "stopped_at": step + 1,
                    "meter": meter.state()}
    return {"loss": meter.avg("loss"), "img_s": progress.images_per_second(), "stopped_at": None}


@torch.no_grad()
def evaluate(model, loader, d, *, amp_dtype=None):
    """Top-1, top-5 (percent) and cross-entropy of each forward pass, exact over all processes.

    Returns {'pass1': {...}, 'pass2': {...}, 'images': n}; a one-pass model (fb_lidiff=False)
    reports its single output as pass 2.
    """
    model.eval()
    sums = torch.zeros(2, 3, dtype=torch.float64, device=d.device)  # [pass, (top-1, top-5 hits, loss sum)]
    images_seen, one_pass = 0, False
    for images, targets in loader:
        images = images.to(d.device, non_blocking=True)
        targets = targets.to(d.device, non_blocking=True)
        with autocast(d.device, amp_dtype):
            first, final = model(images, passes=True)
        one_pass = first is None
        for i, logits in enumerate((final if first is None else first, final)):
            logits = logits.float()
            top5 = logits.topk(min(5, logits.shape[1]), dim=1).indices
            hits = top5 == targets[:, None]
            sums[i, 0] += hits[:, 0].sum()
            sums[i, 1] += hits.any(1).sum()
            sums[i, 2] += F.cross_entropy(logits, targets, reduction="sum").double()
        images_seen += images.shape[0]
    totals = all_reduce_sum(sums.flatten().tolist() + [images_seen], d)
    n = max(totals[-1], 1)
    passes = {}
    for i, name in enumerate(("pass1", "pass2")):
        top1, top5, loss = totals[3 * i:3 * i + 3]
        passes[name] = {"top1": 100 * top1 / n, "top5": 100 * top5 / n, "loss": loss / n}
    return {**passes, "images": int(totals[-1]), "passes": 1 if one_pass else 2}


def eval_line(result):
    """'pass-1 top-1 45.20% top-5 90.10% loss 1.5000 | pass-2 top-1 ...' for the log."""
    names = ("pass2",) if result["passes"] == 1 else ("pass1", "pass2")
    parts = [f"{name.replace('pass', 'pass-')} top-1 {result[name]['top1']:.2f}% top-5 "
             f"{result[name]['top5']:.2f}% loss {result[name]['loss']:.4f}" for name in names]
    return " | ".join(parts) + f" ({result['images']} images)"
