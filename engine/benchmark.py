"""Throughput and peak memory of a training step and an eval step.

Each configuration lives in its own process (so its peak memory is its own) and the timed repeats
are interleaved across the processes, one step each in turn, so a load change on a shared machine
hits every configuration alike and their ratios stay meaningful.
"""
import ctypes
import gc
import multiprocessing as mp
import statistics
import time
from dataclasses import asdict, dataclass, replace

import torch

from .model_config import ModelConfig

AMP_DTYPES = {"none": None, "bf16": torch.bfloat16, "fp16": torch.float16}
COMPILE_MODES = ("none", "default", "reduce-overhead", "max-autotune")


@dataclass(frozen=True)
class Config:
    model: ModelConfig
    batch_size: int = 64
    input_size: int = None  # default: the variant's
    device: str = "cuda"
    amp: str = "none"
    compile: str = "none"
    threads: int = None  # CPU: torch threads (1 gives the steadiest CPU-time figures)

    def describe(self):
        """Flat settings, model's and run's, as the JSON output lists them."""
        return {**asdict(self.model), **{k: v for k, v in asdict(self).items() if k != "model"}}

    def with_model(self, **changes):
        return replace(self, model=replace(self.model, **changes))


def compare_configs(base, amp=None, compile="none"):
    """The three of --compare: the straight port of the official code (spikingjelly's LIF, fp32, eager,
    autograd's own storage), QKFormer's cost the same way (both ablations off), and the default
    configuration (backend auto, `amp` = bf16 on CUDA unless given; torch.compile mode `compile`, off
    by default as in train.py; spike storage as `base` says)."""
    straight = replace(base, amp="none", compile="none").with_model(backend="spikingjelly", spike_storage="off")
    fast = replace(base, amp=amp or ("bf16" if base.device == "cuda" else "none"), compile=compile) \
        .with_model(backend="auto")
    return {"straight": straight, "qkformer": straight.with_model(ff_lidiff=False, fb_lidiff=False), "fast": fast}


def _inputs(model, cfg, device):
    size = cfg.input_size or model.pretrained_cfg["input_size"][-1]
    if model.in_chans == 2:  # event frames bring their own T
        return torch.rand(cfg.batch_size, model.T, 2, size, size, device=device).round()
    return torch.rand(cfg.batch_size, 3, size, size, device=device)


def _reset_peak(device):
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
        return
    # CPU: hand freed heap (warm-up, compilation) back to the OS so that the peak resident set of the
    # timed steps is what they hold, not what the allocator kept; then reset the peak (Linux: VmHWM)
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except OSError:  # not glibc
        pass
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def _peak_mb(device):
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated() / 2 ** 20
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmHWM")) / 1024  # kB


def _serve(cfg, timer, conn):
    """Worker process: build the model once, then answer ("train"|"eval"|"peak"|"reset_peak", n)."""
    import models
    from engine.loop import autocast, train_step
    device = torch.device(cfg.device)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    torch.manual_seed(0)
    model = cfg.model.build().to(device)
    run = torch.compile(model, mode=None if cfg.compile == "default" else cfg.compile) \
        if cfg.compile != "none" else model
    x = _inputs(model, cfg, device)
    y = torch.randint(0, model.num_classes, (cfg.batch_size,), device=device)
    criterion = models.SpiLiFormerLoss()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    dtype = AMP_DTYPES[cfg.amp]
    scaler = torch.amp.GradScaler(device.type, enabled=dtype is torch.float16)

    def train():  # the engine's own step (engine/loop.py), the one train.py runs
        model.train()
        train_step(run, criterion, x, y, optimizer, scaler, amp_dtype=dtype)

    @torch.no_grad()
    def eval_step():
        model.eval()
        with autocast(device, dtype):
            run(x, passes=False)

    clock = time.process_time if timer == "cpu" else time.perf_counter
    steps = {"train": train, "eval": eval_step}
    while True:
        command, n = conn.recv()
        if command == "stop":
            return
        if command == "peak":
            conn.send(_peak_mb(device))
            continue
        if command == "reset_peak":
            _reset_peak(device)
            conn.send(None)
            continue
        times = []
        for _ in range(n):
            if device.type == "cuda":
                torch.cuda.synchronize()
            start = clock()
            out_of_memory = False
            try:
                steps[command]()
            except torch.OutOfMemoryError:  # a result too: the configuration does not fit this batch
                out_of_memory = True
            if out_of_memory:  # (outside the handler, whose traceback holds the step's tensors)
                optimizer.zero_grad(set_to_none=True)
                torch.cuda.empty_cache()
                times.append(float("inf"))
                continue
            if device.type == "cuda":
                torch.cuda.synchronize()
            times.append(clock() - start)
        conn.send(times)


def measure_all(configs, warmup=2, repeats=5, timer=None):
    """{name: {train_img_s, eval_img_s, peak_mem_mb, config}} for a dict of Configs, repeats interleaved.

    timer: 'cpu' (process CPU time; the default on CPU, steady on a shared machine when threads=1)
    or 'wall' (the default on CUDA). Peak memory is that of the timed training steps (CUDA: max
    allocated; CPU: peak resident set size, reset after warm-up).
    """
    ctx = mp.get_context("spawn")
    workers = {}
    try:
        for name, cfg in configs.items():
            parent, child = ctx.Pipe()
            clock = timer or ("wall" if cfg.device == "cuda" else "cpu")
            proc = ctx.Process(target=_serve, args=(cfg, clock, child), daemon=True)
            proc.start()
            workers[name] = (proc, parent)

        def ask(name, command, n=0):
            proc, conn = workers[name]
            try:
                conn.send((command, n))
                while not conn.poll(5):
                    if not proc.is_alive():
                        raise EOFError
                return conn.recv()
            except (EOFError, OSError):
                raise RuntimeError(f"benchmark configuration {name!r} failed (its traceback is above)") from None

        times = {name: {"train": [], "eval": []} for name in configs}
        for name in configs:  # warm-up (and compilation) for both modes before anything is timed
            ask(name, "train", warmup)
            ask(name, "eval", warmup)
            ask(name, "reset_peak")
        for _ in range(repeats):
            for name in configs:
                times[name]["train"] += ask(name, "train", 1)
        peaks = {name: ask(name, "peak") for name in configs}
        for _ in range(repeats):
            for name in configs:
                times[name]["eval"] += ask(name, "eval", 1)
        for _, conn in workers.values():
            conn.send(("stop", 0))
    finally:
        for proc, _ in workers.values():
            proc.join(timeout=30)
            if proc.is_alive():
                proc.terminate()
    # a configuration that ran out of memory reports 0 images/s and an infinite peak
    return {name: {"train_img_s": cfg.batch_size / statistics.median(times[name]["train"]),
                   "eval_img_s": cfg.batch_size / statistics.median(times[name]["eval"]),
                   "peak_mem_mb": float("inf") if float("inf") in times[name]["train"] else peaks[name],
                   "config": cfg.describe()}
            for name, cfg in configs.items()}


# ---------------------------------------------------------------- what backward keeps

SAVED_KINDS = ("binary spikes", "spike counts", "BN/conv float inputs", "LIF state", "other")


def _stage_of(name):
    """'stages.1.blocks.0.attn.q' -> 'stage 2 blocks'; the stem, embeds, feedback and head likewise."""
    parts = name.split(".")
    if parts[0] == "stages" and len(parts) > 2:
        i = int(parts[1])
        if parts[2] == "downsample":
            return "stem" if i == 0 else f"stage {i + 1} embed"
        return f"stage {i + 1} blocks"
    return parts[0] or "model"


def saved_memory(cfg, spike_storage=None):
    """Bytes autograd keeps for backward per image in one training forward of `cfg`'s model,
    {kind: bytes} and {stage: bytes}, counting memory shared by several saves once. The kind
    comes from the producers' marks (models/spike_storage.py) and the module that saved it.

    spike_storage None: as the model is configured; 'off', 'bits' or 'lean' forces it."""
    from models import spike_storage as storage
    from models.neurons import ILIF, LIF
    device = torch.device(cfg.device)
    torch.manual_seed(0)
    model = cfg.model.build().to(device).train()
    if spike_storage is not None:
        model.spike_storage = spike_storage
    names = {m: n for n, m in model.named_modules()}
    x = _inputs(model, cfg, device)
    stack, seen = [], set()
    kinds = dict.fromkeys(SAVED_KINDS, 0)
    stages = {}

    def observe(t, held):
        key, nbytes = storage.held_storage(held)
        if key in seen or isinstance(t, torch.nn.Parameter):  # parameters are not activations
            return
        seen.add(key)
        inner = stack[-1] if stack else None
        said = storage.describe(t)
        if isinstance(inner, (LIF, ILIF)):
            kind = "LIF state"
        elif getattr(inner, "weight", None) is not None and t.shape == inner.weight.shape:
            kind = "other"  # a weight's copy in the autocast dtype
        elif said in ("binary", "counts"):
            kind = "binary spikes" if said == "binary" else "spike counts"
        elif said == "recomputed" or (t.is_floating_point() and isinstance(
                inner, (torch.nn.Conv1d, torch.nn.Conv2d, torch.nn.Linear, torch.nn.modules.batchnorm._BatchNorm,
                        torch.nn.MaxPool2d))):
            kind = "BN/conv float inputs"
        else:
            kind = "other"
        kinds[kind] += nbytes
        stage = next((_stage_of(names[m]) for m in stack if names.get(m, "").count(".") >= 2
                      or names.get(m) in ("feedback", "head")), "model")
        stages[stage] = stages.get(stage, 0) + nbytes

    from torch.nn.modules.module import register_module_forward_hook, register_module_forward_pre_hook
    def leave(module, args, out):
        stack.pop()

    handles = [register_module_forward_pre_hook(lambda m, args: stack.append(m)),
               register_module_forward_hook(leave)]
    dtype = AMP_DTYPES[cfg.amp]
    try:
        from engine.loop import autocast
        with autocast(device, dtype), storage.storing(model.spike_storage != "off", observer=observe,
                                                      level=model.spike_storage):
            out = model(x, passes=True)  # its own storing() defers to this one
    finally:
        for h in handles:
            h.remove()
    del out
    per_image = cfg.batch_size
    return ({k: v / per_image for k, v in kinds.items()}, {k: v / per_image for k, v in stages.items()})
