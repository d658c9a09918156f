"""GPU readiness without a GPU: every Triton kernel of the project compiles ahead of time for real
GPUs (sm_80 and sm_90; PTX through ptxas, which ships in Triton's wheel), in fp32, fp16 and bf16.
TRITON_INTERPRET=1 (how the kernels' numbers are tested on CPU) accepts code that the compiler
rejects; this catches that. And under backend 'auto' a kernel that fails falls back to torch."""
import importlib
import warnings

import pytest
import torch

from models import lif_backends, neurons

triton = pytest.importorskip("triton")
from triton.backends.compiler import GPUTarget  # noqa: E402
from triton.compiler import ASTSource  # noqa: E402

TRITON_MODULES = ["models.lif_triton"]  # every module that holds @triton.jit kernels


def kernels_of(module):
    return {name for name, obj in vars(module).items() if isinstance(obj, triton.runtime.jit.JITFunction)}


@pytest.mark.parametrize("arch", [80, 90])
@pytest.mark.parametrize("dtype", ["fp32", "fp16", "bf16"])
def test_every_triton_kernel_compiles_for_sm80_and_sm90(arch, dtype):
    for module_name in TRITON_MODULES:
        module = importlib.import_module(module_name)
        variants = module.aot_variants(dtype)
        assert {fn.__name__ for fn, _, _ in variants} == kernels_of(module), \
            f"{module_name}.aot_variants must list every kernel of the module"
        for fn, signature, constexprs in variants:
            compiled = triton.compile(ASTSource(fn=fn, signature=signature, constexprs=constexprs),
                                      target=GPUTarget("cuda", arch, 32))
            assert compiled.asm["cubin"], f"{fn.__name__}: no cubin for sm_{arch}"


def test_a_failing_triton_kernel_falls_back_to_torch_under_auto_with_one_warning(monkeypatch):
    from models import lif_triton

    def broken(*args):
        raise RuntimeError("PTX assembly failed (forced by the test)")

    monkeypatch.setattr(lif_backends, "_auto_picks_triton", lambda x: True)  # as 'auto' does on CUDA
    monkeypatch.setattr(lif_backends, "_triton_failure", [])
    monkeypatch.setattr(lif_triton, "lif_forward_triton", broken)
    x = (torch.randn(4, 3, 5) + 1).requires_grad_()
    reference = lif_backends.lif_multistep(x.detach(), 1.0, backend="torch")[0]
    lif = neurons.LIF(backend="auto")
    with pytest.warns(RuntimeWarning, match="PTX assembly failed") as caught:
        first = lif(x)
        lif.reset()
        second = lif(x)
    assert len([w for w in caught if issubclass(w.category, RuntimeWarning)]) == 1
    assert torch.equal(first, reference) and torch.equal(second, reference)
    first.sum().backward()  # the torch backward serves the torch forward's saved state
    assert x.grad is not None


def test_an_explicit_triton_backend_still_fails_loudly(monkeypatch):
    from models import lif_triton

    def broken(*args):
        raise RuntimeError("PTX assembly failed (forced by the test)")

    monkeypatch.setenv("TRITON_INTERPRET", "1")  # lets backend='triton' take a CPU tensor
    monkeypatch.setattr(lif_backends, "_triton_failure", [])
    monkeypatch.setattr(lif_triton, "lif_forward_triton", broken)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(RuntimeError, match="PTX assembly failed"):
            neurons.LIF(backend="triton")(torch.randn(4, 3, 5))
