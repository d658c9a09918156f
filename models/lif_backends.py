"""Which LIF kernel runs, and running it: the backends' names, whether their libraries import, the
kernel `auto` picks for a tensor, the chosen (forward, backward) pair as one autograd node with the
torch fallback under `auto`, and the report `python -m models` prints.

Kernels: models/lif_torch.py (the lean torch path), models/lif_triton.py (fused, CUDA), and
models/lif_cupy.py (spikingjelly 0.0.0.0.14's, called from models.neurons.LIF).
"""
import functools
import os
import warnings

import torch

from . import spike_storage
from . import spikingjelly_compat as sj
from .errors import BackendError
from .lif_torch import lif_backward_torch, lif_forward_torch

BACKENDS = ("auto", "torch", "triton", "cupy", "spikingjelly")


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


def lif_kernels(backend):
    """The (forward, backward) kernel pair of 'torch' or 'triton' (models/lif_torch.py's contract)."""
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
    forward, backward = lif_kernels(backend)
    if fallback and backend == "triton":
        forward, backward = _or_torch(forward, lif_forward_torch), _or_torch(backward, lif_backward_torch)
    needs_grad = torch.is_grad_enabled() and (x_seq.requires_grad or (v_init is not None and v_init.requires_grad))
    if not needs_grad:  # inference: nothing to save
        return forward(x_seq, v_init, v_threshold, None)
    return LIFFunction.apply(x_seq, v_init, v_threshold, d_dtype or x_seq.dtype, (forward, backward))


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
