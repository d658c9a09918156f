"""Every LIF kernel against spikingjelly's own multi-step LIFNode (the reference): the same spikes,
the same last membrane potential, gradients within 1e-6 in float32.

Triton runs on CUDA, or on CPU under TRITON_INTERPRET=1 (test_neurons.py runs this file that way
in a subprocess: the variable must be set before Triton is imported).
"""
import pytest
import torch
from spikingjelly.activation_based import functional

from models import lif_backends
from models import spikingjelly_compat as sj
from models.neurons import LIF

pytestmark = pytest.mark.spikingjelly

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def runnable(backend):
    if backend == "triton":
        return lif_backends.triton_import_error() is None and (DEVICE == "cuda" or lif_backends.triton_interpreted())
    if backend == "cupy":
        return DEVICE == "cuda" and lif_backends.cupy_import_error() is None and sj.cupy_kernel_missing() is None
    return True


KERNELS = [pytest.param(b, marks=pytest.mark.skipif(not runnable(b), reason=f"{b} cannot run here"))
           for b in ("torch", "triton", "cupy")]


def lif_input(T, v_threshold, shape=(3, 7, 11), seed=0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(T, *shape, generator=g) * 1.5 + v_threshold
    x.view(T, -1)[0, :5] = 2 * v_threshold  # h = v_th exactly at t = 0: Heaviside(0) fires
    return x.to(DEVICE, dtype)


def run(backend, x, grad, v_threshold, train=True, calls=1):
    """Spikes, grad of x and last v after `calls` calls on chunks of x (state carried between calls)."""
    lif = LIF(v_threshold, backend=backend).train(train).to(x.device)
    functional.reset_net(lif)
    x = x.detach().clone().requires_grad_()
    spikes = torch.cat([lif(chunk) for chunk in x.chunk(calls)])
    (spikes * grad).sum().backward()
    return spikes.detach(), x.grad, lif.v.detach()


@pytest.mark.parametrize("backend", KERNELS)
@pytest.mark.parametrize("T", [1, 4, 16])
@pytest.mark.parametrize("v_threshold", [1.0, 0.5])
def test_kernel_matches_spikingjelly(backend, T, v_threshold):
    x = lif_input(T, v_threshold)
    grad = torch.randn(x.shape, generator=torch.Generator().manual_seed(1)).to(DEVICE)
    ref_spikes, ref_grad, ref_v = run("spikingjelly", x, grad, v_threshold)
    spikes, x_grad, v = run(backend, x, grad, v_threshold)
    assert ref_spikes.float().mean() > 0.05, "the test must make neurons fire"
    assert torch.equal(spikes, ref_spikes)
    assert torch.equal(v, ref_v)
    torch.testing.assert_close(x_grad, ref_grad, atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("backend", KERNELS)
def test_kernel_carries_state_between_calls_like_spikingjelly(backend):
    """Without reset_net, a second call starts from the first call's v, and gradients flow back through it."""
    x = lif_input(8, 1.0, shape=(5, 3))
    grad = torch.randn(x.shape, generator=torch.Generator().manual_seed(2)).to(DEVICE)
    ref = run("spikingjelly", x, grad, 1.0, calls=2)
    out = run(backend, x, grad, 1.0, calls=2)
    assert torch.equal(out[0], ref[0]) and torch.equal(out[2], ref[2])
    torch.testing.assert_close(out[1], ref[1], atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("backend", KERNELS)
def test_eval_mode_kernel_gives_the_same_spikes_and_surrogate_gradients(backend):
    x = lif_input(4, 0.5)
    grad = torch.ones(x.shape, device=DEVICE)
    ref = run("spikingjelly", x, grad, 0.5, train=False)
    out = run(backend, x, grad, 0.5, train=False)
    assert torch.equal(out[0], ref[0])
    torch.testing.assert_close(out[1], ref[1], atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("backend", [p for p in KERNELS if p.values[0] != "cupy"])
def test_d_in_half_precision_keeps_spikes_and_gradients_close(backend):
    """d = h - v_th stored in fp16 (what AMP's fp16 input gets): a small negative d must not round to a spike."""
    x = lif_input(4, 0.5)
    x.view(4, -1)[0, 5:10] = 1 - 2 ** -24  # h = 0.5 - 2^-25 at t = 0: d = -2^-25 rounds to -0 in fp16
    grad = torch.randn(x.shape, generator=torch.Generator().manual_seed(3)).to(DEVICE)
    spikes, v = {}, {}
    grads = {}
    for dtype in (torch.float32, torch.float16):
        xr = x.clone().requires_grad_()
        s, v[dtype] = lif_backends.lif_multistep(xr, 0.5, backend=backend, d_dtype=dtype)
        (s * grad).sum().backward()
        spikes[dtype], grads[dtype] = s.detach(), xr.grad
    assert torch.equal(spikes[torch.float16], spikes[torch.float32])
    rel = (grads[torch.float16] - grads[torch.float32]).norm() / grads[torch.float32].norm()
    assert rel < 1e-3
    # the five neurons that did not fire pass the reset path's gradient through (dv/dh = 1): not zeroed
    reference = run("spikingjelly", x, grad, 0.5)[1]
    torch.testing.assert_close(grads[torch.float16].view(4, -1)[0, 5:10], reference.view(4, -1)[0, 5:10],
                               atol=1e-3, rtol=1e-3)


@CUDA
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_triton_matches_the_torch_kernel_under_amp_dtypes(dtype):
    """Both keep fp32 state and store d in the input's dtype: identical spikes, gradients to rounding."""
    x = lif_input(4, 1.0, shape=(64, 333), dtype=dtype)
    grad = torch.randn(x.shape, device=DEVICE, dtype=dtype)
    out = {}
    for backend in ("torch", "triton"):
        xr = x.clone().requires_grad_()
        s, v = lif_backends.lif_multistep(xr, 1.0, backend=backend)
        (s * grad).sum().backward()
        assert s.dtype == dtype and xr.grad.dtype == dtype
        out[backend] = (s, v, xr.grad)
    assert torch.equal(out["torch"][0], out["triton"][0])
    assert torch.equal(out["torch"][1], out["triton"][1])
    torch.testing.assert_close(out["torch"][2], out["triton"][2], atol=1e-2, rtol=1e-2)


@CUDA
@pytest.mark.skipif(not runnable("cupy"), reason="needs CuPy and spikingjelly 0.0.0.0.14")
def test_cupy_kernel_runs_in_float16():
    x = lif_input(4, 1.0, shape=(64, 333), dtype=torch.float16)
    ref = run("spikingjelly", x.float(), torch.ones(x.shape, device=DEVICE), 1.0)
    out = run("cupy", x, torch.ones(x.shape, device=DEVICE, dtype=torch.float16), 1.0)
    assert (out[0].float() != ref[0]).float().mean() < 1e-3  # the library's half2 kernel keeps fp16 state
