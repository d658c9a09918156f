"""An attention written outside the package, plugged in through models.SpikingAttention: it trains,
and forward_attention, tools/energy.py and tools/heatmap.py read it through its hook points; a class
that misses a piece of the contract is one ConfigError at construction."""
import pytest
import torch
import torch.nn as nn

import models
from conftest import tiny_input, tiny_model


class GateAttention(models.SpikingAttention):
    """A trivial spiking attention with names of its own: Linear query spikes, whose mean over
    channels fires a token gate on x; feedback (pass 2) adds to the query's input."""

    def __init__(self, dim, num_heads, *, neuron_layer=models.LIF, legacy=False):
        super().__init__(dim, num_heads, neuron_layer=neuron_layer, legacy=legacy)
        self.to_query = nn.Linear(dim, dim)
        self.query_fires = neuron_layer(1.0)
        self.gate_fires = neuron_layer(0.5)

    def attention_map_layer(self):
        return self.gate_fires

    def query_layer(self):
        return self.query_fires

    def forward(self, x, feedback=None):
        T, B, C, H, W = x.shape
        tokens = x.flatten(3)
        source = tokens if feedback is None else tokens + feedback
        query = self.query_fires(self.to_query(source.transpose(2, 3)).transpose(2, 3))  # [T, B, C, N]
        gate = self.gate_fires(query.mean(2, keepdim=True))                               # [T, B, 1, N]
        return (tokens * gate).view(T, B, C, H, W)


def plugged_model():
    return tiny_model("cifar", shallow_attn=GateAttention, deep_attn=GateAttention)


def test_a_plugged_in_attention_trains():
    model = plugged_model().train()
    before = model.stages[-1].blocks[0].attn.to_query.weight.clone()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    loss = models.SpiLiFormerLoss(alpha=0.5)(model(tiny_input("cifar")), torch.tensor([0, 1, 2]))
    loss.backward()
    optimizer.step()
    assert torch.isfinite(loss)
    assert not torch.equal(model.stages[-1].blocks[0].attn.to_query.weight, before)  # pass 2 reached it


def test_forward_attention_reads_a_plugged_in_attention_at_its_hook_points():
    model = plugged_model().eval()
    with torch.no_grad():
        _, records = model.forward_attention(tiny_input("cifar"))
    assert list(records) == [name for stage in model.attention_names() for name in stage]
    shallow, deep = records["stages.0.blocks.0.attn"], records["stages.2.blocks.0.attn"]
    assert (shallow.kind, len(shallow.attention), len(deep.attention), len(deep.query)) == ("FF", 1, 2, 2)
    assert deep.attention[0].shape == (2, 3, 1, 16) and deep.query[0].shape == (2, 3, 64, 16)  # [T, B, ., N]


def test_energy_and_heatmap_measure_a_plugged_in_attention():
    from tools.common import InputSpace
    from tools.energy import layer_energy
    from tools.heatmap import attention_maps
    model = plugged_model().eval()
    x = tiny_input("cifar")
    rows = {r["layer"]: r for r in layer_energy(InputSpace(model), [x], static_T=model.T)}
    query = rows["stages.2.blocks.0.attn.to_query"]
    assert query["kind"] == "AC" and query["macs"] == pytest.approx(2 * model.T * 16 * 64 * 64)  # two passes
    assert "stages.2.blocks.0.attn.gate_fires" in rows
    # its only MACs are its Linear's, counted there once: no matmul row of its own
    assert not any(name.endswith(".matmul") for name in rows)
    maps, probs = attention_maps(InputSpace(model).eval(), x)
    assert list(maps) == ["stage 1 FF", "stage 2 FF", "stage 3 FB pass 1", "stage 3 FB pass 2"]
    assert all(m.shape == (3, 16, 16) and 0 <= m.min() and m.max() <= 1 for m in maps.values())
    assert probs.shape == (3, 5)


class NoQueryHook(models.SpikingAttention):
    """Names its sub-modules as the stock attentions do, but declares only one hook."""

    def __init__(self, dim, num_heads, *, neuron_layer=models.LIF, legacy=False):
        super().__init__(dim, num_heads, neuron_layer=neuron_layer, legacy=legacy)
        self.q = neuron_layer(1.0)
        self.attn_lif = neuron_layer(0.5)

    def attention_map_layer(self):
        return self.attn_lif

    def forward(self, x, feedback=None):
        return x


class Undeclared(nn.Module):
    """The old, unwritten contract: sub-modules named q and attn_lif, no hooks."""

    def __init__(self, dim, num_heads, neuron_layer=models.LIF, legacy=False):
        super().__init__()
        self.q = neuron_layer(1.0)
        self.attn_lif = neuron_layer(0.5)

    def forward(self, x, feedback=None):
        return x


class NoFeedback(GateAttention):
    def forward(self, x):
        return super().forward(x)


class NoLegacy(GateAttention):
    def __init__(self, dim, num_heads, *, neuron_layer=models.LIF):
        super().__init__(dim, num_heads, neuron_layer=neuron_layer)


@pytest.mark.parametrize("where,layer,message", [
    ("shallow_attn", NoQueryHook, r"NoQueryHook has no query_layer\(\) hook \(the sub-module whose output is the "
                                  r"query spikes\): subclass models.SpikingAttention"),
    ("deep_attn", Undeclared, r"Undeclared has no attention_map_layer\(\) hook"),
    ("deep_attn", NoFeedback, r"NoFeedback is the deep stage's attention, but its forward takes no feedback="),
    ("shallow_attn", NoLegacy, r"NoLegacy cannot be built as NoLegacy\(dim, num_heads, neuron_layer=..., "
                               r"legacy=...\)"),
])
def test_an_attention_missing_part_of_the_contract_is_one_error_at_construction(where, layer, message):
    with pytest.raises(models.ConfigError, match=message):
        tiny_model("cifar", **{where: layer})


def test_the_stock_attentions_declare_their_hook_points():
    attn = models.FBLiDiffAttention(8, 2)
    assert attn.attention_map_layer() is attn.attn_lif and attn.query_layer() is attn.q
    assert isinstance(models.TokenAttention(8, 2), models.SpikingAttention)
    assert isinstance(models.FFLiDiffAttention(8, 2), models.SpikingAttention)
