"""Spike storage (models/spike_storage.py): spikes kept as bits, BN's input recomputed; the same
gradients as autograd's own storage, bit for bit in float32."""
import pytest
import timm
import torch

import models
from models import spike_storage
from models.neurons import ILIF, LIF

from conftest import TINY, tiny_input, tiny_model


def train_step(model, x, storage, **autocast):
    model.spike_storage = storage
    with torch.autocast("cpu", **autocast) if autocast else torch.autocast("cpu", enabled=False):
        out = model(x, passes=True)
        loss = models.SpiLiFormerLoss()(out, torch.tensor([0, 1, 2]))
    loss.backward()
    return out, {n: p.grad for n, p in model.named_parameters()}


def assert_same_step(plain, stored):
    for a, b in zip(plain[0], stored[0]):
        assert torch.equal(a, b)
    differ = [n for n, g in plain[1].items() if not torch.equal(g, stored[1][n])]
    assert not differ, f"gradients differ: {differ}"


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16, torch.bool])
@pytest.mark.parametrize("numel", [1, 8, 13, 4096 + 5])
def test_packed_spikes_restore_exactly(dtype, numel):
    spikes = (torch.rand(numel, generator=torch.Generator().manual_seed(numel)) > 0.6).to(dtype)
    bits = spike_storage.pack_bits(spikes)
    assert bits.dtype == torch.uint8 and bits.numel() == (numel + 7) // 8
    restored = spike_storage.unpack_bits(bits, numel, dtype)
    assert restored.dtype == dtype and torch.equal(restored, spikes)


@pytest.mark.parametrize("stem", ["cifar", "event", "imagenet"])  # 4-384, 2-256, 10-768 (pools)
@pytest.mark.parametrize("neuron", ["lif", "ilif"])
@pytest.mark.parametrize("legacy", [False, True])
def test_gradients_equal_the_unpacked_path_bit_for_bit(stem, neuron, legacy):
    x = tiny_input(stem)
    plain = train_step(tiny_model(stem, neuron=neuron, legacy=legacy).train(), x, "off")
    for level in ("bits", "lean"):
        assert_same_step(plain, train_step(tiny_model(stem, neuron=neuron, legacy=legacy).train(), x, level))


def test_spike_storage_with_grad_checkpointing_and_drop_path():
    x = tiny_input("imagenet")
    runs = []
    for storage in ("off", "bits", "lean"):
        model = tiny_model("imagenet", drop_path_rate=0.2).train()
        model.set_grad_checkpointing()
        torch.manual_seed(3)
        runs.append(train_step(model, x, storage))
    assert_same_step(runs[0], runs[1])
    assert_same_step(runs[0], runs[2])


def test_gradients_equal_under_bf16_autocast():
    """The recomputed conv runs under the autocast state of the forward: the same bf16 output."""
    x = tiny_input("cifar")
    runs = [train_step(tiny_model("cifar").train(), x, storage, dtype=torch.bfloat16)
            for storage in ("off", "bits", "lean")]
    assert runs[0][0].final.dtype == torch.bfloat16
    assert_same_step(runs[0], runs[1])
    assert_same_step(runs[0], runs[2])


def fresh_model(**kwargs):
    """The tiny CIFAR model as initialised for training, feedback included."""
    torch.manual_seed(0)
    return timm.create_model("spiliformer_4_384", num_classes=5, backend="torch", **{**TINY["cifar"][1], **kwargs})


def test_fp16_with_a_grad_scaler_steps_to_the_same_weights():
    x, y = tiny_input("cifar"), torch.tensor([0, 1, 2])
    weights = []
    initial = fresh_model().state_dict()
    for storage in ("off", "bits", "lean"):
        model = fresh_model(spike_storage=storage).train()
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
        scaler = torch.amp.GradScaler("cpu", init_scale=2.0 ** 8)
        for _ in range(2):
            with torch.autocast("cpu", dtype=torch.float16):
                loss = models.SpiLiFormerLoss()(model(x, passes=True), y)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            optimizer.zero_grad()
        weights.append(model.state_dict())
    assert not torch.equal(weights[0]["head.weight"], initial["head.weight"]), "the scaler skipped every step"
    for name, value in weights[0].items():
        assert torch.equal(value, weights[1][name]) and torch.equal(value, weights[2][name]), name


def test_only_what_a_producer_marked_is_packed():
    """Binary values alone are not enough: an unmarked 0/1 tensor, a marked one modified in place,
    and a marked one read as another dtype are all kept as they are."""
    held = []
    with spike_storage.storing(observer=lambda t, h: held.append(h[0])):
        w = torch.randn(6, 6, requires_grad=True)
        unmarked = (torch.rand(6, 6) > 0.5).float()
        (unmarked @ w).sum()
        marked = spike_storage.mark((torch.rand(6, 6) > 0.5).float())
        (marked @ w).sum()
        changed = spike_storage.mark((torch.rand(6, 6) > 0.5).float())
        changed.mul_(3)
        (changed @ w).sum()
        reread = spike_storage.mark(torch.ones(6, 6, dtype=torch.int32) * (torch.rand(6, 6) > 0.5))
        (reread.view(torch.float32) @ w).sum()
    # each matmul saves its left input (for w's gradient); only `marked` is rebuilt from bits
    assert held == ["kept", "rebuilt", "kept", "kept"]


def test_ilif_counts_are_kept_as_bytes_never_as_bits():
    ilif, lif = ILIF(), LIF(backend="torch")
    x = (torch.randn(2, 4, 64) * 3).requires_grad_()
    with spike_storage.storing():
        counts, spikes = ilif(x), lif(x)
        assert spike_storage.describe(counts) == "counts" and spike_storage.describe(spikes) == "binary"
        assert counts.max() > 1
        encoded = spike_storage._encode(counts, spike_storage.levels_of(counts))
        assert encoded[0] == "bytes"
        assert torch.equal(spike_storage._decode(encoded, counts.numel(), counts.dtype), counts.view(-1))
        # a sum of counts keeps a bound that no longer fits a spike: bytes again
        assert spike_storage.levels_of(spike_storage.spike_sum(counts, spikes)) == ilif.levels + 1


def test_a_saved_tensor_modified_in_place_raises_as_autograd_does():
    w = torch.randn(4, 4, requires_grad=True)
    with spike_storage.storing():
        x = torch.randn(4, 4)
        out = (x @ w).sum()
    x.add_(1)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        out.backward()


def test_spike_storage_is_off_under_torch_compile_with_one_line(capsys):
    model = tiny_model("cifar", spike_storage="bits").train()
    compiled = torch.compile(model, backend="eager")  # dynamo traces; no C++ build needed
    x = tiny_input("cifar")
    for _ in range(2):
        compiled(x, passes=True).final.sum().backward()
    assert capsys.readouterr().out.count("spike storage is off under torch.compile") == 1


def test_memory_report_counts_less_with_spike_storage():
    from engine.benchmark import Config, SAVED_KINDS, saved_memory
    from engine.model_config import ModelConfig
    cfg = Config(model=ModelConfig(model="spiliformer_4_384", embed_dim=64, depths=(1, 1, 1), num_heads=2, T=2),
                 batch_size=2, input_size=16, device="cpu")
    plain_kinds, plain_stages = saved_memory(cfg, spike_storage="off")
    kinds, stages = saved_memory(cfg, spike_storage="bits")
    lean, _ = saved_memory(cfg, spike_storage="lean")
    assert set(plain_kinds) == set(SAVED_KINDS)
    assert sum(plain_stages.values()) == pytest.approx(sum(plain_kinds.values()))
    assert kinds["binary spikes"] * 16 < plain_kinds["binary spikes"]  # bits instead of fp32
    assert kinds["LIF state"] == plain_kinds["LIF state"]
    assert sum(kinds.values()) < 0.5 * sum(plain_kinds.values())
    assert lean["LIF state"] < 0.5 * kinds["LIF state"]
