"""The paper's equations checked on tiny hand-computed cases (numbers worked out in the comments).

Every expected value here is a literal or a closed-form expression derived by hand from the
equations, not a re-run of the module's own code.
"""
import functools
import math

import pytest
import torch
import torch.nn.functional as F
from spikingjelly.activation_based import functional

from models.attention import FBLiDiffAttention, Feedback, FFLiDiffAttention, TokenAttention
from models.loss import SpiLiFormerLoss
from models.neurons import ILIF, LIF, expand_spikes

TORCH_LIF = functools.partial(LIF, backend="torch")  # the reference kernel, as neuron_layer


def run_fresh(neuron, x):
    functional.reset_net(neuron)
    return neuron(x)


# ---------------------------------------------------------------- LIF (eqs 1-3)

# H[t] = V[t-1] + (X[t] - V[t-1]) / 2;  S = H >= V_th;  V = 0 after a spike, else H
LIF_X = torch.tensor([[1.5, 2.0],
                      [1.5, 0.0],
                      [0.8, 2.4],
                      [2.5, 0.8]])  # [T=4, B=2]
# column 0: H = 0.75 (V .75) | .75+(1.5-.75)/2 = 1.125 fire (V 0) | 0.8/2 = 0.4 (V .4) | .4+(2.5-.4)/2 = 1.45 fire
# column 1: H = 1.0 fire on equality (V 0) | 0 | 2.4/2 = 1.2 fire (V 0) | 0.8/2 = 0.4 -- without the hard
#           reset it would be 1.2+(0.8-1.2)/2 = 1.0 and fire, with a soft reset 0.2+0.3 = 0.5
LIF_S = torch.tensor([[0., 1.],
                      [1., 0.],
                      [0., 1.],
                      [1., 0.]])
LIF_V_END = torch.tensor([0.0, 0.4])


@pytest.mark.parametrize("mode", ["train", "eval"])
def test_lif_charges_fires_and_hard_resets(mode):
    lif = LIF(backend="torch")
    getattr(lif, mode)()
    with torch.no_grad():
        assert torch.equal(run_fresh(lif, LIF_X), LIF_S)
    assert torch.allclose(lif.v, LIF_V_END)


def test_lif_train_and_eval_paths_give_the_same_spikes():
    lif = LIF(backend="torch")
    x = torch.tensor([[0.6, 1.9, 3.0], [1.8, 0.1, 0.0], [1.1, 1.9, 2.2]])
    with torch.no_grad():
        train_spikes = run_fresh(lif.train(), x)
        eval_spikes = run_fresh(lif.eval(), x)
    # col 0: .3 | .3+(1.8-.3)/2 = 1.05 fire | 1.1/2 = .55 ; col 1: .95 | .95+(.1-.95)/2 = .525 | .525+(1.9-.525)/2 = 1.2125 fire
    # col 2: 1.5 fire | 0 | 1.1 fire
    expected = torch.tensor([[0., 0., 1.], [1., 0., 0.], [0., 1., 1.]])
    assert torch.equal(train_spikes, expected)
    assert torch.equal(eval_spikes, expected)


@pytest.mark.parametrize("mode", ["train", "eval"])
def test_lif_with_threshold_half_fires_at_half(mode):
    lif = LIF(v_threshold=0.5, backend="torch")
    getattr(lif, mode)()
    x = torch.tensor([0.6, 0.2, 1.0, 0.9, 1.0]).view(5, 1)
    # H = .3 | .3+(.2-.3)/2 = .25 | .25+(1-.25)/2 = .625 fire (V 0) | .45 | .45+(1-.45)/2 = .725 fire
    expected = torch.tensor([0., 0., 1., 0., 1.]).view(5, 1)
    with torch.no_grad():
        assert torch.equal(run_fresh(lif, x), expected)


def test_lif_surrogate_gradient_is_sigmoid_alpha_4():
    lif = LIF(backend="torch").train()
    x = torch.tensor([[1.5]], requires_grad=True)  # one step: H = 0.75, H - V_th = -0.25
    spike = run_fresh(lif, x)
    assert spike.item() == 0.0
    spike.sum().backward()
    # dS/dH = 4 sig(-1) (1 - sig(-1)) = 4 * 0.2689414 * 0.7310586 = 0.7864477; dH/dX = 1/2
    sig = 1 / (1 + math.e)
    assert x.grad.item() == pytest.approx(4 * sig * (1 - sig) / 2, rel=1e-5)
    assert x.grad.item() == pytest.approx(0.3932239, rel=1e-5)


# ---------------------------------------------------------------- I-LIF

def test_ilif_rounds_clamps_and_soft_resets():
    x = torch.tensor([[1.3, 0.5, -0.7],
                      [2.6, 0.0, 0.9],
                      [5.0, 2.0, 0.5]])  # [T=3, B=3]
    # col 0: u = 1.3 -> s = floor(1.8) = 1; u = (1.3-1)*.25 + 2.6 = 2.675 -> s = 3;
    #        u = (2.675-3)*.25 + 5 = 4.91875 -> clamp 4 -> s = 4
    # col 1: u = .5 -> s = 1 (round half up); u = (.5-1)*.25 + 0 = -.125 -> 0; u = -.03125 + 2 = 1.96875 -> 2
    # col 2: u = -.7 -> 0; u = -.175 + .9 = .725 -> 1; u = (.725-1)*.25 + .5 = .43125 -> 0
    expected = torch.tensor([[1., 1., 0.],
                             [3., 0., 1.],
                             [4., 2., 0.]])
    assert torch.equal(ILIF()(x), expected)


def test_ilif_straight_through_gradient_is_one_inside_0_to_4():
    x = torch.tensor([[-0.5, 0.0, 2.3, 4.0, 4.5]], requires_grad=True)  # one step: u = x
    ILIF()(x).sum().backward()
    assert torch.equal(x.grad, torch.tensor([[0., 1., 1., 1., 0.]]))


def test_ilif_gradient_flows_through_decay_not_through_reset():
    x = torch.tensor([[1.3], [2.6]], requires_grad=True)
    ILIF()(x).sum().backward()
    # s0 = 1, u1 = (x0 - s0)*.25 + x1 = 2.675 inside [0, 4]; s0 is detached:
    # d(s0+s1)/dx0 = 1 + 0.25, d(s0+s1)/dx1 = 1
    assert torch.allclose(x.grad, torch.tensor([[1.25], [1.0]]))


def test_expand_spikes_gives_binary_planes_summing_to_counts():
    s = torch.tensor([0., 2., 4., 1.])
    planes = expand_spikes(s)  # D = max = 4 planes, plane k = (s > k)
    assert torch.equal(planes, torch.tensor([[0., 1., 1., 1.],
                                             [0., 1., 1., 0.],
                                             [0., 0., 1., 0.],
                                             [0., 0., 1., 0.]]))
    assert torch.equal(planes.sum(0), s)
    assert expand_spikes(s, levels=6).shape == (6, 4)


# ---------------------------------------------------------------- FF-LiDiff (eqs 6-8)

# Binary Q [C=8, N=3]. Q1 = channels 0-3, Q2 = 4-7; head 0: E = ch 0,1  I = ch 4,5; head 1: E = ch 2,3  I = ch 6,7
Q_HAND = torch.tensor([[1., 1., 0.],   # ch0  Q1 head0
                       [1., 0., 1.],   # ch1  Q1 head0
                       [1., 1., 0.],   # ch2  Q1 head1
                       [0., 1., 1.],   # ch3  Q1 head1
                       [1., 1., 0.],   # ch4  Q2 head0
                       [0., 0., 0.],   # ch5  Q2 head0
                       [1., 0., 0.],   # ch6  Q2 head1
                       [1., 0., 1.]])  # ch7  Q2 head1
# head 0: A_e = [2,1,1], A_i = [1,1,0], diff = [1,0,1];  head 1: A_e = [1,2,1], A_i = [2,0,1], diff = [-1,2,0]
# attention neuron at t=0: H = diff/2 >= 0.5 <=> diff >= 1
MASK_HAND = torch.tensor([[1., 0., 1.],
                          [0., 1., 0.]])


def test_ff_lidiff_token_mask_is_excitatory_minus_inhibitory_through_half_threshold_neuron():
    attn = FFLiDiffAttention(dim=8, num_heads=2, neuron_layer=TORCH_LIF).eval()
    functional.reset_net(attn)
    with torch.no_grad():
        mask = attn.token_mask(Q_HAND.view(1, 1, 8, 3))
    assert mask.shape == (1, 1, 2, 1, 3)
    assert torch.equal(mask.view(2, 3), MASK_HAND)


def test_ff_lidiff_ablation_mask_is_neuron_of_summed_head_channels():
    attn = TokenAttention(dim=8, num_heads=2, neuron_layer=TORCH_LIF).eval()
    functional.reset_net(attn)
    q = torch.zeros(8, 4)
    q[4, 1] = 1.                # token 1: one spike in head 1's channels (4-7) -> sum 1, H = .5 fire
    q[0, 2] = q[5, 2] = 1.      # token 2: one spike per head -> both fire (no inhibition in the ablation)
    q[0:4, 3] = 1.              # token 3: head 0 sum 4 -> fire; head 1 sum 0 -> silent
    # token 0: nothing -> silent everywhere
    with torch.no_grad():
        mask = attn.token_mask(q.view(1, 1, 8, 4))
    assert mask.shape == (1, 1, 2, 1, 4)
    assert torch.equal(mask.view(2, 4), torch.tensor([[0., 0., 1., 1.],
                                                      [0., 1., 1., 0.]]))


def _identity_unit(unit, gain=1.0):
    """conv weight = gain * I; eval BN with running stats (0, 1) is x / sqrt(1 + 1e-5)."""
    with torch.no_grad():
        unit.conv.weight.copy_(gain * torch.eye(unit.conv.weight.shape[0]).unsqueeze(-1))


def _capture(module, store, key, output=False):
    def hook(m, inputs, out):
        store[key] = (out if output else inputs[0]).detach().clone()
    return module.register_forward_hook(hook)


def run_capturing(attn, x):
    """One forward from rest; returns the q and k spikes and the input of the projection."""
    seen = {}
    hooks = [_capture(attn.q.lif, seen, "q", output=True), _capture(attn.k.lif, seen, "k", output=True),
             _capture(attn.proj.conv, seen, "proj_in")]
    functional.reset_net(attn)
    with torch.no_grad():
        attn(x)
    for h in hooks:
        h.remove()
    return seen


def test_ff_lidiff_forward_masks_k_per_head_before_projection():
    attn = FFLiDiffAttention(dim=8, num_heads=2, neuron_layer=TORCH_LIF).eval()
    _identity_unit(attn.q)
    _identity_unit(attn.k)
    # tokens 0-2: Q_HAND; token 3: one E and one I spike in each head (ch 0,4 and 2,6) -> diff 0 in both heads
    q = torch.cat([Q_HAND, torch.tensor([[1., 0., 1., 0., 1., 0., 1., 0.]]).T], dim=1)  # [8, 4]
    x = 3.0 * q.view(1, 1, 8, 1, 4)  # 3 / sqrt(1+1e-5) / 2 ~ 1.5 >= 1 fires; 0 stays silent -> q = k = q
    seen = run_capturing(attn, x)
    assert torch.equal(seen["q"].view(8, 4), q)
    assert torch.equal(seen["k"].view(8, 4), q)
    # mask per head = [1,0,1,0] (head 0) and [0,1,0,0] (head 1); head j gates K channels [4j, 4j+4)
    expected = torch.tensor([[1., 0., 0., 0.],   # ch0 = k * [1,0,1,0]
                             [1., 0., 1., 0.],   # ch1
                             [1., 0., 0., 0.],   # ch2
                             [0., 0., 1., 0.],   # ch3
                             [0., 1., 0., 0.],   # ch4 = k * [0,1,0,0]
                             [0., 0., 0., 0.],   # ch5
                             [0., 0., 0., 0.],   # ch6
                             [0., 0., 0., 0.]])  # ch7
    assert torch.equal(seen["proj_in"].view(8, 4), expected)
    assert seen["k"].view(8, 4)[:, 3].sum() > 0 and seen["proj_in"].view(8, 4)[:, 3].sum() == 0


def test_ff_lidiff_forward_with_random_weights_zeroes_tokens_masked_in_every_head():
    torch.manual_seed(0)
    attn = FFLiDiffAttention(dim=8, num_heads=2, neuron_layer=TORCH_LIF).eval()
    with torch.no_grad():
        for unit in (attn.q, attn.k):
            unit.conv.weight.mul_(8.0)
    x = torch.rand(1, 1, 8, 4, 4)  # T = 1: the attention neuron fires iff A_e - A_i >= 1
    seen = run_capturing(attn, x)
    q, k = seen["q"].view(8, 16), seen["k"].view(8, 16)
    diff = torch.stack([q[0:2].sum(0) - q[4:6].sum(0), q[2:4].sum(0) - q[6:8].sum(0)])  # [head, N]
    mask = (diff >= 1).float()
    assert 0 < mask.sum() < mask.numel()  # the case is not trivial
    expected = k * mask.repeat_interleave(4, dim=0)  # head j gates channels [4j, 4j+4)
    assert torch.equal(seen["proj_in"].view(8, 16), expected)
    dead = mask.sum(0) == 0
    assert dead.any() and seen["proj_in"].view(8, 16)[:, dead].abs().sum() == 0


# ---------------------------------------------------------------- feedback (eqs 12-15)

# O [C=4, N=2]; p1 = [1,1,0,0], p2 = [-1,0,1,1]
O_HAND = torch.tensor([[3., 0.],
                       [3., 0.],
                       [0., 1.],
                       [0., 1.]])
# token 0: O = [3,3,0,0]: cos(O,p1) = 6/(3*sqrt2*sqrt2) = 1; cos(O,p2) = -3/(3*sqrt2*sqrt3) < 0 -> clamp 0; m1-m2 = 1
# token 1: O = [0,0,1,1]: cos(O,p1) = 0; cos(O,p2) = 2/(sqrt2*sqrt3) = sqrt(2/3); m1-m2 = -sqrt(2/3)
R = math.sqrt(2 / 3)
GATE_HAND = torch.tensor([[3., 0.],
                          [3., 0.],
                          [0., -R],
                          [0., -R]])


def _feedback(scale=1.0, chained=False):
    fb = Feedback(dim=4, num_blocks=2, scale=scale, chained=chained, neuron_layer=TORCH_LIF).eval()
    with torch.no_grad():
        fb.prompt_excite.copy_(torch.tensor([1., 1., 0., 0.]))
        fb.prompt_inhibit.copy_(torch.tensor([-1., 0., 1., 1.]))
    return fb


def test_feedback_gate_is_output_times_clamped_cosine_difference():
    with torch.no_grad():
        gate = _feedback().gate(O_HAND.view(1, 1, 4, 2))
    assert gate.shape == (1, 1, 4, 2)
    assert torch.allclose(gate.view(4, 2), GATE_HAND, atol=1e-6)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_feedback_gate_of_a_silent_token_is_zero_under_autocast(dtype):
    """A token with no spikes has norm 0; in fp16 cosine similarity's eps**2 underflows and gave
    0/0 = NaN, which made every feedback gradient NaN under fp16 AMP."""
    O = torch.cat([O_HAND, torch.zeros(4, 1)], dim=1).view(1, 1, 4, 3).to(dtype)
    with torch.no_grad(), torch.autocast("cpu", dtype=dtype):
        gate = _feedback().gate(O)
    assert torch.isfinite(gate).all()
    assert torch.equal(gate.view(4, 3)[:, 2].float(), torch.zeros(4))
    assert torch.allclose(gate.view(4, 3)[:, :2].float(), GATE_HAND, atol=1e-2)


def test_feedback_scale_two_doubles_the_gate():
    with torch.no_grad():
        gate = _feedback(scale=2.0).gate(O_HAND.view(1, 1, 4, 2))
    assert torch.allclose(gate.view(4, 2), 2 * GATE_HAND, atol=1e-6)


def test_feedback_decoders_each_read_the_gated_output():
    """Eq 15: X_FB^m = SN(BN(A_combined W_FB^m)) for every m, not D_m of D_(m-1)'s spikes."""
    fb = _feedback()
    with torch.no_grad():
        fb.decoders[0].linear.weight.copy_(torch.eye(4))
        fb.decoders[1].linear.weight.copy_(-3 * torch.eye(4))
    seen = {}
    hooks = [_capture(d, seen, f"in{i}") for i, d in enumerate(fb.decoders)]
    functional.reset_net(fb)
    with torch.no_grad():
        signals = fb(O_HAND.view(1, 1, 4, 2))
    for h in hooks:
        h.remove()
    assert len(signals) == 2
    assert torch.allclose(seen["in0"].view(4, 2), GATE_HAND, atol=1e-6)
    assert torch.allclose(seen["in1"].view(4, 2), GATE_HAND, atol=1e-6)  # D_2 reads A too
    # D_1 (W = I): H = A/2 (BN ~ identity): 1.5 fires in token 0, channels 0-1
    assert torch.equal(signals[0].view(4, 2), torch.tensor([[1., 0.], [1., 0.], [0., 0.], [0., 0.]]))
    # D_2 (W = -3I): H = -3A/2: token 1, channels 2-3: 3 sqrt(2/3) / 2 = 1.22 fires; chained, it would
    # read D_1's spikes, -3 * 1 / 2 < 0, and stay silent
    assert torch.equal(signals[1].view(4, 2), torch.tensor([[0., 0.], [0., 0.], [0., 1.], [0., 1.]]))


def test_feedback_decoders_chained_option():
    fb = _feedback(chained=True)
    with torch.no_grad():
        fb.decoders[0].linear.weight.copy_(torch.eye(4))
        fb.decoders[1].linear.weight.copy_(3 * torch.eye(4))
    seen = {}
    hooks = [_capture(d, seen, f"in{i}") for i, d in enumerate(fb.decoders)]
    hooks += [_capture(d, seen, f"out{i}", output=True) for i, d in enumerate(fb.decoders)]
    functional.reset_net(fb)
    with torch.no_grad():
        signals = fb(O_HAND.view(1, 1, 4, 2))
    for h in hooks:
        h.remove()
    assert isinstance(signals, list) and len(signals) == 2
    assert torch.allclose(seen["in0"].view(4, 2), GATE_HAND, atol=1e-6)  # D_1 reads A
    assert torch.equal(seen["in1"], seen["out0"])                          # D_2 reads D_1's output
    # D_1: H = A/2 (BN ~ identity): 1.5 fires in token 0, channels 0-1; negatives stay silent
    # D_2: H = 3 * spike / 2 = 1.5 fires on the same positions
    spikes = torch.tensor([[1., 0.], [1., 0.], [0., 0.], [0., 0.]])
    assert torch.equal(signals[0].view(4, 2), spikes)
    assert torch.equal(signals[1].view(4, 2), spikes)


# ---------------------------------------------------------------- loss (eq 22)

LN3 = math.log(3)
L1 = torch.tensor([[0., LN3], [LN3, 0.]])  # softmax rows [1/4, 3/4] and [3/4, 1/4]
L2 = torch.tensor([[0., 0.], [0., 0.]])    # softmax rows [1/2, 1/2]
Y = torch.tensor([1, 1])
CE1 = (math.log(4 / 3) + math.log(4)) / 2  # mean of -ln(3/4) and -ln(1/4)
CE2 = math.log(2)


def test_loss_is_alpha_weighted_sum_of_both_passes_cross_entropy():
    assert SpiLiFormerLoss(0.25)((L1, L2), Y).item() == pytest.approx(0.25 * CE1 + 0.75 * CE2, rel=1e-6)
    assert SpiLiFormerLoss(1.0)((L1, L2), Y).item() == pytest.approx(CE1, rel=1e-6)
    assert SpiLiFormerLoss(0.0)((L1, L2), Y).item() == pytest.approx(CE2, rel=1e-6)


def test_loss_default_alpha_is_half():
    loss = SpiLiFormerLoss()
    assert loss.alpha == 0.5
    assert loss((L1, L2), Y).item() == pytest.approx(0.5 * CE1 + 0.5 * CE2, rel=1e-6)


def test_loss_soft_targets_are_negative_sum_of_target_times_log_softmax():
    target = torch.tensor([[0.25, 0.75], [0.25, 0.75]])
    # row 0: -(.25 ln(1/4) + .75 ln(3/4)); row 1: -(.25 ln(3/4) + .75 ln(1/4)); L2 rows: ln 2
    row0 = 0.25 * math.log(4) + 0.75 * math.log(4 / 3)
    row1 = 0.25 * math.log(4 / 3) + 0.75 * math.log(4)
    ce1 = (row0 + row1) / 2
    assert SpiLiFormerLoss(0.25)((L1, L2), target).item() == pytest.approx(0.25 * ce1 + 0.75 * CE2, rel=1e-6)
    # soft targets already carry any smoothing: label_smoothing leaves them alone
    assert SpiLiFormerLoss(0.25, label_smoothing=0.1)((L1, L2), target).item() == pytest.approx(
        0.25 * ce1 + 0.75 * CE2, rel=1e-6)


def test_loss_single_tensor_is_plain_cross_entropy():
    assert SpiLiFormerLoss(0.25)(L1, Y).item() == pytest.approx(CE1, rel=1e-6)


@pytest.mark.parametrize("alpha", [-0.1, 1.5])
def test_loss_alpha_outside_unit_interval_raises(alpha):
    with pytest.raises(ValueError):
        SpiLiFormerLoss(alpha)


def test_loss_label_smoothing_applies_to_hard_targets():
    # eps = 0.1 over 2 classes: target 1 -> [0.05, 0.95]
    row0 = -(0.05 * math.log(1 / 4) + 0.95 * math.log(3 / 4))
    row1 = -(0.05 * math.log(3 / 4) + 0.95 * math.log(1 / 4))
    ce1 = (row0 + row1) / 2  # L2 is uniform: CE stays ln 2 whatever the target
    loss = SpiLiFormerLoss(0.5, label_smoothing=0.1)((L1, L2), Y).item()
    assert loss == pytest.approx(0.5 * ce1 + 0.5 * CE2, rel=1e-6)
    torch_ref = 0.5 * F.cross_entropy(L1, Y, label_smoothing=0.1) + 0.5 * F.cross_entropy(L2, Y, label_smoothing=0.1)
    assert loss == pytest.approx(torch_ref.item(), rel=1e-6)


# ---------------------------------------------------------------- FB-LiDiff (eq 17)

def test_fb_lidiff_feedback_enters_value_projection_only():
    torch.manual_seed(0)
    attn = FBLiDiffAttention(dim=8, num_heads=2, neuron_layer=TORCH_LIF).eval()
    x = torch.rand(2, 1, 8, 2, 2)      # [T, B, C, H, W]
    fb = torch.rand(2, 1, 8, 4)        # [T, B, C, N]
    tokens = x.flatten(3).flatten(0, 1)  # what a conv sees: [T*B, C, N]
    seen = {}
    hooks = [_capture(getattr(attn, n).conv, seen, n) for n in ("q", "k", "v")]
    for feedback, v_in in ((None, tokens), (fb, tokens + fb.flatten(0, 1))):
        functional.reset_net(attn)
        with torch.no_grad():
            out = attn(x, feedback=feedback)
        assert out.shape == x.shape
        assert torch.equal(seen["q"], tokens)
        assert torch.equal(seen["k"], tokens)
        assert torch.allclose(seen["v"], v_in)
    for h in hooks:
        h.remove()


def test_linear_alpha_moves_from_half_to_one_fifth():
    from models import linear_alpha
    assert linear_alpha(0, 11) == 0.5
    assert linear_alpha(5, 11) == pytest.approx(0.35)
    assert linear_alpha(10, 11) == pytest.approx(0.2)
    assert linear_alpha(50, 11) == pytest.approx(0.2)
