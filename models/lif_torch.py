"""The multi-step LIF (eqs 1-3) as two torch loops over T: the lean torch path.

spikingjelly's torch path saves two fp32 tensors per element and step (h - v_th and the reset
factor) and indexes x_seq[t] under autograd, so its backward builds T full-size zero tensors per
neuron. Here one autograd node (models.lif_backends.LIFFunction) covers all T steps and saves
d = h - v_th only: the spike is d >= 0 and the surrogate is a function of d. (Not torch.signbit:
gcc 12 crashes compiling inductor's vectorised signbit.)
"""
import torch

from . import spikingjelly_compat as sj
from .lif_constants import ALPHA, TAU


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
