"""Throughput and peak memory of a training step and an eval step, one configuration per process."""
import multiprocessing as mp
import resource
import statistics
import time
from dataclasses import asdict, dataclass, replace

import timm
import torch

import models

AMP_DTYPES = {"none": None, "bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass(frozen=True)
class Config:
    model: str = "spiliformer_4_384"
    embed_dim: int = None
    batch_size: int = 64
    T: int = None
    input_size: int = None
    device: str = "cuda"
    backend: str = "auto"
    amp: str = "none"
    compile: str = "none"
    ff_lidiff: bool = True
    fb_lidiff: bool = True


def compare_configs(base):
    """The three of the --compare mode: the official code's way, QKFormer's cost, our fastest."""
    straight = replace(base, backend="torch", amp="none", compile="none")
    fast = replace(base, backend="auto", amp="bf16" if base.device == "cuda" else "none")
    return {"straight": straight, "qkformer": replace(straight, ff_lidiff=False, fb_lidiff=False), "fast": fast}


def _inputs(model, cfg, device):
    size = cfg.input_size or model.pretrained_cfg["input_size"][-1]
    if model.in_chans == 2:  # event frames bring their own T
        return torch.rand(cfg.batch_size, model.T, 2, size, size, device=device).round()
    return torch.rand(cfg.batch_size, 3, size, size, device=device)


def _time(fn, device, warmup, repeats):
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _measure(cfg, warmup, repeats):
    device = torch.device(cfg.device)
    torch.manual_seed(0)
    kwargs = {k: v for k, v in dict(embed_dim=cfg.embed_dim, T=cfg.T).items() if v is not None}
    model = timm.create_model(cfg.model, backend=cfg.backend, ff_lidiff=cfg.ff_lidiff, fb_lidiff=cfg.fb_lidiff,
                              **kwargs).to(device)
    run = torch.compile(model, mode=None if cfg.compile == "default" else cfg.compile) \
        if cfg.compile != "none" else model
    x = _inputs(model, cfg, device)
    y = torch.randint(0, model.num_classes, (cfg.batch_size,), device=device)
    criterion = models.SpiLiFormerLoss()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    dtype = AMP_DTYPES[cfg.amp]
    scaler = torch.amp.GradScaler(device.type, enabled=dtype is torch.float16)

    def autocast():
        return torch.autocast(device.type, dtype=dtype, enabled=dtype is not None)

    def train_step():
        with autocast():
            loss = criterion(run(x), y)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        optimizer.zero_grad(set_to_none=True)

    @torch.no_grad()
    def eval_step():
        with autocast():
            run(x)

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    model.train()
    train_s = _time(train_step, device, warmup, repeats)
    peak = torch.cuda.max_memory_allocated() / 2 ** 20 if device.type == "cuda" else None
    model.eval()
    eval_s = _time(eval_step, device, warmup, repeats)
    if peak is None:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    return {"train_img_s": cfg.batch_size / train_s, "eval_img_s": cfg.batch_size / eval_s,
            "peak_mem_mb": peak, "config": asdict(cfg)}


def measure(cfg, warmup=2, repeats=5):
    """Run one configuration in a fresh process, so that its peak memory is its own."""
    with mp.get_context("spawn").Pool(1) as pool:
        return pool.apply(_measure, (cfg, warmup, repeats))
