"""The model's settings as the engine takes them: `ModelConfig` is what training, the tools and the
benchmark build a model from; its fields are their command-line flags and what a checkpoint records
(`model_args`). The model declares the kinds (SpiLiFormer.SETTINGS); this is the flag layer over them.

A new first-class flag is one field here (its flag spellings and help) and the constructor argument
it feeds in models/spiliformer.py; the parsers, yml recipes, checkpoints and tools follow.

    cfg = ModelConfig(model="spiliformer_4_384", T=4, num_classes=100)
    model = cfg.build()
"""
import argparse
import dataclasses
import math
from dataclasses import dataclass, field
from typing import Optional

import timm
import yaml

from models import ConfigError, SpiLiFormer
from models.checkpoint import recorded_settings
from models.lif_backends import BACKENDS
from models.neurons import NEURONS
from models.settings import file_settings, setting_problem


RULES = {">= 1": lambda v: v >= 1, ">= 0": lambda v: v >= 0, "> 0": lambda v: v > 0,
         "in [0, 1]": lambda v: 0 <= v <= 1, "in [0, 1)": lambda v: 0 <= v < 1, "in (0, 1]": lambda v: 0 < v <= 1}


def within(kind, rule):
    """An argparse type: a `kind` (int or float) value keeping `rule` (RULES); nan and inf never do.
    A recipe's values are checked by it too (engine/config.py read_recipe)."""
    def parse(value):
        number = kind(value)
        if not (math.isfinite(number) and RULES[rule](number)):
            raise argparse.ArgumentTypeError(f"must be {rule}, got {value}")
        return number
    parse.kind, parse.__name__ = kind, kind.__name__  # argparse names the type in its messages
    return parse


positive, count, unit = within(int, ">= 1"), within(int, ">= 0"), within(float, "in [0, 1]")


def setting(default, *flags, help=None, kwarg=None, unset="the variant's", **argparse_kw):
    """A ModelConfig field: its default, its flags, the constructor keyword it feeds (default: the
    field's name) and what None means."""
    meta = dict(flags=flags, help=help, kwarg=kwarg, unset=unset, argparse=argparse_kw)
    if isinstance(default, dict):
        return field(default_factory=dict, metadata=meta)
    return field(default=default, metadata=meta)


def on_off(default, *flags, help=None, **kw):
    return setting(default, *flags, help=help, action=argparse.BooleanOptionalAction, **kw)


@dataclass(frozen=True)
class ModelConfig:
    """None means: the variant's own default (models/spiliformer.py) or, for num_classes, the data's."""

    model: Optional[str] = setting(None, "--model", help="registered model name, any case",
                                   unset="the dataset's paper model")
    T: Optional[int] = setting(None, "-T", "--T", "--time-step", type=positive, help="time steps")
    num_classes: Optional[int] = setting(None, "--num-classes", "--nb-classes", type=int, help="classes",
                                         unset="the dataset's")
    embed_dim: Optional[int] = setting(None, "--embed-dim", type=int, help="width of the deepest stage")
    depths: Optional[tuple] = setting(None, "--depths", type=int, nargs="+", help="blocks per stage")
    num_heads: Optional[int] = setting(None, "--num-heads", type=int, help="attention heads")
    mlp_ratio: Optional[float] = setting(None, "--mlp-ratio", type=float, help="MLP hidden width / block width")
    ff_lidiff: bool = on_off(True, "--ff-lidiff", help="FF-LiDiff attention (off: QKFormer token attention)")
    fb_lidiff: bool = on_off(True, "--fb-lidiff", help="FB-LiDiff attention with feedback (off: one pass)")
    feedback_scale: float = setting(1.0, "--feedback-scale", type=float,
                                    help="s in A = O (m1 - m2) s, eq 15 (official CIFAR-100: 2.0)")
    chained_feedback: bool = on_off(False, "--chained-feedback",
                                    help="feedback decoder m reads decoder m-1 (ablation; eq 15: each reads A)")
    drop_path: float = setting(0.0, "--drop-path", type=within(float, "in [0, 1)"), kwarg="drop_path_rate",
                               help="stochastic depth rate of the last block (linear from 0 over the blocks)")
    neuron: str = setting("lif", "--neuron", choices=NEURONS, help="lif, or ilif (integer LIF, Table 1's T=1 row)")
    legacy: bool = on_off(False, "--legacy", help="official numerics, for released weights")
    backend: str = setting("auto", "--backend", choices=BACKENDS, help="LIF kernel (not a property of the weights)")
    spike_storage: Optional[str] = setting(None, "--spike-storage", choices=("off", "bits", "lean"), nargs="?",
                                           const="bits", unset="off",
                                           help="what backward keeps: bits = spikes as bits, BN's input "
                                                "recomputed; lean = also the neurons' state recomputed (same "
                                                "gradients, less memory, slower; docs/benchmarks.md)")
    model_kwargs: dict = setting({}, "--model-kwargs", nargs="*", metavar="K=V",
                                 help="further model constructor arguments, values read as YAML (e.g. "
                                      "shallow_attn=token); a yml recipe may give a mapping")

    RUNTIME = ("backend", "spike_storage")  # how to run the weights, not what they are: never taken from a checkpoint

    @classmethod
    def add_flags(cls, parser, inherit=False, defaults=None):
        """Add every field's flag to `parser` (or an argument group). inherit=True (the tools): every
        default is None, meaning the checkpoint's value, else the variant's. `defaults`: {field: value}
        over the fields' own (the benchmark's model)."""
        for f in dataclasses.fields(cls):
            kw, meta = dict(f.metadata["argparse"]), f.metadata
            default = f.default_factory() if f.default is dataclasses.MISSING else f.default
            default = (defaults or {}).get(f.name, default)
            unset = meta["unset"] if default is None else None
            if inherit and f.name not in cls.RUNTIME:
                default, unset = None, f"the checkpoint's, else {meta['unset']}"
            help_ = f"{meta['help']} (unset: {unset})" if unset and default is None else meta["help"]
            parser.add_argument(*meta["flags"], dest=f.name, default=default, help=help_, **kw)
        return parser

    @classmethod
    def from_args(cls, args):
        """The configuration a parsed command line gives (a flag left at None: the field's default)."""
        return cls().updated(vars(args))

    def record(self):
        """A checkpoint's "model_args": every field but the runtime ones, as plain values."""
        return {f.name: list(v) if isinstance(v, tuple) else v for f in dataclasses.fields(self)
                if f.name not in self.RUNTIME and (v := getattr(self, f.name)) is not None}

    @classmethod
    def recorded_in(cls, checkpoint, source="the checkpoint"):
        """{field: value} a checkpoint records (models.checkpoint.recorded_settings): a model name only if
        it is one of ours, a value only if it is a plain value of the model's kind for it (QKFormer's
        CIFAR yml records `depths: 4`, its total block count: not ours), model_kwargs as file_settings
        allows."""
        recorded = recorded_settings(checkpoint)
        found = {}
        for f in dataclasses.fields(cls):
            value = recorded.get(f.name)
            if f.name in cls.RUNTIME or value is None:
                continue
            if f.name == "model_kwargs":
                found[f.name] = file_settings(value, source)
            elif f.name == "model":
                if str(value).lower() in timm.list_models("spiliformer*"):
                    found[f.name] = value
            elif not setting_problem(SpiLiFormer.SETTINGS[f.metadata["kwarg"] or f.name], value):
                found[f.name] = value
        return found

    def updated(self, values):
        """A copy with the fields among `values` (a dict) that are not None; model_kwargs merge."""
        names = {f.name for f in dataclasses.fields(self)}
        values = {k: v for k, v in values.items() if k in names and v is not None}
        if "model_kwargs" in values:
            values["model_kwargs"] = {**self.model_kwargs, **parse_model_kwargs(values["model_kwargs"])}
        return dataclasses.replace(self, **values)

    def flags_for(self, values):
        """The command line that would turn this configuration into one with `values` (a dict of
        fields), for the fields where they differ: e.g. ['--embed-dim 64', '--no-fb-lidiff']."""
        out = []
        for f in dataclasses.fields(self):
            value, option = values.get(f.name), next(o for o in f.metadata["flags"] if o.startswith("--"))
            if f.name not in values or _comparable(value) == _comparable(getattr(self, f.name)):
                continue
            if isinstance(value, bool):
                out.append(option if value else f"--no-{option[2:]}")
            else:
                items = [f"{k}={v}" for k, v in value.items()] if isinstance(value, dict) else value
                out.append(" ".join(map(str, [option, *(items if isinstance(items, (list, tuple)) else [items])])))
        return out

    def kwargs(self):
        """The constructor keywords (None fields left to the variant)."""
        out = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.name not in ("model", "model_kwargs") and value is not None:
                out[f.metadata["kwarg"] or f.name] = tuple(value) if isinstance(value, list) else value
        return {**out, **self.model_kwargs}

    def build(self, **overrides):
        """timm.create_model for settings a user gave: an unknown model, an unknown keyword or a
        value the model refuses becomes one ConfigError line."""
        known = timm.list_models("spiliformer*")
        name = (self.model or "").lower()
        if name not in known:
            raise ConfigError(f"unknown model {self.model!r}; choose from {known}")
        try:
            return timm.create_model(name, **{**self.kwargs(), **overrides})
        except (ValueError, TypeError) as exc:
            raise ConfigError(f"{self.model}: {exc}") from None


def _comparable(value):
    """Model names are read in any case; a record's lists are the parser's tuples."""
    return value.lower() if isinstance(value, str) else list(value) if isinstance(value, tuple) else value


def parse_model_kwargs(items):
    """['mlp_ratio=2', 'legacy=true'] (or a mapping from a yml) -> {'mlp_ratio': 2, 'legacy': True}."""
    if isinstance(items, dict):
        return dict(items)
    kwargs = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key.isidentifier():
            raise ConfigError(f"--model-kwargs takes NAME=VALUE items, got {item!r}")
        kwargs[key] = yaml.safe_load(value) if value else None
    return kwargs

