"""SpiLiFormer: QKFormer's three-stage hierarchy with FF-LiDiff attention in the shallow stages
and FB-LiDiff attention, run twice with feedback, in the deep stage (paper Fig. 1c, Sec. 3).

Tensors between blocks are token maps [T, B, C, H, W]. The deepest stage is "stage 3" of the
paper whatever the number of stages (the event-data model has two).
"""
import contextlib
from typing import NamedTuple, Optional

import torch
import torch.nn as nn
from spikingjelly.activation_based import functional
from torch.utils.checkpoint import checkpoint
from timm.layers import trunc_normal_
from timm.models import build_model_with_cfg, generate_default_cfgs, register_model

from . import neurons, spike_storage
from .spike_storage import LEVELS as STORAGE_LEVELS
from .checkpoint import checkpoint_filter_fn
from .attention import ATTENTION_LAYERS, Feedback, build_attention, get_attn_layer
from .layers import STEM_NARROWING, STEM_REDUCTION, STEMS, DropPath, SpikingMLP, stage_embed
from .neurons import LIF


class Passes(NamedTuple):
    """Logits of the two forward passes; `first` is None for a one-pass model (fb_lidiff=False)."""
    first: Optional[torch.Tensor]
    final: torch.Tensor


class AttentionRecord(NamedTuple):
    """One attention module in a forward: one entry per pass it ran (two for the deep blocks of a
    two-pass model), read at its SpikingAttention hook points. `attention`: its attention_map_layer()'s
    output (FF: the [T, B, heads, 1, N] token mask of eq 7; FB: the [T, B, C, N] spikes of eqs 10, 18);
    `query`: its query_layer()'s output, the [T, B, C, N] query spikes."""
    kind: str  # 'FF' (shallow stages) or 'FB' (the deep stage)
    attention: list
    query: list


class _Runs:
    """Handed to one checkpointed call of a block: tells its forward from backward's recomputation."""

    def __init__(self):
        self.forward_done = False


class Block(nn.Module):
    """x + attn(x), then x + mlp(x); no norm layers (QKFormer). Stochastic depth (Sec. 4.1) drops
    each residual branch per sample with probability `drop_path`."""

    grad_checkpointing = False  # set by SpiLiFormer.set_grad_checkpointing

    def __init__(self, attn, dim, mlp_ratio, drop_path=0.0, neuron_layer=LIF):
        super().__init__()
        self.attn = attn
        self.mlp = SpikingMLP(dim, int(dim * mlp_ratio), neuron_layer)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, x, feedback=None):
        if self.grad_checkpointing and torch.is_grad_enabled():
            # checkpoint restores the RNG state, so the recomputation draws the same drop-path masks
            with spike_storage.paused():
                return checkpoint(self._from_rest, x, feedback, _Runs(), use_reentrant=False)
        return self._body(x, feedback)

    def _from_rest(self, x, feedback, runs):
        # the recomputation in backward must start from the same (resting) neurons as the forward
        # did, and must not move BN's running statistics a second time for the same batch
        functional.reset_net(self)
        recompute = runs.forward_done
        runs.forward_done = True
        with frozen_bn_statistics(self) if recompute else contextlib.nullcontext():
            return self._body(x, feedback)

    def _body(self, x, feedback):
        # the residual stream is a sum of spikes: its bound grows by one per branch (unless drop path scales it)
        attn = self.attn(x) if feedback is None else self.attn(x, feedback=feedback)
        x = spike_storage.spike_sum(x, self.drop_path(attn))
        return spike_storage.spike_sum(x, self.drop_path(self.mlp(x)))


@contextlib.contextmanager
def frozen_bn_statistics(module):
    """BN layers normalise with the batch as usual; their running mean, var and batch count are put
    back afterwards."""
    bns = [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]
    saved = [[b.clone() for b in (m.running_mean, m.running_var, m.num_batches_tracked)] for m in bns]
    try:
        yield
    finally:
        for m, values in zip(bns, saved):
            for buffer, value in zip((m.running_mean, m.running_var, m.num_batches_tracked), values):
                buffer.copy_(value)


class Stage(nn.Module):
    def __init__(self, downsample, blocks):
        super().__init__()
        self.downsample = downsample
        self.blocks = nn.ModuleList(blocks)

    def forward(self, x):
        x = self.downsample(x)
        for block in self.blocks:
            x = block(x)
        return x


class SpiLiFormer(nn.Module):
    """SpiLiFormer-L-D.

    Args:
        stem: 'cifar' (no downsampling), 'imagenet' (/4) or 'event' (/8) first SPEDS.
        embed_dim: width D of the deepest stage; stage i has D / 2^(stages-1-i).
        depths: blocks per stage, e.g. (1, 2, 7); the last stage holds the FB-LiDiff blocks.
        T: time steps a static image is repeated over (event input brings its own T).
        ff_lidiff / fb_lidiff: the two ablation switches of Table 3; both off is QKFormer.
        shallow_attn / deep_attn: the attention of the shallow stages and of the deep stage, a name
            from models.attention.ATTENTION_LAYERS or a class meeting models.SpikingAttention's
            contract (checked here); shallow default 'ff_lidiff', or 'token' with ff_lidiff=False;
            deep default 'fb_lidiff'.
        feedback_scale: s in A = O (m1 - m2) s (the official CIFAR-100 model used 2.0).
        chained_feedback: decoder m reads decoder m-1's output instead of A (eq 15 reads A in every
            decoder); same parameters, so a checkpoint loads with either wiring.
        drop_path_rate: stochastic depth of the last block; rates rise linearly from 0 over all
            blocks (timm's torch.linspace(0, rate, depth)).
        neuron: 'lif' or 'ilif' (integer LIF, Table 1's T=1 row).
        backend: the LIF kernel (models.neurons); `set_backend` changes it later.
        legacy: reproduce the official code's numerics (SSA projection neuron over T*B) so its
            released weights reach their published accuracy.
        spike_storage: what backward keeps (models/spike_storage.py): 'off' (autograd's float
            tensors), 'bits' (spikes as bits; BN's input recomputed from them) or 'lean' (also the
            neurons' state recomputed). Same gradients; how to train the weights, not what they are.
    """

    # What the weights are: the constructor arguments a checkpoint's record or a recipe may set, as
    # plain values of these kinds (a type, a list of one type, or the allowed strings; models/settings.py
    # checks them). The rest of what the constructor and timm.create_model take (backend, spike_storage,
    # pretrained, pretrained_cfg_overlay, cache_dir, ...) comes from the user's own code or command line only.
    SETTINGS = dict(stem=tuple(STEMS), in_chans=int, num_classes=int, embed_dim=int, depths=[int],
                    num_heads=int, mlp_ratio=float, T=int, ff_lidiff=bool, fb_lidiff=bool,
                    feedback_scale=float, chained_feedback=bool, drop_path_rate=float,
                    neuron=tuple(neurons.NEURONS), legacy=bool, shallow_attn=tuple(ATTENTION_LAYERS),
                    deep_attn=tuple(ATTENTION_LAYERS))

    def __init__(self, stem="imagenet", in_chans=3, num_classes=1000, embed_dim=768, depths=(1, 2, 7),
                 num_heads=12, mlp_ratio=4.0, T=4, ff_lidiff=True, fb_lidiff=True, feedback_scale=1.0,
                 chained_feedback=False, drop_path_rate=0.0, neuron="lif", backend="auto", legacy=False,
                 shallow_attn=None, deep_attn=None, spike_storage="off"):
        super().__init__()
        if stem not in STEMS:
            raise ValueError(f"stem must be one of {sorted(STEMS)}, got {stem!r}")
        for name, value in (("T", T), ("embed_dim", embed_dim), ("num_heads", num_heads)):
            if value < 1:
                raise ValueError(f"{name} must be at least 1, got {value}")
        if not (mlp_ratio > 0 and 0 <= drop_path_rate < 1):
            raise ValueError(f"mlp_ratio must be > 0 and drop_path_rate in [0, 1), got {mlp_ratio}, {drop_path_rate}")
        depths = tuple(depths)
        if len(depths) < 2 or depths[-1] < 1:
            raise ValueError(f"depths {depths}: need at least two stages and one FB-LiDiff block in the last")
        num_stages = len(depths)
        multiple = 2 ** (num_stages - 1) * STEM_NARROWING[stem]
        if embed_dim % multiple:
            raise ValueError(f"embed_dim={embed_dim} must be a multiple of {multiple} for the "
                             f"{stem} stem and {num_stages} stages")
        neuron_layer = neurons.get_neuron_layer(neuron)
        shallow_attn = get_attn_layer(shallow_attn or ("ff_lidiff" if ff_lidiff else "token"))
        deep_attn = get_attn_layer(deep_attn or "fb_lidiff")
        self.T = T
        # the shape-giving settings as resolved (variant defaults included), for checkpoint records
        self.architecture = dict(T=T, embed_dim=embed_dim, depths=depths, num_heads=num_heads, mlp_ratio=mlp_ratio)
        self.in_chans = in_chans
        self.num_classes = num_classes
        self.fb_lidiff = fb_lidiff
        self.reduction = STEM_REDUCTION[stem] * 2 ** (num_stages - 1)
        self.dims = [embed_dim // 2 ** (num_stages - 1 - i) for i in range(num_stages)]

        drop_rates = iter(torch.linspace(0, drop_path_rate, sum(depths), device="cpu").tolist())
        stages = []
        for i, (dim, depth) in enumerate(zip(self.dims, depths)):
            if i == 0:
                downsample = STEMS[stem](in_chans, dim, neuron_layer)
            else:
                downsample = stage_embed(dim, pool_first=stem == "imagenet", neuron_layer=neuron_layer)
            deep = i == num_stages - 1
            attns = [build_attention(deep_attn if deep else shallow_attn, dim, num_heads, deep=deep,
                                     neuron_layer=neuron_layer, legacy=legacy) for _ in range(depth)]
            blocks = [Block(a, dim, mlp_ratio, drop_path=next(drop_rates), neuron_layer=neuron_layer)
                      for a in attns]
            stages.append(Stage(downsample, blocks))
        self.stages = nn.ModuleList(stages)
        self.feedback = Feedback(self.dims[-1], depths[-1], feedback_scale, chained=chained_feedback,
                                 neuron_layer=neuron_layer) if fb_lidiff else None
        self.head = nn.Linear(self.dims[-1], num_classes) if num_classes > 0 else nn.Identity()
        self.apply(self._init_weights)
        self.set_backend(backend)
        if spike_storage not in STORAGE_LEVELS:
            raise ValueError(f"spike_storage must be one of {STORAGE_LEVELS}, got {spike_storage!r}")
        self.spike_storage = spike_storage

    def set_backend(self, backend):
        """Run every LIF on `backend` (see models.neurons): a kernel choice, not an architecture one."""
        return neurons.set_backend(self, backend)

    @staticmethod
    def _init_weights(m):
        if isinstance(m, nn.Linear):
            trunc_normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)

    @torch.jit.ignore
    def set_grad_checkpointing(self, enable=True):
        """timm's convention: recompute each block in backward instead of keeping its activations
        (the recomputation leaves BN's running statistics alone: each batch counts once)."""
        for m in self.modules():
            if isinstance(m, Block):
                m.grad_checkpointing = enable

    @torch.jit.ignore
    def group_matcher(self, coarse=False):
        """Parameter groups in depth order, for timm's layer-wise lr decay (stem first, head last)."""
        return {"stem": r"^stages\.0\.downsample",
                "blocks": r"^stages\.(\d+)" if coarse else [(r"^stages\.(\d+)\.downsample", (0,)),
                                                          (r"^stages\.(\d+)\.blocks\.(\d+)", None)]}

    def to_time_steps(self, x):
        """[B, C, H, W] image (repeated T times) or [B, T, C, H, W] event frames -> [T, B, C, H, W]."""
        if x.dim() == 4:
            x = x.unsqueeze(0).repeat(self.T, 1, 1, 1, 1)
        elif x.dim() == 5:
            x = x.transpose(0, 1)
        else:
            raise ValueError(f"expected input [B, {self.in_chans}, H, W] or [B, T, {self.in_chans}, H, W], "
                             f"got shape {tuple(x.shape)}")
        C, H, W = x.shape[2:]
        if C != self.in_chans:
            raise ValueError(f"input has {C} channels, the model was built for in_chans={self.in_chans}")
        if H % self.reduction or W % self.reduction:
            raise ValueError(f"input size {H}x{W} is not divisible by {self.reduction}, the model's total "
                             f"downsampling; resize or crop to a multiple of {self.reduction}")
        return x

    def head_logits(self, x):
        """CH of eqs 20-21: mean over tokens, mean over T, linear."""
        return self.head(x.flatten(3).mean(3).mean(0))

    def forward(self, x, passes=None):
        """Logits [B, classes]. By default (SPEC 4) a two-pass model in training returns
        Passes(first, final), the pass-1 and pass-2 logits the loss of eq 22 needs, so a generic
        `loss = criterion(model(x), y)` loop trains both passes; otherwise the final logits.
        `passes=True` always gives Passes (first None with fb_lidiff=False), `passes=False` always
        the final logits: callers that want one type in every mode say which."""
        functional.reset_net(self)  # every forward starts from rest: no caller can forget it
        with spike_storage.storing(self.stores_spikes(), level=self.spike_storage):
            first, logits = self._passes(self.to_time_steps(x))
        if passes is None:
            passes = self.training and first is not None
        return Passes(first, logits) if passes else logits

    def _passes(self, x):
        for stage in self.stages[:-1]:
            x = stage(x)
        deep = self.stages[-1]
        deep_input = deep.downsample(x)
        out = deep_input
        for block in deep.blocks:
            out = block(out)
        logits = self.head_logits(out)
        first = None
        if self.feedback is not None:
            # pass 2 (eqs 16-19): restart from the deep stage's input with fresh neurons, same weights;
            # stages 1-2 are not recomputed and nothing is detached
            first = logits
            feedback = self.feedback(out.flatten(3))
            functional.reset_net(deep)
            out = deep_input
            for block, signal in zip(deep.blocks, feedback):
                out = block(out, signal)
            logits = self.head_logits(out)
        return first, logits

    def stores_spikes(self):
        """Whether this forward keeps its spikes for backward as bits (models/spike_storage.py)."""
        if self.spike_storage == "off" or not torch.is_grad_enabled():
            return False
        if torch.compiler.is_compiling():  # inductor chooses what to keep and recompute itself
            _say_once("spike storage is off under torch.compile (the compiler decides what backward keeps)")
            return False
        return True

    def attention_names(self):
        """Names of the blocks' attention modules (as in the state dict), one list per stage."""
        return [[f"stages.{i}.blocks.{j}.attn" for j in range(len(stage.blocks))]
                for i, stage in enumerate(self.stages)]

    @contextlib.contextmanager
    def record_attention(self, names=None):
        """{name: AttentionRecord} filled by every forward run inside the `with` (all attention
        modules, or those `names` lists). Tools that wrap the model record through this."""
        stages = self.attention_names()
        known = [name for stage in stages for name in stage]
        unknown = sorted(set(names or ()) - set(known))
        if unknown:
            raise ValueError(f"no attention module named {unknown}; the model has {known}")
        records, handles = {}, []
        for i, stage in enumerate(stages):
            for name in stage:
                if names is not None and name not in names:
                    continue
                attn = self.get_submodule(name)
                record = records[name] = AttentionRecord("FB" if i == len(stages) - 1 else "FF", [], [])
                handles += [attn.attention_map_layer().register_forward_hook(_keep_output(record.attention)),
                            attn.query_layer().register_forward_hook(_keep_output(record.query))]
        try:
            yield records
        finally:
            for handle in handles:
                handle.remove()

    def forward_attention(self, x, names=None):
        """(Passes, {name: AttentionRecord}): the logits and what each attention did. (Not timm's
        forward_intermediates, whose signature is for feature maps.)"""
        with self.record_attention(names) as records:
            out = self(x, passes=True)
        return out, records


_said = set()


@torch.compiler.disable  # runs eagerly: once per process, however often dynamo traces the caller
def _say_once(message):
    if message not in _said:
        _said.add(message)
        print(message, flush=True)


def _keep_output(store):
    def hook(module, inputs, output):
        store.append(output.detach())
    return hook


def _cfg(**kwargs):
    return {"url": "", "classifier": "head", "first_conv": "stages.0.downsample.convs.0.conv",
            "mean": (0.485, 0.456, 0.406), "std": (0.229, 0.224, 0.225), "crop_pct": 0.875,
            "interpolation": "bicubic", **kwargs}


default_cfgs = generate_default_cfgs({
    "spiliformer_4_384": _cfg(num_classes=10, input_size=(3, 32, 32), crop_pct=1.0,
                              mean=(0.4914, 0.4822, 0.4465), std=(0.2470, 0.2435, 0.2616)),
    "spiliformer_2_256": _cfg(num_classes=10, input_size=(2, 128, 128), crop_pct=1.0, mean=(0, 0),
                              std=(1, 1)),
    "spiliformer_10_768": _cfg(num_classes=1000, input_size=(3, 224, 224)),
})


def _create(variant, pretrained=False, **kwargs):
    return build_model_with_cfg(SpiLiFormer, variant, pretrained,
                                pretrained_filter_fn=checkpoint_filter_fn, **kwargs)


@register_model
def spiliformer_4_384(pretrained=False, **kwargs):
    """CIFAR-10/100 (Table 2): 4 blocks (1, 1, 2), D 384, 8 heads, T 4."""
    args = dict(stem="cifar", embed_dim=384, depths=(1, 1, 2), num_heads=8, mlp_ratio=4, T=4)
    return _create("spiliformer_4_384", pretrained, **{**args, **kwargs})


@register_model
def spiliformer_2_256(pretrained=False, **kwargs):
    """CIFAR10-DVS / N-Caltech101 (Table 2): 1 FF + 1 FB block, D 256, 16 heads, MLP ratio 1, T 16."""
    args = dict(stem="event", in_chans=2, embed_dim=256, depths=(1, 1), num_heads=16, mlp_ratio=1, T=16)
    return _create("spiliformer_2_256", pretrained, **{**args, **kwargs})


@register_model
def spiliformer_10_768(pretrained=False, **kwargs):
    """ImageNet-1K (Table 1): 10 blocks (1, 2, 7), D 768, 12 heads, T 4 (T 1 with neuron='ilif')."""
    args = dict(stem="imagenet", embed_dim=768, depths=(1, 2, 7), num_heads=12, mlp_ratio=4, T=4)
    return _create("spiliformer_10_768", pretrained, **{**args, **kwargs})
