"""Spiking neurons (eqs 1-3) and the one factory the model builds them through.

Every neuron here is multi-step: it takes a [T, B, ...] tensor and integrates over the
leading axis only, so membrane state never crosses samples.
"""
import contextlib
import functools

import warnings

import torch
import torch.nn as nn
import torch.nn.functional as F

# spikingjelly 0.0.0.0.14 scripts its eval kernels with torch.jit, which torch 2.x warns about at import
warnings.filterwarnings("ignore", message=".*torch.jit.script.*is deprecated", category=FutureWarning)
from spikingjelly.activation_based import neuron, surrogate  # noqa: E402

BACKENDS = ("auto", "cupy", "torch")
NEURONS = ("lif", "ilif")
CUPY_PIP = "cupy-cuda12x"  # the CUDA 12 wheel; cupy-cuda11x for CUDA 11


@functools.lru_cache(maxsize=1)
def cupy_import_error():
    """None when CuPy imports, else the exception it raised (kept whole, not just 'missing')."""
    try:
        import cupy  # noqa: F401
    except Exception as exc:  # a broken CUDA library raises more than ImportError
        return exc
    return None


def check_backend(backend):
    """Validate a backend name; asking for cupy without a working CuPy is an error here, at build time."""
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if backend == "cupy":
        err = cupy_import_error()
        if err is not None:
            raise RuntimeError(
                f"backend='cupy' needs CuPy, which failed to import: {type(err).__name__}: {err}\n"
                f"Install it with `pip install {CUPY_PIP}` (match your CUDA version), "
                "or use backend='auto' or 'torch'.") from err
    return backend


class LIF(neuron.LIFNode):
    """LIF of eqs 1-3: tau 2, hard reset to 0, detached reset, sigmoid surrogate (alpha 4).

    `backend='auto'` picks spikingjelly's CuPy kernel for CUDA float32/float16 input when CuPy
    imports, the torch loop otherwise; the choice is made per call, so one model runs on either device.
    """

    def __init__(self, v_threshold=1.0, backend="auto"):
        super().__init__(tau=2.0, decay_input=True, v_threshold=v_threshold, v_reset=0.0,
                         surrogate_function=surrogate.Sigmoid(alpha=4.0), detach_reset=True,
                         step_mode="m", backend="torch")
        self.requested_backend = check_backend(backend)

    def multi_step_forward(self, x_seq):
        self.backend = self._pick_backend(x_seq)
        if not self.training and torch.is_grad_enabled() and x_seq.requires_grad:
            # spikingjelly's eval kernels have no backward; attacks and saliency maps need the
            # surrogate gradient of an eval-mode model (BN on running statistics)
            self.v_float_to_tensor(x_seq[0])
            return torch.stack([neuron.BaseNode.single_step_forward(self, x) for x in x_seq])
        return super().multi_step_forward(x_seq)

    def _pick_backend(self, x_seq):
        if self.requested_backend == "torch":
            return "torch"
        cupy_ok = (x_seq.is_cuda and x_seq.dtype in (torch.float32, torch.float16)
                   and cupy_import_error() is None)
        if self.requested_backend == "cupy":
            if not cupy_ok:
                raise RuntimeError(f"backend='cupy' runs on CUDA float32/float16 tensors only, got "
                                   f"{x_seq.dtype} on {x_seq.device}; use backend='auto'")
            return "cupy"
        return "cupy" if cupy_ok else "torch"

    def extra_repr(self):
        return f"v_threshold={self.v_threshold}, backend={self.requested_backend}"


class _RoundClampSTE(torch.autograd.Function):
    """round(clamp(u, 0, D)) forward, identity gradient inside [0, D] (straight-through)."""

    @staticmethod
    def forward(ctx, u, levels):
        ctx.save_for_backward(u)
        ctx.levels = levels
        # floor(x + 0.5): round half up, so u = 0.5 fires like the V_th 0.5 attention neuron
        return torch.floor(u.clamp(0, levels) + 0.5)

    @staticmethod
    def backward(ctx, grad):
        (u,) = ctx.saved_tensors
        return grad * ((u >= 0) & (u <= ctx.levels)).to(grad.dtype), None


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
        return torch.stack(spikes)

    def extra_repr(self):
        return f"levels={self.levels}, decay={self.decay}"


def make_neuron(kind="lif", v_threshold=1.0, backend="auto"):
    """The only place the model creates neurons: `kind` is the model's `neuron` argument."""
    if kind == "lif":
        return LIF(v_threshold=v_threshold, backend=backend)
    if kind == "ilif":
        return ILIF()
    raise ValueError(f"neuron must be one of {NEURONS}, got {kind!r}")


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
