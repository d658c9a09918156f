"""The two lateral-inhibition attentions, side by side with QKFormer's token attention they
replace, the contract all three meet (SpikingAttention), and the feedback pathway between passes.

Inside attention, tokens are [T, B, C, N] (N = H*W); head j owns channels [j*C/h, (j+1)*C/h).
"""
import inspect

import torch
import torch.nn as nn
import torch.nn.functional as F

from . import spike_storage
from .errors import ConfigError
from .layers import batch_norm_again, token_unit
from .neurons import LIF

ATTN_THRESHOLD = 0.5  # the attention neurons fire at 0.5, all others at 1.0


class SpikingAttention(nn.Module):
    """What SpiLiFormer asks of an attention, shallow or deep; `build_attention` checks it.

    - Built as cls(dim, num_heads, neuron_layer=..., legacy=...): `neuron_layer(v_threshold)` makes
      a neuron (models.layers); `legacy=True` asks for the official code's numerics where they
      differ (only FB-LiDiff's differ; the others ignore it).
    - forward(x): token maps [T, B, C, H, W] -> the same shape. The deep stage's attention is called
      forward(x) in pass 1 and forward(x, feedback=X_FB) in pass 2, X_FB [T, B, C, N] (eq 17).
    - Two hook points, read by record_attention and so by forward_attention, tools/heatmap.py and
      tools/energy.py: attention_map_layer(), the sub-module whose output is the attention map
      [T, B, ..., N] (tokens last); query_layer(), the sub-module whose output is the query spikes
      [T, B, C, N] (tools/energy.py counts the attention's own matmuls, Q K^T V, at their rate).
    """

    def __init__(self, dim, num_heads, *, neuron_layer=LIF, legacy=False):
        super().__init__()
        self.num_heads = num_heads
        self.legacy = legacy

    def attention_map_layer(self):
        """The sub-module whose output is the attention map."""
        raise NotImplementedError

    def query_layer(self):
        """The sub-module whose output is the query spikes."""
        raise NotImplementedError


class TokenAttention(SpikingAttention):
    """QKFormer's token attention: a binary token mask SN(sum of Q per head) gates K per head.

    The shallow stages' attention with ff_lidiff=False (Table 3's ablation).
    """

    def __init__(self, dim, num_heads, *, neuron_layer=LIF, legacy=False):
        super().__init__(dim, num_heads, neuron_layer=neuron_layer, legacy=legacy)
        self.check_width(dim, num_heads)
        self.q = token_unit(dim, neuron_layer=neuron_layer)  # eq 4-5
        self.k = token_unit(dim, neuron_layer=neuron_layer)
        self.attn_lif = neuron_layer(ATTN_THRESHOLD)
        self.proj = token_unit(dim, bias=True, neuron_layer=neuron_layer)

    def attention_map_layer(self):
        return self.attn_lif

    def query_layer(self):
        return self.q

    @staticmethod
    def check_width(dim, num_heads):
        if dim % num_heads:
            raise ValueError(f"width {dim} is not divisible by num_heads={num_heads}")

    def token_mask(self, q):
        """[T, B, C, N] query spikes -> [T, B, heads, 1, N] token mask."""
        T, B, C, N = q.shape
        h = self.num_heads
        return self.attn_lif(q.view(T, B, h, C // h, N).sum(3, keepdim=True))

    def forward(self, x):
        T, B, C, H, W = x.shape
        tokens = x.flatten(3)
        q = self.q(tokens)
        k = self.k(tokens)
        mask = self.token_mask(q)
        out = spike_storage.spike_product(mask, k.view(T, B, self.num_heads, C // self.num_heads, -1))  # eq 8
        out = out.view(T, B, C, -1)
        return self.proj(out).view(T, B, C, H, W)


class FFLiDiffAttention(TokenAttention):
    """FF-LiDiff attention (eqs 4-8): the token mask from excitatory minus inhibitory Q.

    Exactly QKFormer's parameters; only the mask differs from TokenAttention.
    """

    @staticmethod
    def check_width(dim, num_heads):
        if dim % (2 * num_heads):
            raise ValueError(f"FF-LiDiff attention splits {dim} channels into 2 halves of {num_heads} "
                             "heads; the width must be divisible by 2*num_heads")

    def token_mask(self, q):
        T, B, C, N = q.shape
        h = self.num_heads
        # eq 6: Q1 = channels [0, C/2), Q2 = [C/2, C), each cut into h groups of C/(2h)
        excite, inhibit = q.view(T, B, 2, h, C // (2 * h), N).sum(4).unbind(2)
        return self.attn_lif((excite - inhibit).unsqueeze(3))  # eq 7


class FBLiDiffAttention(SpikingAttention):
    """FB-LiDiff attention (eqs 9-11, 16-19): QKFormer's spiking self-attention whose V takes feedback.

    Pass 1 calls it with `feedback=None`; pass 2 adds the decoded feedback to the input of
    W_V only (eq 17: BN(X W_V + X_FB W_V), computed as BN((X + X_FB) W_V)).
    `legacy=True` runs the projection neuron over the T*B-flattened axis, as the official code
    (and its released weights) did.
    """

    scale = 0.125

    def __init__(self, dim, num_heads, *, neuron_layer=LIF, legacy=False):
        super().__init__(dim, num_heads, neuron_layer=neuron_layer, legacy=legacy)
        TokenAttention.check_width(dim, num_heads)
        self.q = token_unit(dim, neuron_layer=neuron_layer)
        self.k = token_unit(dim, neuron_layer=neuron_layer)
        self.v = token_unit(dim, neuron_layer=neuron_layer)
        self.attn_lif = neuron_layer(ATTN_THRESHOLD)
        self.proj = token_unit(dim, bias=True, neuron_layer=neuron_layer)

    def attention_map_layer(self):
        return self.attn_lif

    def query_layer(self):
        return self.q

    def forward(self, x, feedback=None):
        T, B, C, H, W = x.shape
        h = self.num_heads
        tokens = x.flatten(3)
        q = self.q(tokens).view(T, B, h, C // h, -1)
        k = self.k(tokens).view(T, B, h, C // h, -1)
        v = self.v(tokens if feedback is None else spike_storage.spike_sum(tokens, feedback)).view(T, B, h, C // h, -1)
        # eq 10/18: Q (K^T V) per head, linear in N; spikes make every sum an exact integer
        kv = k @ v.transpose(-1, -2)                      # [T, B, h, d, d]
        attn = (kv.transpose(-1, -2) @ q) * self.scale    # [T, B, h, d, N]
        attn = self.attn_lif(attn.view(T, B, C, -1))
        out = self.proj.pre_activation(attn)              # eq 11/19
        if self.legacy:
            out = self.proj.lif(out.flatten(0, 1)).view_as(out)  # official: time axis = T*B
        else:
            out = self.proj.lif(out)
        return out.view(T, B, C, H, W)


class Feedback(nn.Module):
    """Feedback pathway between the two passes (eqs 12-15).

    O is the last FB block's pass-1 output (after its residuals). Per token,
    m_k = clamp(cos(O_token, p_k), 0, 1) for the excitatory and inhibitory prompts (our reading of
    eqs 12-13's "dot product ... broadcast along the token dimension", decisions D2);
    A = O * (m_1 - m_2) * scale. Decoders (Linear C->C without bias, BN, LIF), one per FB block,
    each read A: X_FB^m = D_m(A) (eq 15). `chained=True` is the ablation wiring
    X_FB^1 = D_1(A), X_FB^m = D_m(X_FB^(m-1)), with the same parameters.
    """

    def __init__(self, dim, num_blocks, scale=1.0, chained=False, neuron_layer=LIF):
        super().__init__()
        self.scale = scale
        self.chained = chained
        self.prompt_excite = nn.Parameter(torch.randn(dim))   # W_p1, eq 12
        self.prompt_inhibit = nn.Parameter(torch.randn(dim))  # W_p2, eq 13
        self.decoders = nn.ModuleList(FeedbackDecoder(dim, neuron_layer) for _ in range(num_blocks))

    def gate(self, out):
        """[T, B, C, N] -> A_combined^FB of eq 14, same shape."""
        # in fp32: a silent token (all zeros, common) has norm 0, and cosine_similarity's eps**2
        # underflows in fp16, so fp16 autocast made it 0/0 = NaN and the whole feedback path NaN
        tokens = out.float()
        excite = F.cosine_similarity(tokens, self.prompt_excite.float().view(1, 1, -1, 1), dim=2).clamp(0, 1)
        inhibit = F.cosine_similarity(tokens, self.prompt_inhibit.float().view(1, 1, -1, 1), dim=2).clamp(0, 1)
        return out * (excite - inhibit).unsqueeze(2) * self.scale

    def forward(self, out):
        """Pass-1 output [T, B, C, N] -> one feedback tensor [T, B, C, N] per FB block (eq 15)."""
        x = self.gate(out)
        if not self.chained:
            return [decoder(x) for decoder in self.decoders]  # eq 15: every W_FB^m reads A_combined
        signals = []
        for decoder in self.decoders:
            x = decoder(x)
            signals.append(x)
        return signals


class FeedbackDecoder(nn.Module):
    """W_FB of eq 15: Linear over channels (no bias), BN, LIF, on [T, B, C, N]."""

    def __init__(self, dim, neuron_layer=LIF):
        super().__init__()
        self.linear = nn.Linear(dim, dim, bias=False)
        self.bn = nn.BatchNorm1d(dim)
        self.lif = neuron_layer(1.0)

    def forward(self, x):
        x = x.transpose(2, 3)
        y = self.linear(x)                                       # [T, B, N, C]
        spike_storage.recompute_from(y, F.linear, x, self.linear.weight)  # what BN keeps
        z = self.bn(y.flatten(0, 2))                              # BN over channels
        spike_storage.recompute_from(z, batch_norm_again, self.bn, y.flatten(0, 2), self.bn.training, state=True)
        return self.lif(z.view_as(y).transpose(2, 3))


# names SpiLiFormer's shallow_attn / deep_attn accept (a class or callable works too)
ATTENTION_LAYERS = {"ff_lidiff": FFLiDiffAttention, "token": TokenAttention, "fb_lidiff": FBLiDiffAttention}
HOOKS = {"attention_map_layer": "the sub-module whose output is the attention map",
         "query_layer": "the sub-module whose output is the query spikes"}


def get_attn_layer(attn):
    """A name from ATTENTION_LAYERS, or a class/callable (returned as is)."""
    if callable(attn):
        return attn
    if attn not in ATTENTION_LAYERS:
        raise ConfigError(f"attention must be one of {sorted(ATTENTION_LAYERS)} or a class, got {attn!r}")
    return ATTENTION_LAYERS[attn]


def build_attention(layer, dim, num_heads, *, neuron_layer, legacy, deep):
    """layer(dim, num_heads, neuron_layer=, legacy=), checked against SpikingAttention's contract
    (`deep`: the deep stage's, which takes feedback=). What it lacks is one ConfigError, here, not an
    AttributeError later in a tool."""
    name = getattr(layer, "__name__", repr(layer))
    fix = "subclass models.SpikingAttention (see its docstring)"
    try:
        inspect.signature(layer).bind(dim, num_heads, neuron_layer=neuron_layer, legacy=legacy)
    except TypeError as exc:
        raise ConfigError(f"{name} cannot be built as {name}(dim, num_heads, neuron_layer=..., legacy=...) "
                          f"({exc}): {fix}") from None
    except ValueError:  # no signature to read (a builtin): building it will tell
        pass
    attn = layer(dim, num_heads, neuron_layer=neuron_layer, legacy=legacy)
    if not isinstance(attn, nn.Module):
        raise ConfigError(f"{name} built a {type(attn).__name__}, not an nn.Module: {fix}")
    for hook, what in HOOKS.items():
        method = getattr(attn, hook, None)
        try:
            module = method() if callable(method) else None
        except NotImplementedError:  # SpikingAttention's own: not overridden
            module = None
        if module is None:
            raise ConfigError(f"{name} has no {hook}() hook ({what}): {fix} and return it from {hook}()")
        if not any(module is m for m in attn.modules()):
            raise ConfigError(f"{name}.{hook}() returned {type(module).__name__}, not one of its sub-modules "
                              f"({what})")
    parameters = inspect.signature(attn.forward).parameters
    if deep and "feedback" not in parameters and not any(p.kind is p.VAR_KEYWORD for p in parameters.values()):
        raise ConfigError(f"{name} is the deep stage's attention, but its forward takes no feedback=: define "
                          "forward(self, x, feedback=None) (None in pass 1, the decoded feedback [T, B, C, N] "
                          "in pass 2)")
    return attn
