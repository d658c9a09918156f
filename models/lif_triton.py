"""The multi-step LIF (eqs 1-3) as two Triton kernels: one pass over T forward, one backward.

Each program owns BLOCK neurons and walks the T steps with the membrane potential in fp32
registers, so x is read once, spikes and d = h - v_th written once (forward), d and the spike
gradient read once and the input gradient written once (backward): the minimum traffic.
Input/output in fp32, fp16 or bf16; d in the dtype the caller allocates (models.lif_backends: the
input's). Under TRITON_INTERPRET=1 the same kernels run on CPU tensors (how CI checks them).
"""
import torch
import triton
import triton.language as tl

from .lif_constants import ALPHA, TAU

BLOCK = 1024


@triton.jit
def _lif_fwd_kernel(x_ptr, v0_ptr, s_ptr, d_ptr, v_ptr, T, N, v_th, tau, d_max,
                    HAS_V0: tl.constexpr, STORE_D: tl.constexpr, BLOCK: tl.constexpr):
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < N
    if HAS_V0:
        v = tl.load(v0_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    else:
        v = tl.zeros([BLOCK], dtype=tl.float32)
    i = offs  # int64; stepping by N keeps t * N from overflowing int32 on large tensors
    for t in range(T):
        x = tl.load(x_ptr + i, mask=mask, other=0.0).to(tl.float32)
        h = v + (x - v) / tau               # eq 1
        d = h - v_th
        fired = d >= 0.0                    # eq 2
        tl.store(s_ptr + i, fired.to(s_ptr.dtype.element_ty), mask=mask)
        if STORE_D:  # d_max < 0 keeps a small negative d from rounding to -0 ("fired") in fp16/bf16
            tl.store(d_ptr + i, tl.where(fired, d, tl.minimum(d, d_max)).to(d_ptr.dtype.element_ty), mask=mask)
        v = tl.where(fired, 0.0, h)         # eq 3: hard reset to 0
        i += N
    tl.store(v_ptr + offs, v, mask=mask)


@triton.jit
def _lif_bwd_kernel(d_ptr, gs_ptr, gv_ptr, gx_ptr, gv0_ptr, T, N, last, tau, alpha,
                    HAS_GV: tl.constexpr, BLOCK: tl.constexpr):
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < N
    if HAS_GV:
        gv = tl.load(gv_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    else:
        gv = tl.zeros([BLOCK], dtype=tl.float32)
    i = offs + last  # last = (T - 1) * N, computed on the host in 64 bits
    for k in range(T):
        d = tl.load(d_ptr + i, mask=mask, other=0.0).to(tl.float32)
        gs = tl.load(gs_ptr + i, mask=mask, other=0.0).to(tl.float32)
        sig = tl.sigmoid(d * alpha)
        gh = gs * (1.0 - sig) * sig * alpha + tl.where(d < 0.0, gv, 0.0)  # the spike is d >= 0
        tl.store(gx_ptr + i, (gh / tau).to(gx_ptr.dtype.element_ty), mask=mask)
        gv = gh - gh / tau
        i -= N
    tl.store(gv0_ptr + offs, gv, mask=mask)


def _grid(n):
    return (triton.cdiv(n, BLOCK),)


def lif_forward_triton(x_seq, v, v_threshold, d_seq=None):
    """Same contract as models.lif_torch.lif_forward_torch."""
    x = x_seq.contiguous()
    T, N = x.shape[0], x[0].numel()
    spikes = torch.empty_like(x)
    v_last = torch.empty(x.shape[1:], dtype=torch.float32, device=x.device)
    v0 = v.float().contiguous() if v is not None else v_last  # v_last is a placeholder, never read
    d = d_seq if d_seq is not None else spikes                # placeholder, never written
    if N:
        d_max = -torch.finfo(d.dtype).tiny if d.dtype != torch.float32 else 0.0
        _lif_fwd_kernel[_grid(N)](x, v0, spikes, d, v_last, T, N, float(v_threshold), TAU, d_max,
                                  HAS_V0=v is not None, STORE_D=d_seq is not None, BLOCK=BLOCK)
    return spikes, v_last


def lif_backward_triton(d_seq, grad_spikes, grad_v, dtype):
    """Same contract as models.lif_torch.lif_backward_torch."""
    grad_spikes = grad_spikes.contiguous()
    T, N = d_seq.shape[0], d_seq[0].numel()
    grad_x = torch.empty(d_seq.shape, dtype=dtype, device=d_seq.device)
    grad_v0 = torch.empty(d_seq.shape[1:], dtype=torch.float32, device=d_seq.device)
    gv = grad_v.float().contiguous() if grad_v is not None else grad_v0
    if N:
        _lif_bwd_kernel[_grid(N)](d_seq, grad_spikes, gv, grad_x, grad_v0, T, N, (T - 1) * N, TAU, ALPHA,
                                  HAS_GV=grad_v is not None, BLOCK=BLOCK)
    return grad_x, grad_v0


def aot_variants(dtype):
    """(kernel, signature, constexprs) of every kernel above for data in `dtype` ('fp32', 'fp16' or
    'bf16'; membrane state and v gradients in fp32), with each constexpr branch and 32/64-bit
    sizes covered across the dtypes: what tests/test_triton_aot.py compiles for real GPUs on a
    machine without one (triton.compile(ASTSource(...), target=GPUTarget('cuda', 80|90, 32)))."""
    turn = ("fp32", "fp16", "bf16").index(dtype)
    size = "i64" if turn == 2 else "i32"  # Triton passes a size >= 2**31 as i64
    data, state = f"*{dtype}", "*fp32"
    forward = dict(x_ptr=data, v0_ptr=state, s_ptr=data, d_ptr=data, v_ptr=state, T="i32", N=size,
                   v_th="fp32", tau="fp32", d_max="fp32", HAS_V0="constexpr", STORE_D="constexpr", BLOCK="constexpr")
    backward = dict(d_ptr=data, gs_ptr=data, gv_ptr=state, gx_ptr=data, gv0_ptr=state, T="i32", N=size, last="i64",
                    tau="fp32", alpha="fp32", HAS_GV="constexpr", BLOCK="constexpr")
    return [(_lif_fwd_kernel, forward, dict(HAS_V0=turn > 0, STORE_D=turn < 2, BLOCK=BLOCK)),
            (_lif_bwd_kernel, backward, dict(HAS_GV=turn != 1, BLOCK=BLOCK))]
