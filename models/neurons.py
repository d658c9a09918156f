"""Spiking neurons (eqs 1-3): the LIF, the integer LIF, and how the model picks one and its kernel.

Every neuron here is multi-step: it takes a [T, B, ...] tensor and integrates over the
leading axis only, so membrane state never crosses samples.

The LIF is the project's own (spikingjelly's multi-step `LIFNode`, 0.0.0.0.14 or 2.0, is the
numerical reference and stays selectable as backend 'spikingjelly'):

    h[t] = v[t-1] + (x[t] - v[t-1]) / tau      eq 1 (tau 2, decay_input)
    s[t] = H(h[t] - v_th)                       eq 2 (sigmoid surrogate, alpha 4)
    v[t] = h[t] (1 - s[t])                      eq 3 (hard reset to 0, s detached)

`python -m models` prints the backend `auto` picks here, the devices and the versions.
"""
import contextlib
import functools
import os
import warnings

import torch
import torch.nn as nn
import torch.nn.functional as F

from . import spike_storage
from . import spikingjelly_compat as sj
from .errors import BackendError
from .lif_constants import ALPHA, TAU
from .spikingjelly_compat import neuron, surrogate

BACKENDS = ("auto", "torch", "triton", "cupy", "spikingjelly")
NEURONS = ("lif", "ilif")


def cupy_pip_name():
    """The CuPy wheel for the installed torch's CUDA major (torch 2.14 ships CUDA 13: cupy-cuda13x)."""
    cuda = torch.version.cuda
    return f"cupy-cuda{cuda.split('.')[0]}x" if cuda else "cupy-cuda12x"


@functools.lru_cache(maxsize=1)
def cupy_import_error():
    """None when CuPy imports, else the exception it raised (kept whole, not just 'missing')."""
    try:
        import cupy  # noqa: F401
    except Exception as exc:  # a broken CUDA library raises more than ImportError
        return exc
    return None


@functools.lru_cache(maxsize=1)
def triton_import_error():
    try:
        import triton  # noqa: F401
    except Exception as exc:
        return exc
    return None


def triton_interpreted():
    """TRITON_INTERPRET=1 runs Triton kernels on CPU tensors (slowly): how the kernels are tested without a GPU."""
    return os.environ.get("TRITON_INTERPRET") == "1"


def check_backend(backend):
    """Validate a backend name; asking for a kernel whose library is missing is an error here, at build time."""
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if backend == "cupy" and cupy_import_error() is not None:
        err = cupy_import_error()
        raise BackendError(
            f"backend='cupy' needs CuPy, which failed to import: {type(err).__name__}: {err}\n"
            f"Install it with `pip install {cupy_pip_name()}` (the wheel for torch's CUDA {torch.version.cuda}), "
            "or use backend='auto' or 'triton'.") from err
    if backend == "cupy" and sj.cupy_kernel_missing():
        raise BackendError(f"backend='cupy': {sj.cupy_kernel_missing()} (`pip install spikingjelly==0.0.0.0.14`); "
                           "or use backend='auto' or 'triton'")
    if backend == "triton" and triton_import_error() is not None:
        err = triton_import_error()
        raise BackendError(f"backend='triton' needs Triton, which failed to import: {type(err).__name__}: {err}\n"
                           "Install it with `pip install triton`, or use backend='auto' or 'torch'.") from err
    return backend


_triton_failure = []  # the first error a Triton kernel raised under 'auto' (from then on 'auto' runs torch)


def _auto_picks_triton(x):
    # under torch.compile the torch loop is what inductor fuses (C++ on CPU, its own Triton on CUDA)
    return x.is_cuda and not torch.compiler.is_compiling() and triton_import_error() is None


def pick_backend(backend, x):
    """The kernel that runs `x` for the requested backend; 'auto' = the fastest correct one for the tensor."""
    if backend == "auto":
        return "triton" if _auto_picks_triton(x) and not _triton_failure else "torch"
    if backend == "triton" and not (x.is_cuda or triton_interpreted()):
        raise BackendError(f"backend='triton' runs on CUDA tensors, got {x.device} (TRITON_INTERPRET=1 "
                           "runs it on CPU for testing); use backend='auto'")
    if backend == "cupy" and not (x.is_cuda and x.dtype in (torch.float32, torch.float16)):
        raise BackendError(f"backend='cupy' runs on CUDA float32/float16 tensors only, got {x.dtype} on "
                           f"{x.device}; use backend='auto'")
    return backend


# ---------------------------------------------------------------- the lean torch path
# spikingjelly's torch path saves two fp32 tensors per element and step (h - v_th and the reset
# factor) and indexes x_seq[t] under autograd, so its backward builds T full-size zero tensors per
# neuron. Here one autograd node covers all T steps and saves d = h - v_th only: the spike is
# d >= 0 and the surrogate is a function of d. (Not torch.signbit: gcc 12 crashes compiling
# inductor's vectorised signbit.)

def lif_forward_torch(x_seq, v, v_threshold, d_seq=None):
    """Eqs 1-3 over T with fp32 state; `d_seq` (when given) receives h - v_th. Returns spikes, last v.

    In-place where the order of operations allows (it is spikingjelly's, so results stay bitwise equal):
    fewer temporaries per step is most of this path's speed on CPU."""
    spikes = torch.empty_like(x_seq)
    v = torch.zeros_like(x_seq[0], dtype=torch.float32) if v is None else v.float()
    exact_d = d_seq is not None and d_seq.dtype == torch.float32
    for t in range(x_seq.shape[0]):
        h = torch.sub(x_seq[t].float(), v).div_(TAU).add_(v)  # eq 1: v + (x - v) / tau
        d = torch.sub(h, v_threshold, out=d_seq[t]) if exact_d else h - v_threshold
        fired = d >= 0                                      # eq 2 (Heaviside(0) = 1)
        spikes[t] = fired
        if d_seq is not None and not exact_d:  # rounding must not turn a small negative d into -0: "fired"
            d_seq[t] = torch.where(fired, d, d.clamp(max=-torch.finfo(d_seq.dtype).tiny))
        v = h.masked_fill_(fired, 0.0)                      # eq 3: hard reset to 0
    return spikes, v


def lif_backward_torch(d_seq, grad_spikes, grad_v, dtype):
    """Surrogate BPTT from d = h - v_th alone. Returns grad of x_seq (in `dtype`) and of the initial v."""
    grad_x = torch.empty(d_seq.shape, dtype=dtype, device=d_seq.device)
    grad_v = None if grad_v is None else grad_v.float()
    for t in reversed(range(d_seq.shape[0])):
        d = d_seq[t].float()
        sig = torch.sigmoid(d * ALPHA)
        grad_h = sj.sigmoid_surrogate_grad(grad_spikes[t], sig, ALPHA)
        if grad_v is not None:
            grad_h.add_(torch.where(d < 0, grad_v, 0.0))  # dv/dh = 1 - s, reset detached
        grad_x_t = grad_h / TAU
        grad_x[t] = grad_x_t
        grad_v = grad_h.sub_(grad_x_t)  # dh/dv = 1 - 1/tau, as autograd computes it for eq 1
    return grad_x, grad_v


class LIFFunction(torch.autograd.Function):
    """Multi-step LIF as one autograd node; `kernels` = (forward, backward), the torch or Triton pair."""

    @staticmethod
    def forward(ctx, x_seq, v_init, v_threshold, d_dtype, kernels):
        # spike storage 'lean': x is recomputed in backward anyway, so keep it (as its recipe) and rerun the
        # forward kernel there instead of keeping d (models/spike_storage.py)
        ctx.recompute = spike_storage.recomputed_in_backward(x_seq)
        d_seq = None if ctx.recompute else torch.empty(x_seq.shape, dtype=d_dtype, device=x_seq.device)
        spikes, v = kernels[0](x_seq, v_init, v_threshold, d_seq)
        ctx.save_for_backward(*((x_seq, v_init) if ctx.recompute else (d_seq,)))
        ctx.kernels, ctx.v_threshold, ctx.d_dtype = kernels, v_threshold, d_dtype
        ctx.x_dtype = x_seq.dtype
        ctx.set_materialize_grads(False)
        return spikes, v

    @staticmethod
    def backward(ctx, grad_spikes, grad_v):
        if ctx.recompute:
            x_seq, v_init = ctx.saved_tensors
            d_seq = torch.empty(x_seq.shape, dtype=ctx.d_dtype, device=x_seq.device)
            ctx.kernels[0](x_seq, v_init, ctx.v_threshold, d_seq)
            del x_seq, v_init  # free the recomputed input before the backward kernel allocates
        else:
            (d_seq,) = ctx.saved_tensors
        if grad_spikes is None:
            grad_spikes = torch.zeros(d_seq.shape, dtype=ctx.x_dtype, device=d_seq.device)
        grad_x, grad_v_init = ctx.kernels[1](d_seq, grad_spikes, grad_v, ctx.x_dtype)
        return grad_x, grad_v_init if ctx.needs_input_grad[1] else None, None, None, None


def _kernels(backend):
    if backend == "triton":
        from . import lif_triton
        return lif_triton.lif_forward_triton, lif_triton.lif_backward_triton
    return lif_forward_torch, lif_backward_torch


def _or_torch(kernel, torch_kernel):
    """`kernel`, unless it fails (a Triton compile or launch error): then one warning naming the
    error, and the torch kernel (same contract) for this call and every later one under 'auto'."""
    def run(*args):
        if not _triton_failure:
            try:
                return kernel(*args)
            except Exception as exc:  # Triton's compile, resource and driver errors share no base class
                _triton_failure.append(exc)
                warnings.warn(f"backend 'auto': the Triton LIF kernel failed ({type(exc).__name__}: {exc}); the "
                              "torch kernel runs instead from now on (backend='triton' raises the error)",
                              RuntimeWarning, stacklevel=2)
        return torch_kernel(*args)
    return run


def lif_multistep(x_seq, v_threshold=1.0, v_init=None, backend="torch", d_dtype=None, fallback=False):
    """Spikes [T, ...] (x's dtype) and the last membrane potential (fp32) of eqs 1-3, from rest or `v_init`.

    backend: 'torch' or 'triton'. d_dtype: storage of h - v_th for backward; default the input's
    dtype (fp32 for fp32 input, so gradients match spikingjelly's; half the bytes under AMP).
    fallback: a Triton kernel that fails runs the torch one instead (backend 'auto').
    """
    forward, backward = _kernels(backend)
    if fallback and backend == "triton":
        forward, backward = _or_torch(forward, lif_forward_torch), _or_torch(backward, lif_backward_torch)
    needs_grad = torch.is_grad_enabled() and (x_seq.requires_grad or (v_init is not None and v_init.requires_grad))
    if not needs_grad:  # inference: nothing to save
        return forward(x_seq, v_init, v_threshold, None)
    return LIFFunction.apply(x_seq, v_init, v_threshold, d_dtype or x_seq.dtype, (forward, backward))


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


def describe():
    """Backend, devices and versions, as `python -m models` prints them."""
    import numpy
    lines = [f"torch {torch.__version__} (CUDA {torch.version.cuda}), numpy {numpy.__version__}, "
             f"spikingjelly {sj.VERSION}"]
    err = triton_import_error()
    lines.append("triton " + (__import__("triton").__version__ if err is None else f"missing ({err})")
                 + (" [TRITON_INTERPRET=1: kernels run on CPU]" if triton_interpreted() else ""))
    err = cupy_import_error()
    lines.append("cupy " + (__import__("cupy").__version__ if err is None else
                            f"missing: `pip install {cupy_pip_name()}` for backend='cupy'")
                 + (f" ({sj.cupy_kernel_missing()})" if sj.cupy_kernel_missing() else ""))
    devices = ["cpu"] + [f"cuda:{i} {torch.cuda.get_device_name(i)}" for i in range(torch.cuda.device_count())]
    for dev in devices:
        x = torch.zeros(1, device=dev.split()[0])
        lines.append(f"{dev}: backend='auto' runs {pick_backend('auto', x)!r}")
    return "\n".join(lines)
