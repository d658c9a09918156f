"""spikingjelly 0.0.0.0.14's CuPy LIF kernel, made to run on NumPy 2.

The library's kernels check argument types with `dtype == np.int` (`auto_cuda/base.py`), an alias
NumPy 1.24 removed, so every call raises AttributeError on the NumPy 2 that the CUDA 13 CuPy
wheels require. The two kernel classes below replace only that check (with `np.integer`); the
installed package and NumPy's namespace stay untouched. Numerics are the library's.
"""
import numpy as np
import torch
from spikingjelly.activation_based.auto_cuda import neuron_kernel


def _check_ctypes(kernel, py_dict):
    """spikingjelly's CKernel.check_ctypes with np.int -> np.integer (same assertions otherwise)."""
    import cupy
    for key, value in py_dict.items():
        ctype = kernel.cparams[key]
        if isinstance(value, (torch.Tensor, cupy.ndarray)):
            if value.dtype in (torch.float, np.float32):
                assert ctype.startswith(("const float", "float")), (key, ctype)
            elif value.dtype in (torch.half, np.float16):
                assert ctype.startswith(("const half2", "half2")), (key, ctype)
            elif isinstance(value, cupy.ndarray) and np.issubdtype(value.dtype, np.integer):
                assert ctype.startswith(("const int", "int")), (key, ctype)


class LIFForwardKernel(neuron_kernel.LIFNodeFPTTKernel):
    check_ctypes = _check_ctypes


class LIFBackwardKernel(neuron_kernel.LIFNodeBPTTKernel):
    check_ctypes = _check_ctypes


_KERNELS = {}


def _kernels(lif, dtype):
    """One compiled pair per (dtype, threshold-independent settings), shared by all neurons."""
    if dtype not in _KERNELS:
        _KERNELS[dtype] = (
            LIFForwardKernel(decay_input=True, hard_reset=True, dtype=dtype),
            LIFBackwardKernel(decay_input=True, surrogate_function=lif.surrogate_function.cuda_codes,
                              hard_reset=True, detach_reset=True, dtype=dtype))
    return _KERNELS[dtype]


def lif_cupy(lif, x_seq):
    """Spikes and last v of `lif` (a models.neurons.LIF) on CUDA float32/float16 `x_seq`, as LIFNode does."""
    dtype = "float" if x_seq.dtype == torch.float32 else "half2"
    forward, backward = _kernels(lif, dtype)
    v = lif.v.to(x_seq.dtype) if isinstance(lif.v, torch.Tensor) else torch.full_like(x_seq[0], lif.v)
    spikes, v_seq = neuron_kernel.LIFNodeATGF.apply(x_seq.flatten(1), v.flatten(0), lif.v_threshold, lif.v_reset,
                                                    1.0 / lif.tau, forward, backward)
    return spikes.reshape(x_seq.shape), v_seq[-1].reshape(x_seq.shape[1:])
