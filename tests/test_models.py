"""The model package: structure, exact sizes, behaviour of the two passes, batch independence."""
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


def test_variants_registered_with_timm():
    for name in models.VARIANTS:
        assert name in timm.list_models("spiliformer*")


def test_train_forward_returns_both_passes_and_every_parameter_gets_a_gradient(stem):
    model = tiny_model(stem).train()
    out = model(tiny_input(stem))
    assert isinstance(out, tuple) and len(out) == 2
    assert out[0].shape == out[1].shape == (3, 5)
    models.SpiLiFormerLoss()(out, torch.tensor([0, 1, 2])).backward()
    no_grad = [n for n, p in model.named_parameters() if p.grad is None]
    assert not no_grad, f"parameters without gradient: {no_grad}"
    assert model.feedback.prompt_excite.grad.abs().sum() > 0  # the cosine gate is differentiable


def test_eval_returns_pass2_logits(stem):
    model = tiny_model(stem).eval()
    x = tiny_input(stem)
    with torch.no_grad():
        pass1, pass2 = model(x, return_both=True)
        assert torch.equal(model(x), pass2)
    assert not torch.equal(pass1, pass2)


def test_fb_lidiff_off_is_one_pass(stem):
    model = tiny_model(stem, fb_lidiff=False).train()
    out = model(tiny_input(stem))
    assert torch.is_tensor(out) and out.shape == (3, 5)
    assert model.feedback is None


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
            first, second = model(x, return_both=True), model(x, return_both=True)
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


# ---------------------------------------------------------------- feedback wiring (eq 15)

def test_chained_feedback_is_an_option_with_the_same_parameters():
    paper = tiny_model("imagenet").eval()                      # two FB blocks
    chained = tiny_model("imagenet", chained_feedback=True).eval()
    assert not paper.feedback.chained and chained.feedback.chained
    chained.load_state_dict(paper.state_dict())                # strict: same keys, same shapes
    x = tiny_input("imagenet")
    with torch.no_grad():
        pass1_paper, pass2_paper = paper(x, return_both=True)
        pass1_chained, pass2_chained = chained(x, return_both=True)
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
    out = dropping.train()(x)
    models.SpiLiFormerLoss()(out, torch.tensor([0, 1, 2, 3])).backward()
    assert all(p.grad is not None for p in dropping.parameters())
    assert not torch.equal(out[1], model.train()(x)[1])
