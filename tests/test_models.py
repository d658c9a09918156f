"""The model package: structure, exact sizes, behaviour of the two passes, batch independence."""
import json
from pathlib import Path

import pytest
import timm
import torch
from spikingjelly.activation_based import functional

import models
from models.neurons import LIF
from engine.registry import DATASETS
from models.params import count_parameters

from conftest import TINY, tiny_input, tiny_model


@pytest.mark.parametrize("dataset", sorted(DATASETS))
def test_param_counts_match_paper(dataset):
    entry = DATASETS[dataset]
    name, classes, (expected, expected_qkformer) = entry.model, entry.num_classes, entry.params
    assert count_parameters(name, num_classes=classes) == expected
    assert count_parameters(name, num_classes=classes, ff_lidiff=False, fb_lidiff=False) == expected_qkformer
    # the QKFormer counts are the official code's own (tests/data/README.md)
    official = json.loads((Path(__file__).parent / "data" / "param_counts.json").read_text())
    assert expected_qkformer == official[dataset]


def test_variants_registered_with_timm():
    for name in models.VARIANTS:
        assert name in timm.list_models("spiliformer*")


def test_train_forward_with_passes_gives_both_and_every_parameter_gets_a_gradient(stem):
    model = tiny_model(stem).train()
    out = model(tiny_input(stem), passes=True)
    assert isinstance(out, models.Passes)
    assert out.first.shape == out.final.shape == (3, 5)
    models.SpiLiFormerLoss()(out, torch.tensor([0, 1, 2])).backward()
    no_grad = [n for n, p in model.named_parameters() if p.grad is None]
    assert not no_grad, f"parameters without gradient: {no_grad}"
    assert model.feedback.prompt_excite.grad.abs().sum() > 0  # the cosine gate is differentiable


def test_eval_returns_pass2_logits(stem):
    model = tiny_model(stem).eval()
    x = tiny_input(stem)
    with torch.no_grad():
        pass1, pass2 = model(x, passes=True)
        assert torch.equal(model(x), pass2)
    assert not torch.equal(pass1, pass2)


def test_forward_type_follows_the_mode_unless_passes_fixes_it(stem):
    """SPEC 4: training returns both passes, eval the final logits; passes= overrides either way."""
    model = tiny_model(stem).train()
    x = tiny_input(stem)
    both = model(x)
    assert isinstance(both, models.Passes) and both.first.shape == both.final.shape == (3, 5)
    out = model(x, passes=False)
    assert torch.is_tensor(out) and torch.equal(out, both.final)


def test_fb_lidiff_off_is_one_pass(stem):
    model = tiny_model(stem, fb_lidiff=False).train()
    x, y = tiny_input(stem), torch.tensor([0, 1, 2])
    out = model(x)
    assert torch.is_tensor(out) and out.shape == (3, 5)
    assert model.feedback is None
    first, final = model(x, passes=True)
    assert first is None and torch.equal(final, out)
    loss = models.SpiLiFormerLoss(0.5)(models.Passes(first, final), y)
    assert torch.equal(loss, torch.nn.functional.cross_entropy(final, y))  # plain CE on the one pass


def test_feedback_restarts_from_stage3_input():
    model = tiny_model("imagenet").eval()
    calls = {"stage1": 0, "deep_downsample": 0, "deep_block0": []}
    model.stages[0].register_forward_hook(lambda m, i, o: calls.__setitem__("stage1", calls["stage1"] + 1))
    model.stages[-1].downsample.register_forward_hook(
        lambda m, i, o: calls.__setitem__("deep_downsample", o))
    model.stages[-1].blocks[0].register_forward_hook(lambda m, i, o: calls["deep_block0"].append(i[0]))
    with torch.no_grad():
        model(tiny_input("imagenet"))
    assert calls["stage1"] == 1, "stages 1-2 must not be recomputed in pass 2"
    first, second = calls["deep_block0"]
    assert first is calls["deep_downsample"] and second is calls["deep_downsample"]


def test_pass2_neurons_start_from_rest():
    """Pass 2 of the deep stage equals a fresh run of those blocks with the feedback."""
    model = tiny_model("imagenet").eval()
    seen = {}
    model.stages[-1].downsample.register_forward_hook(lambda m, i, o: seen.__setitem__("x", o))
    model.feedback.register_forward_hook(lambda m, i, o: seen.__setitem__("fb", o))
    with torch.no_grad():
        pass2 = model(tiny_input("imagenet"))
        functional.reset_net(model)
        out = seen["x"]
        for block, signal in zip(model.stages[-1].blocks, seen["fb"]):
            out = block(out, signal)
        assert torch.equal(model.head_logits(out), pass2)


def test_sample_logits_do_not_depend_on_batch_mates(stem):
    model = tiny_model(stem).eval()
    x = tiny_input(stem, batch=4)
    with torch.no_grad():
        batch = model(x)
        single = torch.cat([model(x[i:i + 1]) for i in range(4)])
    torch.testing.assert_close(single, batch, atol=1e-5, rtol=0)


def test_no_neuron_integrates_over_the_batch_axis(stem):
    model = tiny_model(stem).eval()
    x = tiny_input(stem, batch=3)
    T = x.shape[1] if x.dim() == 5 else model.T
    shapes = []
    for m in model.modules():
        if isinstance(m, LIF):
            m.register_forward_pre_hook(lambda mod, inp: shapes.append(tuple(inp[0].shape[:2])))
    with torch.no_grad():
        model(x)
    assert shapes and set(shapes) == {(T, 3)}


def test_legacy_mode_reproduces_the_official_cross_sample_leak():
    model = tiny_model("imagenet", legacy=True).eval()
    x = tiny_input("imagenet", batch=4)
    with torch.no_grad():
        batch = model(x)
        single = torch.cat([model(x[i:i + 1]) for i in range(4)])
    assert (batch - single).abs().max() > 1e-3


def test_two_forwards_on_the_same_input_are_identical(stem):
    model = tiny_model(stem)
    x = tiny_input(stem)
    for mode in (model.train, model.eval):
        mode()
        with torch.no_grad():
            first, second = model(x, passes=True), model(x, passes=True)
        assert all(torch.equal(a, b) for a, b in zip(first, second))


@pytest.mark.parametrize("stem_name,size", [("cifar", (16, 24)), ("imagenet", (32, 48)), ("event", (48, 32))])
def test_non_square_input(stem_name, size):
    model = tiny_model(stem_name).eval()
    shape = list(TINY[stem_name][2])
    shape[-2:] = size
    with torch.no_grad():
        single = [model(torch.rand(*[1] + shape[1:])) for _ in range(1)]
        out = model(torch.rand(*shape))
    assert out.shape == (shape[0], 5) and single[0].shape == (1, 5)


def test_event_input_brings_its_own_time_steps():
    model = tiny_model("event").eval()
    T = []
    model.stages[0].register_forward_pre_hook(lambda m, i: T.append(i[0].shape[0]))
    with torch.no_grad():
        model(torch.rand(2, 3, 2, 32, 32))
    assert T == [3]


@pytest.mark.parametrize("shape,message", [
    ((2, 3, 40, 32), "not divisible by 16"),
    ((2, 1, 32, 32), "channels"),
    ((3, 32, 32), "expected input"),
])
def test_bad_input_gives_a_clear_error(shape, message):
    model = tiny_model("imagenet").eval()
    with pytest.raises(ValueError, match=message):
        model(torch.rand(*shape))


def test_bad_configuration_gives_a_clear_error():
    with pytest.raises(ValueError, match="divisible by 2\\*num_heads"):
        timm.create_model("spiliformer_4_384", num_heads=7)
    with pytest.raises(ValueError, match="backend"):
        timm.create_model("spiliformer_4_384", embed_dim=64, backend="cuda")
    with pytest.raises(ValueError, match="neuron"):
        timm.create_model("spiliformer_4_384", embed_dim=64, neuron="izhikevich")
    with pytest.raises(models.ConfigError, match="attention must be one of .*'token'.*got 'ff-lidiff'"):
        timm.create_model("spiliformer_4_384", embed_dim=64, shallow_attn="ff-lidiff")


# ---------------------------------------------------------------- building blocks chosen once

def test_set_backend_switches_every_lif():
    model = tiny_model("cifar").eval()
    lifs = [m for m in model.modules() if isinstance(m, LIF)]
    assert lifs and {m.backend for m in lifs} == {"torch"}  # the constructor's backend, everywhere
    x = tiny_input("cifar")
    with torch.no_grad():
        reference = model(x)
        assert model.set_backend("spikingjelly") is model
        assert {m.backend for m in lifs} == {"spikingjelly"}
        torch.testing.assert_close(model(x), reference)
    with pytest.raises(ValueError, match="backend must be one of"):
        model.set_backend("cuda")
    assert {m.backend for m in lifs} == {"spikingjelly"}  # a bad name changes nothing


def test_ilif_model_builds_every_neuron_as_ilif_with_the_same_keys():
    model = tiny_model("cifar", neuron="ilif")
    assert not any(isinstance(m, LIF) for m in model.modules())
    assert sum(isinstance(m, models.ILIF) for m in model.modules()) > 0
    assert model.state_dict().keys() == tiny_model("cifar").state_dict().keys()


@pytest.mark.parametrize("by_name", [True, False])
def test_shallow_and_deep_attention_by_name_or_class(by_name):
    token, fb = ("token", "fb_lidiff") if by_name else (models.TokenAttention, models.FBLiDiffAttention)
    chosen = tiny_model("imagenet", shallow_attn=token, deep_attn=fb).eval()
    ablation = tiny_model("imagenet", ff_lidiff=False).eval()   # the Table 3 switch, same seed
    assert type(chosen.stages[0].blocks[0].attn) is models.TokenAttention
    assert type(chosen.stages[-1].blocks[0].attn) is models.FBLiDiffAttention
    assert chosen.state_dict().keys() == ablation.state_dict().keys()
    x = tiny_input("imagenet")
    with torch.no_grad():
        assert torch.equal(chosen(x), ablation(x))
    default = tiny_model("imagenet")
    assert type(default.stages[0].blocks[0].attn) is models.FFLiDiffAttention
    assert models.ATTENTION_LAYERS["ff_lidiff"] is models.FFLiDiffAttention


def test_forward_attention_records_each_pass_of_each_attention(stem):
    model = tiny_model(stem).eval()
    x = tiny_input(stem)
    with torch.no_grad():
        out, records = model.forward_attention(x)
        assert torch.equal(out.final, model(x)) and torch.equal(out.first, model(x, passes=True).first)
    names = model.attention_names()
    assert list(records) == [name for stage in names for name in stage]
    heads, T = 2, (x.shape[1] if x.dim() == 5 else model.T)
    for i, stage in enumerate(names):
        C = model.dims[i]
        for name in stage:
            record = records[name]
            deep = i == len(names) - 1
            assert record.kind == ("FB" if deep else "FF")
            assert len(record.attention) == len(record.query) == (2 if deep else 1)
            N = record.query[0].shape[-1]
            assert all(q.shape == (T, 3, C, N) for q in record.query)
            expected = (T, 3, C, N) if deep else (T, 3, heads, 1, N)
            assert all(a.shape == expected for a in record.attention)
            assert all(models.neurons.is_spike_count(a) for a in record.attention + record.query)


def test_forward_attention_of_a_one_pass_model_and_of_chosen_blocks():
    model = tiny_model("imagenet", fb_lidiff=False).eval()
    last = [stage[-1] for stage in model.attention_names()]
    with torch.no_grad():
        out, records = model.forward_attention(tiny_input("imagenet"), names=last)
    assert out.first is None
    assert list(records) == last and all(len(r.attention) == 1 for r in records.values())
    with pytest.raises(ValueError, match="no attention module named"):
        model.forward_attention(tiny_input("imagenet"), names=["stages.0.blocks.9.attn"])


# ---------------------------------------------------------------- feedback wiring (eq 15)

def test_chained_feedback_is_an_option_with_the_same_parameters():
    paper = tiny_model("imagenet").eval()                      # two FB blocks
    chained = tiny_model("imagenet", chained_feedback=True).eval()
    assert not paper.feedback.chained and chained.feedback.chained
    chained.load_state_dict(paper.state_dict())                # strict: same keys, same shapes
    x = tiny_input("imagenet")
    with torch.no_grad():
        pass1_paper, pass2_paper = paper(x, passes=True)
        pass1_chained, pass2_chained = chained(x, passes=True)
    assert torch.equal(pass1_paper, pass1_chained)             # the wiring only acts between passes
    assert not torch.equal(pass2_paper, pass2_chained)


# ---------------------------------------------------------------- stochastic depth (Sec. 4.1)

def test_drop_path_drops_a_sample_at_every_time_step_or_none():
    from models.layers import DropPath
    torch.manual_seed(0)
    drop = DropPath(0.5).train()
    x = torch.ones(4, 64, 3, 2, 2)                             # [T, B, C, H, W]
    out = drop(x)
    per_sample = out.transpose(0, 1).flatten(1)                # [B, T*C*H*W]
    assert torch.equal(per_sample, per_sample[:, :1].expand_as(per_sample))  # one mask per b, over all T
    assert set(per_sample[:, 0].tolist()) == {0.0, 2.0}        # kept samples scaled by 1 / (1 - p)


def test_drop_path_is_identity_in_eval_and_at_rate_zero():
    from models.layers import DropPath
    x = torch.rand(2, 3, 4, 5)
    assert DropPath(0.5).eval()(x) is x
    state = torch.get_rng_state()
    assert DropPath(0.0).train()(x) is x
    assert torch.equal(torch.get_rng_state(), state)          # no random numbers drawn: runs stay reproducible


def test_drop_path_rate_rises_linearly_over_blocks():
    from models.layers import DropPath
    with torch.device("meta"):
        model = timm.create_model("spiliformer_10_768", drop_path_rate=0.3)   # blocks (1, 2, 7)
        default = timm.create_model("spiliformer_10_768")
    blocks = [b for stage in model.stages for b in stage.blocks]
    rates = [b.drop_path.drop_prob if isinstance(b.drop_path, DropPath) else 0.0 for b in blocks]
    assert rates == pytest.approx(torch.linspace(0, 0.3, 10).tolist())  # timm's linspace(0, rate, depth)
    assert not any(isinstance(m, DropPath) for m in default.modules())
    assert model.state_dict().keys() == default.state_dict().keys()


def test_drop_path_changes_training_only(stem):
    model = tiny_model(stem)
    dropping = tiny_model(stem, drop_path_rate=0.5)  # same weights
    x = tiny_input(stem, batch=4)
    with torch.no_grad():
        assert torch.equal(dropping.eval()(x), model.eval()(x))
    torch.manual_seed(0)
    out = dropping.train()(x, passes=True)
    models.SpiLiFormerLoss()(out, torch.tensor([0, 1, 2, 3])).backward()
    assert all(p.grad is not None for p in dropping.parameters())
    assert not torch.equal(out.final, model.train()(x, passes=False))
