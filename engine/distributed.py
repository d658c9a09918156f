"""torchrun / DDP set-up, read from the environment in one place (one node or many)."""
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from models import ConfigError


@dataclass
class Dist:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    local_world_size: int = 1  # processes on this node, which share its cores

    @property
    def main(self):
        return self.rank == 0

    @property
    def enabled(self):
        return self.world_size > 1


def init_distributed(device=None):
    """Join the process group torchrun describes (RANK, WORLD_SIZE, LOCAL_RANK), else run alone.

    NCCL on GPUs, gloo on CPU. Each rank selects its GPU before anything touches CUDA, so CuPy
    kernels (which launch on the *current* device) run on the rank's own GPU.
    """
    world_size = int(os.environ.get("WORLD_SIZE", 1))
    rank = int(os.environ.get("RANK", 0))
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    use_cuda = (device or ("cuda" if torch.cuda.is_available() else "cpu")).startswith("cuda")
    if use_cuda:
        if not torch.cuda.is_available():
            raise ConfigError("--device cuda requested but no CUDA GPU is visible; use --device cpu")
        torch.cuda.set_device(local_rank)
        dev = torch.device("cuda", local_rank)
    else:
        dev = torch.device("cpu")
    if world_size > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if use_cuda else "gloo", rank=rank, world_size=world_size,
                                device_id=dev if use_cuda else None)
    return Dist(rank, world_size, local_rank, dev, int(os.environ.get("LOCAL_WORLD_SIZE", 1)))


def all_reduce_sum(values, d):
    """Sum a list of floats over all processes (float64, so counts stay exact)."""
    t = torch.tensor(values, dtype=torch.float64, device=d.device)
    if d.enabled:
        dist.all_reduce(t)
    return t.tolist()


def share_cores(workers, threads, d):
    """(loader workers, torch threads) for this process, from its share of the machine's cores: more
    workers than cores only add contention (PyTorch warns), and on CPU torch's default of one thread
    per core, beside busy workers, trains several times slower than one thread per free core."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    share = max(1, cores // d.local_world_size)
    notes = []
    if workers > share:
        notes.append(f"-j {workers} loader workers > the {share} cores of this process: using {share}")
        workers = share
    if threads is None and d.device.type == "cpu" and not os.environ.get("OMP_NUM_THREADS"):  # else the user's
        threads = max(1, share - workers)
        notes.append(f"{threads} torch thread(s) ({share} cores - {workers} loader workers; --threads to change)")
    if threads is not None:
        torch.set_num_threads(threads)
    if notes and d.main:
        print("note: " + "; ".join(notes), flush=True)
    return workers


def shutdown(d):
    if d.enabled and dist.is_initialized():
        dist.destroy_process_group()


def sync_buffers(model, d):
    """Give every process rank 0's BatchNorm statistics (each updated its own in the last step),
    so that a sharded evaluation uses exactly the model that is saved."""
    if d.enabled:
        for buffer in model.buffers():
            dist.broadcast(buffer, src=0)
