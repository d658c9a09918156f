"""Building units shared by every part of the model.

Layout: spiking tensors are [T, B, C, ...]; convolutions and BN see [T*B, C, ...] (time folded
into batch, which is exact for stateless layers), neurons see [T, B, C, ...].

Every constructor takes the neuron as `neuron_layer` (timm's `act_layer`), a callable
neuron_layer(v_threshold) -> module; the model chooses it once (models.neurons.get_neuron_layer).
"""
import torch.nn as nn
import torch.nn.functional as F

from . import spike_storage
from .neurons import LIF


class DropPath(nn.Module):
    """Stochastic depth (timm's `drop_path`: keep with 1 - p, scale by 1 / (1 - p)) on [T, B, ...].

    timm's DropPath draws one mask per index of dim 0, which here is the time step: it would drop
    a block at some steps of a sample and keep it at others. Here the mask is one per sample b,
    shared by all T steps. Identity in eval mode and at p = 0 (no random numbers drawn).
    """

    def __init__(self, drop_prob=0.0, scale_by_keep=True):
        super().__init__()
        self.drop_prob = drop_prob
        self.scale_by_keep = scale_by_keep

    def forward(self, x):
        if self.drop_prob == 0.0 or not self.training:
            return x
        keep = 1.0 - self.drop_prob
        mask = x.new_empty((1, x.shape[1]) + (1,) * (x.dim() - 2)).bernoulli_(keep)
        if keep > 0.0 and self.scale_by_keep:
            mask.div_(keep)
        return x * mask

    def extra_repr(self):
        return f"drop_prob={self.drop_prob:.3f}"


class ConvBNLIF(nn.Module):
    """conv -> BN -> (maxpool) -> spiking neuron, on [T, B, C, *spatial]."""

    def __init__(self, conv, bn, pool=False, neuron_layer=LIF, v_threshold=1.0):
        super().__init__()
        self.conv = conv
        self.bn = bn
        self.pool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1) if pool else nn.Identity()
        self.lif = neuron_layer(v_threshold)

    def pre_activation(self, x):
        T, B = x.shape[:2]
        x = x.flatten(0, 1)
        z = self.conv(x)
        # BN keeps its input for backward; with spike storage on, backward recomputes it from the
        # conv's (packed) input instead (models/spike_storage.py)
        spike_storage.recompute_from(z, self.conv._conv_forward, x, self.conv.weight, self.conv.bias)
        y = spike_storage.pool(self.pool, self.bn(z))
        # storage 'lean': the neuron's state is recomputed from this, itself recomputed from z
        spike_storage.recompute_from(y, self._normalise_again, z, self.bn.training, state=True)
        return y.unflatten(0, (T, B))

    def _normalise_again(self, z, training):
        return self.pool(batch_norm_again(self.bn, z, training))

    def forward(self, x):
        return self.lif(self.pre_activation(x))


def batch_norm_again(bn, x, training):
    """bn(x) once more, bit for bit (the same kernel on the same batch), leaving its running statistics alone."""
    stats = [None if s is None else s.clone() for s in (bn.running_mean, bn.running_var)]
    return F.batch_norm(x, *stats, bn.weight, bn.bias, training or stats[0] is None, 0.0, bn.eps)


def conv2d_unit(cin, cout, kernel=3, stride=1, pool=False, bias=False, neuron_layer=LIF):
    return ConvBNLIF(nn.Conv2d(cin, cout, kernel, stride, padding=kernel // 2, bias=bias),
                     nn.BatchNorm2d(cout), pool=pool, neuron_layer=neuron_layer)


def token_unit(dim, bias=False, neuron_layer=LIF):
    """1x1 projection over tokens [T, B, C, N] (Conv1d, as the official weights are shaped)."""
    return ConvBNLIF(nn.Conv1d(dim, dim, 1, bias=bias), nn.BatchNorm1d(dim), neuron_layer=neuron_layer)


class SPEDS(nn.Module):
    """Spiking Patch Embedding with Deformed Shortcut (QKFormer): a conv chain plus a 1x1 shortcut.

    `channels` lists the chain's widths from input to output, `pools` which convs are followed by
    maxpool 3/2/1, and the shortcut (1x1, `shortcut_stride`) reads the chain's input
    (`shortcut_from=-1`) or the output of conv `shortcut_from`. Output = chain + shortcut.
    """

    def __init__(self, channels, pools, shortcut_from, shortcut_stride, neuron_layer=LIF):
        super().__init__()
        self.convs = nn.ModuleList(
            conv2d_unit(cin, cout, pool=pool, neuron_layer=neuron_layer)
            for cin, cout, pool in zip(channels[:-1], channels[1:], pools))
        self.shortcut_from = shortcut_from
        self.shortcut = conv2d_unit(channels[shortcut_from + 1], channels[-1], kernel=1,
                                    stride=shortcut_stride, neuron_layer=neuron_layer)

    def forward(self, x):
        skip = x
        for i, unit in enumerate(self.convs):
            x = unit(x)
            if i == self.shortcut_from:
                skip = x
        return spike_storage.spike_sum(x, self.shortcut(skip))


def cifar_stem(in_chans, dim, neuron_layer=LIF):
    """32x32 stays 32x32 (1024 tokens): conv 3x3 to dim/2, conv 3x3 to dim, shortcut from conv 1."""
    return SPEDS([in_chans, dim // 2, dim], [False, False], 0, 1, neuron_layer)


def imagenet_stem(in_chans, dim, neuron_layer=LIF):
    """/4: conv+pool to dim/2, conv+pool to dim, conv; stride-2 shortcut from the first conv."""
    return SPEDS([in_chans, dim // 2, dim, dim], [True, True, False], 0, 2, neuron_layer)


def event_stem(in_chans, dim, neuron_layer=LIF):
    """/8 for event frames: widths dim/8, /4, /2, 1 with pools after the last three; stride-4 shortcut."""
    return SPEDS([in_chans, dim // 8, dim // 4, dim // 2, dim], [False, True, True, True], 1, 4, neuron_layer)


def stage_embed(dim, pool_first, neuron_layer=LIF):
    """/2 between stages: conv dim/2 -> dim, conv dim -> dim, maxpool after one of them."""
    return SPEDS([dim // 2, dim, dim], [pool_first, not pool_first], -1, 2, neuron_layer)


STEMS = {"cifar": cifar_stem, "imagenet": imagenet_stem, "event": event_stem}
STEM_REDUCTION = {"cifar": 1, "imagenet": 4, "event": 8}
STEM_NARROWING = {"cifar": 2, "imagenet": 2, "event": 8}  # output width / narrowest conv


class SpikingMLP(nn.Module):
    """Two 1x1 conv (bias) -> BN -> LIF layers on token maps [T, B, C, H, W]."""

    def __init__(self, dim, hidden, neuron_layer=LIF):
        super().__init__()
        self.fc1 = conv2d_unit(dim, hidden, kernel=1, bias=True, neuron_layer=neuron_layer)
        self.fc2 = conv2d_unit(hidden, dim, kernel=1, bias=True, neuron_layer=neuron_layer)

    def forward(self, x):
        return self.fc2(self.fc1(x))
