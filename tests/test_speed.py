"""Speed and memory conventions: timm's grad checkpointing, torch.compile, the benchmark's output."""
import json
import subprocess
import sys

import torch

import models
from models import lif_backends

from conftest import ROOT, tiny_input, tiny_model


def train_step(model, x):
    out = model(x, passes=True)
    models.SpiLiFormerLoss()(out, torch.tensor([0, 1, 2])).backward()
    return out, {n: p.grad for n, p in model.named_parameters()}


def test_grad_checkpointing_gives_the_same_logits_and_gradients():
    stem = "imagenet"  # several blocks, both passes, feedback
    x = tiny_input(stem)
    plain_model = tiny_model(stem).train()
    plain = train_step(plain_model, x)
    model = tiny_model(stem).train()
    model.set_grad_checkpointing()
    checkpointed = train_step(model, x)
    for a, b in zip(checkpointed[0], plain[0]):
        assert torch.equal(a, b)
    for n, g in plain[1].items():
        torch.testing.assert_close(checkpointed[1][n], g, atol=1e-6, rtol=1e-5, msg=lambda m: f"{n}: {m}")
    # the recomputation in backward does not count the batch a second time in BN's statistics
    plain_bn, checkpointed_bn = plain_model.state_dict(), model.state_dict()
    for n, v in plain_bn.items():
        torch.testing.assert_close(checkpointed_bn[n], v, atol=1e-6, rtol=1e-5, msg=lambda m: f"{n}: {m}")


def test_compiled_lif_matches_eager_without_recompiling_per_shape():
    """One compiled kernel serves every neuron shape (dynamic=True): no recompilation storm."""
    torch._dynamo.reset()
    compiled = torch.compile(lif_backends.lif_multistep, dynamic=True)
    counter = torch._dynamo.utils.counters
    counter.clear()
    for shape in [(4, 2, 8, 16), (4, 3, 5, 7), (4, 1, 33)]:
        x = (torch.randn(shape) * 1.5 + 1).requires_grad_()
        s, v = compiled(x, 1.0)
        s.sum().backward()
        ref_x = x.detach().clone().requires_grad_()
        ref_s, ref_v = lif_backends.lif_multistep(ref_x, 1.0)
        ref_s.sum().backward()
        assert torch.equal(s, ref_s) and torch.equal(v, ref_v)
        torch.testing.assert_close(x.grad, ref_x.grad, atol=1e-6, rtol=1e-6)
    assert counter["stats"]["unique_graphs"] <= 2  # the 4-d and 3-d cases at most


def test_benchmark_compare_writes_one_json_object_keyed_by_configuration(tmp_path):
    out = tmp_path / "bench.json"
    subprocess.run([sys.executable, "tools/benchmark.py", "--embed-dim", "64", "-b", "1", "-T", "1",
                    "--device", "cpu", "--compare", "--warmup", "0", "--repeats", "1",
                    "--json", str(out)], cwd=ROOT, check=True, capture_output=True, text=True)
    results = json.loads(out.read_text())
    assert set(results) == {"straight", "qkformer", "fast"}
    assert results["straight"]["config"]["backend"] == "spikingjelly"
    assert results["fast"]["config"]["backend"] == "auto" and results["fast"]["config"]["compile"] == "none"
    assert not results["qkformer"]["config"]["ff_lidiff"] and not results["qkformer"]["config"]["fb_lidiff"]
    for r in results.values():
        assert r["train_img_s"] > 0 and r["eval_img_s"] > 0 and r["peak_mem_mb"] > 0
