"""Spiking neurons (eqs 1-3): the LIF, the integer LIF, and how the model picks one. Which kernel
runs a LIF (and `python -m models`'s report of it) is models/lif_backends.py.

Every neuron here is multi-step: it takes a [T, B, ...] tensor and integrates over the
leading axis only, so membrane state never crosses samples.

The LIF is the project's own (spikingjelly's multi-step `LIFNode`, 0.0.0.0.14 or 2.0, is the
numerical reference and stays selectable as backend 'spikingjelly'):

    h[t] = v[t-1] + (x[t] - v[t-1]) / tau      eq 1 (tau 2, decay_input)
    s[t] = H(h[t] - v_th)                       eq 2 (sigmoid surrogate, alpha 4)
    v[t] = h[t] (1 - s[t])                      eq 3 (hard reset to 0, s detached)
"""
import contextlib

import torch
import torch.nn as nn
import torch.nn.functional as F

from . import spike_storage
from . import spikingjelly_compat as sj
from .lif_backends import BACKENDS, check_backend, lif_multistep, pick_backend
from .lif_constants import ALPHA, TAU
from .spikingjelly_compat import neuron, surrogate

NEURONS = ("lif", "ilif")


class LIF(neuron.LIFNode):
    """LIF of eqs 1-3: tau 2, hard reset to 0, detached reset, sigmoid surrogate (alpha 4), multi-step.

    backend: 'auto' (Triton on CUDA, the lean torch path on CPU), 'torch', 'triton', 'cupy'
    (spikingjelly 0.0.0.0.14's CuPy kernel, made to run on NumPy 2) or 'spikingjelly' (the
    library's own LIFNode path, the reference). Change it after construction with
    `set_backend(model, name)` (or, on spikingjelly 0.0.0.0.14, its `functional.set_backend`).
    """

    def __init__(self, v_threshold=1.0, backend="auto"):
        super().__init__(tau=TAU, decay_input=True, v_threshold=v_threshold, v_reset=0.0,
                         surrogate_function=surrogate.Sigmoid(alpha=ALPHA), detach_reset=True,
                         step_mode="m", **sj.LIF_NODE_BACKEND)
        self.backend = backend

    @property
    def supported_backends(self):
        return BACKENDS

    @property
    def backend(self):
        return self._backend

    @backend.setter
    def backend(self, value):
        self._backend = check_backend(value)

    def reset(self):
        # spikingjelly deep-copies its reset values; a plain write also keeps torch.compile from
        # guarding on the type of the state the previous forward left (a recompile per call)
        self._memories["v"] = 0.0

    def multi_step_forward(self, x_seq):
        backend = pick_backend(self.backend, x_seq)
        if backend == "spikingjelly":
            return sj.lif_node_forward(self, x_seq)
        if backend == "cupy":
            from .lif_cupy import lif_cupy
            spikes, self.v = lif_cupy(self, x_seq)
            return spikes
        v_init = self.v
        if isinstance(v_init, float):
            v_init = None if v_init == 0.0 else torch.full_like(x_seq[0], v_init, dtype=torch.float32)
        spikes, self.v = lif_multistep(x_seq, self.v_threshold, v_init, backend, fallback=self.backend == "auto")
        return spikes

    def forward(self, *args, **kwargs):
        return spike_storage.mark(super().forward(*args, **kwargs))  # binary, whatever the backend

    def extra_repr(self):
        return f"v_threshold={self.v_threshold}, backend={self.backend}"


class _RoundClampSTE(torch.autograd.Function):
    """round(clamp(u, 0, D)) forward, identity gradient inside [0, D] (straight-through)."""

    @staticmethod
    def forward(ctx, u, levels):
        ctx.save_for_backward(spike_storage.mark((u >= 0) & (u <= levels)))  # the gradient's mask, not u
        # floor(x + 0.5): round half up, so u = 0.5 fires like the V_th 0.5 attention neuron
        return torch.floor(u.clamp(0, levels) + 0.5)

    @staticmethod
    def backward(ctx, grad):
        (inside,) = ctx.saved_tensors
        return grad * inside.to(grad.dtype), None


class ILIF(nn.Module):
    """Integer LIF (Spike-Driven Transformer V2), for the I-LIF rows of Table 1.

    Training and the default inference emit integers s[t] = round(clamp(u[t], 0, D)) with
    u[t] = (u[t-1] - s[t-1]) * 0.25 + x[t]. On hardware each integer is D binary sub-steps
    (`expand_spikes`); `spike_expanded_inference` runs the model that way.
    """

    def __init__(self, levels=4, decay=0.25):
        super().__init__()
        self.levels = levels
        self.decay = decay

    def forward(self, x_seq):
        u = torch.zeros_like(x_seq[0])
        spikes = []
        for x in x_seq:  # no fused kernel exists for I-LIF; T is 1 in the paper's I-LIF row
            u = u + x
            s = _RoundClampSTE.apply(u, self.levels)
            spikes.append(s)
            u = (u - s.detach()) * self.decay  # soft reset, detached as the LIF's
        return spike_storage.mark(torch.stack(spikes), self.levels)  # integer counts in [0, levels]

    def extra_repr(self):
        return f"levels={self.levels}, decay={self.decay}"


def _ilif(v_threshold):
    return ILIF()  # a rounding neuron has no threshold (decisions N2)


def get_neuron_layer(kind="lif"):
    """The model's `neuron` argument -> the `neuron_layer` every block calls as neuron_layer(v_threshold)."""
    if kind == "lif":
        return LIF
    if kind == "ilif":
        return _ilif
    raise ValueError(f"neuron must be one of {NEURONS}, got {kind!r}")


def set_backend(net, backend):
    """Run every LIF in `net` on `backend` (spikingjelly's `functional.set_backend`, for our LIF).

    The name is checked even where `net` holds no LIF (an I-LIF model), so a typo never passes."""
    check_backend(backend)
    for m in net.modules():
        if isinstance(m, LIF):
            m.backend = backend
    return net


def expand_spikes(s, levels=None):
    """Integer spike counts [...] -> binary sub-steps [D, ...] whose sum is `s` (I-LIF on hardware)."""
    levels = int(s.max().item()) if levels is None else levels
    steps = torch.arange(levels, device=s.device, dtype=s.dtype).view(-1, *([1] * s.dim()))
    return (s.unsqueeze(0) > steps).to(s.dtype)


def is_spike_count(x):
    """Non-negative integer values: what a neuron emits (binary or I-LIF counts) and their sums."""
    return x.is_floating_point() and bool((x >= 0).all()) and torch.equal(x, x.round())


@contextlib.contextmanager
def spike_expanded_inference(model):
    """Run every conv/linear that reads integer spike counts as a sum over binary sub-steps.

    Each such layer computes sum_k W b_k + bias with b_k = expand_spikes(x)[k], which is what
    binary-spike hardware does with an I-LIF network; its output must equal the integer form.
    """
    def hook(module, inputs, output):
        x = inputs[0]
        if not is_spike_count(x) or x.max() <= 1:
            return output
        bias = module.bias
        if isinstance(module, nn.Linear):
            parts = [F.linear(b, module.weight) for b in expand_spikes(x)]
        else:
            parts = [module._conv_forward(b, module.weight, None) for b in expand_spikes(x)]
        out = torch.stack(parts).sum(0)
        if bias is not None:
            shape = (-1,) if isinstance(module, nn.Linear) else (-1,) + (1,) * (out.dim() - 2)
            out = out + bias.view(shape)
        return out

    handles = [m.register_forward_hook(hook) for m in model.modules()
               if isinstance(m, (nn.Linear, nn.Conv1d, nn.Conv2d))]
    try:
        yield model
    finally:
        for h in handles:
            h.remove()
