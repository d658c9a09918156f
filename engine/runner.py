"""The whole run, as every train.py calls it: `main(dataset)` resolves the configuration (the
dataset's recipe under the flags), then sets up, (resumes), trains and evaluates each epoch,
checkpoints and logs; or `--eval`s a checkpoint and exits."""
import contextlib
import itertools
import random
import sys
import time
from pathlib import Path

import numpy as np
import torch
import yaml
from timm.optim import create_optimizer_v2
from timm.scheduler import create_scheduler_v2
from torch.nn.parallel import DistributedDataParallel

import models
from models import ConfigError, SpiLiFormerLoss, UserError, linear_alpha, user_message
from .model_config import ModelConfig

from .checkpoint import (check_finite, describe_progress, lock_run_folder, mid_epoch_position, plain, progress_of,
                         repair_best, restore, save_atomic, save_epoch, schedule_changes, training_state)
from . import registry
from .config import input_size, parse_command_line
from .data import make_loaders, make_mixup
from .distributed import init_distributed, share_cores, shutdown, sync_buffers
from .runlog import RunLog, fmt_time
from .loop import eval_line, evaluate, train_one_epoch, updates_per_epoch
from .preemption import Interrupted, StopSignals, gather_rng_states


def main(dataset, argv=None):
    """The train.py of `dataset` (a name in engine.registry.DATASETS); returns the exit status."""
    entry = registry.get(dataset)
    return run(parse_command_line(entry, argv), entry)


def run(args, entry):
    """Train (or --eval) with the resolved configuration `args` on `entry`'s data."""
    d = init_distributed(args.device)
    try:
        with StopSignals(verbose=d.main) as stop, contextlib.ExitStack() as on_exit:
            return _run(args, entry, d, stop, on_exit)
    except UserError as exc:
        print(f"error: {user_message(exc)}", file=sys.stderr, flush=True)
        return 1
    finally:
        shutdown(d)


def seed_everything(seed):
    random.seed(seed)
    np.random.seed(seed % 2 ** 32)
    torch.manual_seed(seed)


def model_settings(args, num_classes):
    return ModelConfig.from_args(args).updated({"num_classes": num_classes})


def create_model(args, num_classes, settings=None):
    """The model of a resolved configuration, for the dataset's number of classes."""
    model = (settings or model_settings(args, num_classes)).build()
    if args.img_size is not None and any(s % model.reduction for s in input_size(args)):
        raise ConfigError(f"--img-size {args.img_size}: the model needs sides divisible by {model.reduction}")
    return model


def amp_dtype_for(args, d):
    if not args.amp:
        return None
    if d.device.type != "cuda":
        if d.main:
            print("note: --amp applies on CUDA only; this CPU run is float32", flush=True)
        return None
    return torch.bfloat16 if args.amp_dtype == "bf16" else torch.float16


def claim_run_folder(args, d, T):
    """The run's folder, never another run's: a new time-stamped one (made unique), the folder of the
    checkpoint being continued, or --output/--experiment when it holds no other run."""
    if not args.experiment and not args.resume:
        base = Path(args.output) / f"{time.strftime('%Y%m%d-%H%M%S')}-{args.model.lower()}-T{T}"
        if not d.main:
            return base
        for i in itertools.count():
            folder = base if i == 0 else base.with_name(f"{base.name}-{i}")
            if make_folder(folder, exist_ok=False):
                return folder
    if args.experiment and (Path(args.experiment).is_absolute() or ".." in Path(args.experiment).parts):
        raise ConfigError(f"--experiment {args.experiment}: a sub-folder of --output, without '..'; to write "
                          "elsewhere, change --output")
    folder = Path(args.output) / args.experiment if args.experiment else Path(args.resume).resolve().parent
    continuing = bool(args.resume) and Path(args.resume).resolve().parent == folder.resolve()
    taken = sorted(p.name for p in folder.glob("checkpoint-*.pth")) + \
        (["log.txt"] if (folder / "log.txt").is_file() else [])
    if taken and not continuing:
        raise ConfigError(f"{folder} already holds another run ({', '.join(taken[:3])}); continue it with "
                          f"--resume {folder / 'checkpoint-last.pth'}, or choose another output folder")
    last = folder / "checkpoint-last.pth"
    if continuing and last.resolve() != Path(args.resume).resolve():
        ahead, behind = progress_of(last), progress_of(args.resume)
        if ahead is not None and behind is not None and ahead > behind:
            raise ConfigError(f"{last} is further on ({describe_progress(ahead)}) than {args.resume} "
                              f"({describe_progress(behind)}), and continuing here would replace it; continue "
                              f"from {last}, or branch into a new folder with --experiment NAME")
    if d.main:
        make_folder(folder, exist_ok=True)
    return folder


def make_folder(folder, exist_ok):
    """mkdir -p; False when it exists and exist_ok is False; an unwritable place is one ConfigError."""
    try:
        folder.mkdir(parents=True, exist_ok=exist_ok)
        return True
    except FileExistsError:
        return False
    except OSError as exc:
        raise ConfigError(f"cannot create the run folder {folder}: {exc.strerror}; choose another --output") from None



def save_mid_epoch(model, state, run_dir, steps, stop):
    """checkpoint-last.pth at a step inside an epoch (a signal asked to stop), and how to go on."""
    epoch, step = state["position"]["epoch"], state["position"]["step"]
    check_finite(model, f"at epoch {epoch + 1}, step {step}", run_dir)
    last = run_dir / "checkpoint-last.pth"
    save_atomic(state, last)
    print(f"{stop.name}: saved epoch {epoch + 1}, step {step}/{steps} to {last}; continue with the same "
          f"command and --resume {last}", file=sys.stderr, flush=True)


def adopt_recorded_model(args, state, d):
    """--resume and --eval continue the model a checkpoint records: its settings go over the recipe's
    and the defaults, the flags the user gave go over them. Returns the configuration to run with."""
    recorded = ModelConfig.recorded_in(state, args.resume)
    recorded.pop("num_classes", None)  # the data's, checked against the weights on loading
    current = ModelConfig.from_args(args)
    with torch.device("meta"):
        resolved = current.updated(current.build(num_classes=0).architecture)  # the variant's values filled in
    adopted = {k: v for k, v in recorded.items() if k not in args.given and resolved.flags_for({k: v})}
    if adopted and d.main:
        print(f"{args.resume} records the model as {' '.join(current.flags_for(adopted))}: building that "
              "(a flag on the command line overrides it)", flush=True)
    return args.replaced(adopted) if adopted else args


def preflight(args, entry, d, resumed):
    """Everything cheap, before the data work (integrating event frames can take hours): the model
    settings (a resumed checkpoint's record under the flags given), that its weights fit them, and the
    lr. Returns (args, a model on the meta device, the peak lr, the effective batch)."""
    if resumed is not None:
        args = adopt_recorded_model(args, resumed, d)
    with torch.device("meta"):
        probe = create_model(args, args.num_classes or entry.num_classes)
    if resumed is not None and isinstance(resumed.get("model_args"), dict):
        classes = resumed["model_args"].get("num_classes")
        if isinstance(classes, int) and classes != probe.num_classes and args.num_classes is None:
            with torch.device("meta"):
                probe = create_model(args, classes)  # an ImageFolder's classes are the data's: checked later
        restore(args.resume, probe, settings=model_settings(args, probe.num_classes), state=resumed, dry_run=True)
    effective_batch = args.batch_size * d.world_size * args.accum_iter
    # no parser default: a value no dataset trains with would hide a key missing from a new recipe
    missing = [flag for flag, value in (("--epochs", args.epochs), ("--weight-decay", args.weight_decay),
                                        ("--lr or --blr", args.lr or args.blr)) if value is None]
    if missing and not args.eval:
        raise ConfigError(f"no {', '.join(missing)}: give it, or set it in the recipe {entry.recipe}")
    lr = args.lr if args.lr is not None else (args.blr or 0) * effective_batch / 256
    if args.min_lr > lr and not args.eval:
        raise ConfigError(f"--min-lr {args.min_lr:g} is above the peak lr {lr:g} (the schedule would rise); lower "
                          "--min-lr, or raise --lr / --blr")
    return args, probe, lr, effective_batch


def optimization(args, model, lr, steps):
    """(optimizer, scheduler, epochs including the cool-down) of the recipe, from timm."""
    opt_kwargs = {"eps": args.opt_eps} if args.opt_eps is not None else {}
    optimizer = create_optimizer_v2(model, opt=args.opt, lr=lr, weight_decay=args.weight_decay,
                                    momentum=args.momentum, layer_decay=args.layer_decay, **opt_kwargs)
    # --warmup-prefix: the cosine spans the epochs after the warm-up (MAE); --epochs stays the total
    decay_epochs = max(args.epochs - args.warmup_epochs, 1) if args.warmup_prefix else args.epochs
    scheduler, num_epochs = create_scheduler_v2(optimizer, sched=args.sched, num_epochs=decay_epochs,
                                                cooldown_epochs=args.cooldown_epochs, min_lr=args.min_lr,
                                                warmup_lr=args.warmup_lr, warmup_epochs=args.warmup_epochs,
                                                warmup_prefix=args.warmup_prefix,
                                                step_on_epochs=not args.sched_on_updates, updates_per_epoch=steps)
    if args.warmup_prefix:
        num_epochs = args.epochs + args.cooldown_epochs
    return optimizer, scheduler, num_epochs


def continue_from(args, d, resumed, training, settings, num_epochs, run_dir):
    """Load a checkpoint into (model, optimizer, scheduler, scaler) and say where the run goes on.
    Returns (the checkpoint, its mid-epoch position or None)."""
    model, optimizer, scheduler, scaler = training
    state = restore(args.resume, model, optimizer, scheduler, scaler, settings=settings, state=resumed)
    position = mid_epoch_position(state, args, d)
    if d.main:
        changes = schedule_changes(state["lr_scheduler"], scheduler)
        where = f", step {position['step']}" if position else ""
        print(f"resuming {args.resume} at epoch {state['epoch'] + 2} of {num_epochs}{where}"
              + (f"; the lr schedule follows the command line ({changes})" if changes else ""), flush=True)
        repair_best(args.resume, state, run_dir)
    return state, position


def run_config(args, entry, d, model, num_classes, lr, effective_batch, num_epochs, amp_dtype, run_dir):
    """The resolved configuration, with what the flags left to the data, the model and the processes."""
    return plain({**args.as_dict(), **model.architecture, "num_classes": num_classes, "lr": lr,
                  "amp": amp_dtype is not None,  # as run: --amp does nothing on CPU
                  "world_size": d.world_size, "effective_batch_size": effective_batch,
                  "num_epochs_with_cooldown": num_epochs, "run_dir": str(run_dir), "dataset": entry.name})


def announce(args, config, model, train_set, val_set):
    """config.yaml, and what the run will do, before its first step."""
    run_dir, lr, num_epochs = Path(config["run_dir"]), config["lr"], config["num_epochs_with_cooldown"]
    (run_dir / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=True))
    print(yaml.safe_dump(config, sort_keys=True), end="")
    print(f"effective batch {config['effective_batch_size']} = {args.batch_size} per process x "
          f"{config['world_size']} process(es) x {args.accum_iter} accumulation step(s); lr {lr:g} (peak, after "
          f"{args.warmup_epochs} warm-up epochs); {num_epochs} epochs = --epochs {args.epochs} + "
          f"{args.cooldown_epochs} cool-down", flush=True)
    if args.warmup_epochs >= args.epochs:
        print(f"note: the {args.warmup_epochs} warm-up epochs are not shorter than --epochs {args.epochs}: "
              f"the lr never reaches its peak {lr:g}; lower --warmup-epochs for a short run", flush=True)
    print(f"{args.model}: {sum(p.numel() for p in model.parameters()):,} parameters, "
          f"{len(train_set)} training / {len(val_set)} validation samples, run folder {run_dir}", flush=True)


def _run(args, entry, d, stop, on_exit):
    seed_everything(args.seed + d.rank)
    amp_dtype = amp_dtype_for(args, d)
    if args.eval and not args.resume:
        raise ConfigError("--eval needs --resume CKPT, the checkpoint to evaluate")
    resumed = models.read_checkpoint(args.resume) if args.resume else None
    args, probe, lr, effective_batch = preflight(args, entry, d, resumed)
    if not args.eval:
        run_dir = claim_run_folder(args, d, probe.T)
        if d.main:
            on_exit.enter_context(lock_run_folder(run_dir))
    train_set, val_set, num_classes = entry.build(entry, args, not args.eval)
    if args.num_classes not in (None, num_classes):
        raise ConfigError(f"--num-classes {args.num_classes} but the dataset has {num_classes} classes")
    settings = model_settings(args, num_classes)
    model = create_model(args, num_classes, settings).to(d.device)
    settings = settings.updated(model.architecture)  # as checkpoints record it
    train_loader, val_loader = make_loaders(train_set, val_set, args, d, share_cores(args.workers, args.threads, d),
                                            worker_init_fn=stop.worker_init)

    if args.eval:
        restore(args.resume, model, settings=settings, state=resumed)
        result = evaluate(model, val_loader, d, amp_dtype=amp_dtype)
        if d.main:
            print(f"eval {args.resume}: {eval_line(result)}", flush=True)
        return 0
    data = (train_set, val_set, train_loader, val_loader, num_classes)
    return _train(args, entry, d, stop, model, settings, resumed, data, lr, effective_batch, amp_dtype, run_dir)


def _train(args, entry, d, stop, model, settings, resumed, data, lr, effective_batch, amp_dtype, run_dir):
    """The training epochs of _run, from the start or from `resumed`, saving after each."""
    train_set, val_set, train_loader, val_loader, num_classes = data
    mixup = make_mixup(args, num_classes)
    if mixup is not None and args.batch_size % 2:
        raise ConfigError(f"mixup/cutmix need an even --batch-size, got {args.batch_size}")
    criterion = SpiLiFormerLoss(args.alpha, label_smoothing=args.smoothing)  # smoothing: hard targets only
    steps = updates_per_epoch(train_loader, args.accum_iter)
    optimizer, scheduler, num_epochs = optimization(args, model, lr, steps)
    scaler = torch.amp.GradScaler(d.device.type, enabled=amp_dtype is torch.float16)
    state, position = {}, None
    if args.finetune and not args.resume:
        models.load_checkpoint(model, args.finetune, strict=False)
    if args.resume:
        state, position = continue_from(args, d, resumed, (model, optimizer, scheduler, scaler), settings,
                                         num_epochs, run_dir)
        del resumed  # its tensors are in the model and optimizer now
    start_epoch, best_acc, best_epoch = state.get("epoch", -1) + 1, state.get("best_acc"), state.get("best_epoch")
    if args.start_epoch is not None:
        start_epoch, position = args.start_epoch, None
    start_step = position["step"] if position else 0
    scheduler.step(start_epoch)
    scheduler.step_update(num_updates=start_epoch * steps + start_step // args.accum_iter)
    ddp = DistributedDataParallel(model, device_ids=[d.local_rank] if d.device.type == "cuda" else None) \
        if d.enabled else model
    ddp = torch.compile(ddp) if args.compile else ddp  # after DDP, as torch recommends; eval stays eager

    config = run_config(args, entry, d, model, num_classes, lr, effective_batch, num_epochs, amp_dtype, run_dir)
    log = RunLog(run_dir, Path(args.log_dir) if args.log_dir else run_dir / "tensorboard", d.main)
    if args.resume and state.get("log_record") and Path(args.resume).resolve().parent == run_dir.resolve():
        log.ensure(state["log_record"])  # the line a kill between the save and the log write lost
    if d.main:
        announce(args, config, model, train_set, val_set)

    started = time.time()
    stop.armed = True  # from here a signal is a request: the loop saves, then the run exits
    for epoch in range(start_epoch, num_epochs):
        # each epoch's randomness depends on (seed, epoch, rank) only, so --resume continues exactly
        seed_everything(args.seed + 10007 * epoch + d.rank)
        step = start_step if epoch == start_epoch else 0
        train_loader.sampler.set_epoch(epoch, start=step * args.batch_size)
        if args.alpha_end is not None:
            criterion.alpha = linear_alpha(epoch, num_epochs, args.alpha, args.alpha_end)
        epoch_mixup = mixup if not (args.mixup_off_epoch and epoch >= args.mixup_off_epoch) else None
        header = f"epoch {epoch + 1}/{num_epochs}"
        resumed = {"rng": position["rng"][d.rank], "meter": position["meter"]} if step else None
        stats = train_one_epoch(ddp, criterion, train_loader, optimizer, scaler, d, epoch + 1,
                                amp_dtype=amp_dtype, mixup=epoch_mixup, accum_iter=args.accum_iter,
                                clip_grad=args.clip_grad, log_interval=args.log_interval, header=header,
                                scheduler=scheduler, num_updates=epoch * steps + step // args.accum_iter,
                                start_step=step, resumed=resumed, stop=stop)
        if stats["stopped_at"] is not None:
            position = {"epoch": epoch, "step": stats["stopped_at"], "rng": gather_rng_states(d),
                        "meter": stats["meter"], "world_size": d.world_size, "batch_size": args.batch_size,
                        "accum_iter": args.accum_iter}
            if d.main:  # the last finished epoch's state, and where in this one it stopped
                state = training_state(model, optimizer, scheduler, scaler, epoch - 1, best_acc, best_epoch,
                                       config, settings.record())
                save_mid_epoch(model, {**state, "position": position}, run_dir, len(train_loader) + step, stop)
            raise Interrupted(stop.signum)
        lr = optimizer.param_groups[0]["lr"]
        scheduler.step(epoch + 1)
        sync_buffers(model, d)
        result = evaluate(model, val_loader, d, amp_dtype=amp_dtype)
        is_best = best_acc is None or result["pass2"]["top1"] > best_acc
        if is_best:
            best_acc, best_epoch = result["pass2"]["top1"], epoch
        if d.main:
            check_finite(model, f"after epoch {epoch + 1}", run_dir)
            record = {"epoch": epoch + 1, "train_loss": stats["loss"], "train_lr": lr, "train_img_s": stats["img_s"],
                      "alpha": criterion.alpha, **{f"val_{name}_{k}": v for name in ("pass1", "pass2")
                                                   for k, v in result[name].items()}}
            state = training_state(model, optimizer, scheduler, scaler, epoch, best_acc, best_epoch, config,
                                   settings.record())
            save_epoch({**state, "log_record": record}, run_dir, is_best,
                       keep_epoch=args.save_every and (epoch + 1) % args.save_every == 0)
            eta = (time.time() - started) / (epoch + 1 - start_epoch) * (num_epochs - epoch - 1)
            print(f"{header} train loss {stats['loss']:.4f} lr {lr:.2e} {stats['img_s']:.1f} img/s | "
                  f"{eval_line(result)} | best top-1 {best_acc:.2f}% | eta {fmt_time(eta)}", flush=True)
            log.epoch(record)
        if epoch + 1 < num_epochs and stop.agreed(d):  # a signal during evaluation or the save
            if d.main:
                print(f"{stop.name}: epoch {epoch + 1} is saved in {run_dir / 'checkpoint-last.pth'}; continue "
                      "with the same command and --resume on it", file=sys.stderr, flush=True)
            raise Interrupted(stop.signum)
    log.close()
    if d.main:
        best = "-" if best_acc is None else f"{best_acc:.2f}%"
        print(f"done: best pass-2 top-1 {best}; checkpoints in {run_dir}", flush=True)
    return 0

