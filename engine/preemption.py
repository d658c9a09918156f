"""Stopping on a signal without losing the epoch.

SIGTERM (a cluster preempting or ending the job, scancel, a time limit; torchrun forwards it to every
process) and SIGINT (Ctrl-C) ask the run to stop after the update in flight. The loop then saves a
mid-epoch checkpoint that `--resume` continues exactly (`engine.loop.train_one_epoch` stops,
`engine.runner` saves) and the process exits with 128 + the signal's number, as a shell reports a
process the signal ended. A second signal stops at once; before training starts (or in --eval) there
is nothing to save, so the first one does.
"""
import multiprocessing
import os
import random
import signal

import numpy as np
import torch
import torch.distributed as dist

from .distributed import all_reduce_sum

SIGNALS = (signal.SIGTERM, signal.SIGINT)


class Interrupted(SystemExit):
    """Leaves the run with the conventional exit status 128 + signal number, and no traceback."""

    def __init__(self, signum):
        super().__init__(128 + signum)
        self.signum = signum


def _say(text):
    os.write(2, f"\n{text}\n".encode())  # print() may not be re-entered from a handler mid-print


class StopSignals:
    """Catches SIGTERM/SIGINT for the run (main thread only). `armed`: training is under way, so the
    first signal is a request the loop acts on (`requested`); otherwise it interrupts at once."""

    def __init__(self, verbose=True):
        self.verbose = verbose
        self.signum = None
        self._training = multiprocessing.Value("b", 0, lock=False)  # shared with loader workers
        self.previous = {}

    def __enter__(self):
        self.previous = {s: signal.signal(s, self._handle) for s in SIGNALS}
        return self

    def __exit__(self, *exc):
        self.armed = False
        for s, handler in self.previous.items():
            signal.signal(s, handler)
        return False

    @property
    def armed(self):
        return bool(self._training.value)

    @armed.setter
    def armed(self, value):
        self._training.value = int(value)

    def worker_init(self, _worker_id=None):
        """For DataLoader workers: a signal sent to the whole process group (Ctrl-C, scancel) waits while
        the main process finishes its step (a worker that died mid-batch would make the loader raise in
        that step); otherwise (the loader or Python ending the worker) it acts as usual."""
        for s in SIGNALS:
            signal.signal(s, _worker_handler(self._training))

    def _handle(self, signum, frame):
        name = signal.Signals(signum).name
        if not self.armed or self.signum is not None:
            if self.verbose:
                _say(f"{name}: stopped{'' if self.armed else ' (nothing to save yet)'}")
            raise Interrupted(signum)
        self.signum = signum
        if self.verbose:
            _say(f"{name}: stopping after this step to save a checkpoint to resume from "
                 f"({name} again stops at once, losing the epoch)")

    @property
    def name(self):
        return signal.Signals(self.signum).name if self.signum is not None else None

    def agreed(self, d):
        """Whether any process was asked to stop; every process calls this at the same step, so all
        of them stop after the same one."""
        local = float(self.signum is not None)
        if not d.enabled:
            return bool(local)
        requested = all_reduce_sum([local], d)[0] > 0
        if requested and self.signum is None:
            self.signum = signal.SIGTERM  # another process got it; exit as it will
        return requested


def _worker_handler(training):
    def handle(signum, frame):
        if training.value:  # the main process finishes its step with this worker's batches, then ends it
            return
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)
    return handle


def rng_state(device):
    """This process's random state (Python, NumPy, torch CPU and CUDA) as tensors and plain values,
    which torch.load(weights_only=True) reads back."""
    version, keys, gauss = random.getstate()
    _, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state(legacy=True)
    state = {"python": [version, list(keys), gauss], "torch": torch.get_rng_state(),
             "numpy": [torch.from_numpy(np_keys.astype(np.int64)), int(np_pos), int(np_has_gauss), float(np_gauss)]}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def set_rng_state(state, device):
    version, keys, gauss = state["python"]
    random.setstate((version, tuple(keys), gauss))
    np_keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state(("MT19937", np_keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)


def gather_rng_states(d):
    """Every process's random state, in rank order (on every process)."""
    state = rng_state(d.device)
    if not d.enabled:
        return [state]
    states = [None] * d.world_size
    dist.all_gather_object(states, state)
    return states
