"""Neuron backends and the integer LIF."""
import pytest
import torch
from spikingjelly.activation_based import functional

import models
from models import neurons

from conftest import tiny_input, tiny_model

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
cupy = pytest.mark.skipif(neurons.cupy_import_error() is not None, reason="needs CuPy")


def test_auto_backend_runs_torch_on_cpu():
    lif = models.LIF(backend="auto")
    lif(torch.rand(2, 3, 4))
    assert lif.backend == "torch"


def test_asking_for_cupy_without_it_names_the_package_and_the_real_error(monkeypatch):
    real_error = OSError("libnvrtc.so.12: cannot open shared object file: No such file or directory")
    monkeypatch.setattr(neurons, "cupy_import_error", lambda: real_error)
    with pytest.raises(RuntimeError) as err:
        models.LIF(backend="cupy")
    message = str(err.value)
    assert "pip install cupy-cuda12x" in message
    assert "libnvrtc.so.12" in message and "OSError" in message


def test_unknown_backend_is_rejected():
    with pytest.raises(ValueError, match="backend must be one of"):
        models.LIF(backend="triton")


@cuda
@cupy
def test_cupy_backend_matches_torch_spikes_and_gradients():
    torch.manual_seed(0)
    x = (torch.randn(4, 8, 64, device="cuda") * 2).requires_grad_()
    results = []
    for backend in ("torch", "cupy"):
        lif = models.LIF(backend=backend).train()
        functional.reset_net(lif)
        x.grad = None
        spikes = lif(x)
        spikes.backward(torch.linspace(-1, 1, spikes.numel(), device="cuda").view_as(spikes))
        results.append((spikes.detach(), x.grad.clone()))
    assert torch.equal(results[0][0], results[1][0])
    torch.testing.assert_close(results[0][1], results[1][1], atol=1e-6, rtol=1e-5)


@cuda
@cupy
def test_model_on_cuda_uses_cupy_and_matches_torch():
    model = tiny_model("cifar", backend="auto").cuda().train()
    x = tiny_input("cifar").cuda()
    auto = model(x)
    for m in model.modules():
        if isinstance(m, models.LIF):
            assert m.backend == "cupy"
            m.requested_backend = "torch"
    torch_out = model(x)
    for a, b in zip(auto, torch_out):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=0)


def test_ilif_model_trains_with_integer_spikes(stem):
    model = tiny_model(stem, neuron="ilif").train()
    assert not any(isinstance(m, models.LIF) for m in model.modules())
    levels = set()
    model.stages[0].downsample.convs[0].lif.register_forward_hook(lambda m, i, o: levels.update(o.unique().tolist()))
    out = model(tiny_input(stem))
    models.SpiLiFormerLoss()(out, torch.tensor([0, 1, 2])).backward()
    assert levels <= {0.0, 1.0, 2.0, 3.0, 4.0} and max(levels) > 1  # integers, not only binary
    assert all(p.grad is not None for p in model.parameters())


def test_ilif_spike_expanded_inference_equals_integer_form(stem):
    """Each integer I-LIF output run as D binary sub-steps through the next layer gives the same logits."""
    model = tiny_model(stem, neuron="ilif", T=1).eval().double()
    x = tiny_input(stem).double()
    with torch.no_grad():
        integer_form = model(x)
        expanded = []
        hook = lambda m, i, o: expanded.append(i[0].max().item())  # noqa: E731
        handle = model.stages[-1].blocks[0].mlp.fc2.conv.register_forward_hook(hook)
        with models.spike_expanded_inference(model):
            spike_form = model(x)
        handle.remove()
    assert max(expanded) > 1, "the test must exercise counts above 1"
    torch.testing.assert_close(spike_form, integer_form, atol=1e-9, rtol=0)


def test_expand_spikes_is_binary_and_sums_back():
    counts = torch.tensor([[0.0, 1.0], [3.0, 4.0]])
    planes = models.expand_spikes(counts, levels=4)
    assert planes.shape == (4, 2, 2)
    assert set(planes.unique().tolist()) <= {0.0, 1.0}
    assert torch.equal(planes.sum(0), counts)


def test_eval_mode_gives_surrogate_gradients_and_the_same_spikes(stem):
    model = tiny_model(stem).eval()
    x = tiny_input(stem).requires_grad_()
    with torch.no_grad():
        reference = model(x)
    logits = model(x)
    torch.testing.assert_close(logits, reference, atol=1e-6, rtol=0)
    logits.sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
