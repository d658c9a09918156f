"""The two spikingjelly versions this project runs on, and all that differs between them for it.

0.0.0.0.14 is the version behind the official QKFormer code (and its reference data in tests/data);
2.0.x is what `pip install spikingjelly` gives since 2026-10. For this project they differ in:

- `neuron.LIFNode` takes `backend` ('torch' | 'cupy') in 0.0.0.0.14 and runs its torch path through
  `BaseNode` (jit-scripted kernels in eval mode); 2.0 has no `backend` argument and runs every LIF
  through `functional.lif_multi_step`, which chooses its kernel from the tensor's device.
- `functional.set_backend` and the CuPy kernels (`auto_cuda`) exist in 0.0.0.0.14 only.
- The AEDAT header parser is `cifar10_dvs.skip_header` in 0.0.0.0.14, `_skip_header` in 2.0.
- The surrogate gradient's products are grouped differently: 0.0.0.0.14 computes
  ((grad * (1 - sig)) * sig) * alpha, 2.0 grad * ((1 - sig) * sig * alpha); our LIF groups them as
  the installed version does (`sigmoid_surrogate_grad`), so its spikes, membrane potentials and
  gradients equal that version's LIFNode bit for bit (docs/decisions.md, S2).

Everything else the project uses (`surrogate.Sigmoid`, `functional.reset_net`, `load_ATIS_bin` and
`integrate_events_by_fixed_frames_number` in `spikingjelly.datasets`) has the same name and results.
"""
import warnings
from importlib.metadata import version

import torch

VERSION = version("spikingjelly")
IS_V2 = int(VERSION.split(".")[0]) >= 2

with warnings.catch_warnings():  # 0.0.0.0.14 scripts its eval kernels with torch.jit: torch 2.x warns at import
    warnings.filterwarnings("ignore", message=".*torch.jit.script.*is deprecated", category=FutureWarning)
    from spikingjelly.activation_based import functional, neuron, surrogate  # noqa: F401

# what LIFNode's constructor needs beyond the neuron's parameters: 0.0.0.0.14 wants its torch path named
LIF_NODE_BACKEND = {} if IS_V2 else {"backend": "torch"}


def lif_node_forward(lif, x_seq):
    """spikingjelly's own multi-step `LIFNode` forward on `lif` (a LIFNode subclass): the reference path."""
    if IS_V2:
        return neuron.LIFNode.multi_step_forward(lif, x_seq)
    lif.v_float_to_tensor(x_seq[0])
    if lif.training:
        return neuron.BaseNode.multi_step_forward(lif, x_seq)
    if torch.is_grad_enabled() and x_seq.requires_grad:
        # 0.0.0.0.14's eval kernels have no backward; attacks need eval-mode surrogate gradients
        return torch.stack([neuron.BaseNode.single_step_forward(lif, x) for x in x_seq])
    spikes, lif.v = lif.jit_eval_multi_step_forward_hard_reset_decay_input(
        x_seq, lif.v, lif.v_threshold, lif.v_reset, lif.tau)
    return spikes


def cupy_kernel_missing():
    """None where spikingjelly ships the CuPy LIF kernel (0.0.0.0.14), else a line saying it does not."""
    if IS_V2:
        return f"spikingjelly {VERSION} has no CuPy LIF kernel, 0.0.0.0.14 has"
    return None


def aedat_header_size(f):
    """Bytes of the '#' header lines an AEDAT file opened in `f` starts with (spikingjelly's parser)."""
    from spikingjelly.datasets import cifar10_dvs
    skip_header = cifar10_dvs._skip_header if IS_V2 else cifar10_dvs.skip_header
    return skip_header(f)


def sigmoid_surrogate_grad(grad, sig, alpha):
    """The sigmoid surrogate's backward, grad x (1 - sig) x sig x alpha, grouped as the installed version
    groups it (in place on a new tensor), so that our LIF's gradients equal its LIFNode's bit for bit."""
    if IS_V2:
        return torch.rsub(sig, 1.0).mul_(sig).mul_(alpha).mul_(grad)
    return torch.rsub(sig, 1.0).mul_(grad).mul_(sig).mul_(alpha)
