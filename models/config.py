"""The model's settings, in one place: `ModelConfig` is what training, the tools and the benchmark
build a model from, and its fields are their command-line flags and what a checkpoint records.

A new setting is one field here (its flag spellings and help in `metadata`) and the constructor
argument it feeds in models/spiliformer.py; the parsers, yml recipes, checkpoints and tools follow.

    cfg = ModelConfig(model="spiliformer_4_384", T=4, num_classes=100)
    model = cfg.build()
"""
import argparse
import dataclasses
from dataclasses import dataclass, field
from typing import Optional

import timm
import yaml

from .errors import ConfigError
from .lif_backends import BACKENDS
from .neurons import NEURONS
from .spiliformer import SpiLiFormer


def setting(default, *flags, help=None, kwarg=None, recorded=(), **argparse_kw):
    """A ModelConfig field: its default, its flags (first long one = the destination's spelling in
    --help), the constructor keyword it feeds (default: the field's name), and other names under
    which checkpoints of other code bases record it."""
    meta = dict(flags=flags, help=help, kwarg=kwarg, recorded=recorded, argparse=argparse_kw)
    if isinstance(default, dict):
        return field(default_factory=dict, metadata=meta)
    return field(default=default, metadata=meta)


def on_off(default, *flags, help=None, **kw):
    return setting(default, *flags, help=help, action=argparse.BooleanOptionalAction, **kw)


@dataclass(frozen=True)
class ModelConfig:
    """None means: the variant's own default (models/spiliformer.py) or, for num_classes, the data's."""

    model: Optional[str] = setting(None, "--model", help="registered model name, any case (unset: the "
                                   "dataset's paper model)")
    T: Optional[int] = setting(None, "-T", "--T", "--time-step", "--time_step", type=int, recorded=("time_step",),
                               help="time steps (unset: the variant's)")
    num_classes: Optional[int] = setting(None, "--num-classes", "--num_classes", "--nb_classes", "--nb-classes",
                                         type=int, recorded=("nb_classes",), help="unset: the dataset's")
    embed_dim: Optional[int] = setting(None, "--embed-dim", "--embed_dim", type=int,
                                       help="width of the deepest stage, to shrink the model")
    depths: Optional[tuple] = setting(None, "--depths", type=int, nargs="+", help="blocks per stage")
    num_heads: Optional[int] = setting(None, "--num-heads", "--num_heads", type=int,
                                       help="attention heads (unset: the variant's)")
    mlp_ratio: Optional[float] = setting(None, "--mlp-ratio", "--mlp_ratio", type=float,
                                         help="MLP hidden width / block width (unset: the variant's)")
    ff_lidiff: bool = on_off(True, "--ff-lidiff", "--ff_lidiff", help="FF-LiDiff attention (off: QKFormer token "
                             "attention)")
    fb_lidiff: bool = on_off(True, "--fb-lidiff", "--fb_lidiff", help="FB-LiDiff attention with feedback "
                             "(off: one pass)")
    feedback_scale: float = setting(1.0, "--feedback-scale", "--feedback_scale", type=float,
                                    help="s in A = O (m1 - m2) s, eq 15 (official CIFAR-100: 2.0)")
    chained_feedback: bool = on_off(False, "--chained-feedback", "--chained_feedback",
                                    help="feedback decoder m reads decoder m-1 (ablation; eq 15: each reads A)")
    drop_path: float = setting(0.0, "--drop-path", "--drop_path", type=float, kwarg="drop_path_rate",
                               help="stochastic depth rate of the last block (linear from 0 over the blocks)")
    neuron: str = setting("lif", "--neuron", choices=NEURONS, help="lif, or ilif (integer LIF, Table 1's T=1 row)")
    legacy: bool = on_off(False, "--legacy", help="official numerics, for released weights")
    backend: str = setting("auto", "--backend", choices=BACKENDS, help="LIF kernel (not a property of the weights)")
    spike_storage: Optional[str] = setting(None, "--spike-storage", "--spike_storage", choices=("off", "bits", "lean"),
                                 nargs="?", const="bits",
                                 help="what backward keeps (unset: off): bits = spikes as bits, BN's input "
                                      "recomputed; lean = also the neurons' state recomputed (same gradients, less "
                                      "memory, slower; docs/benchmarks.md)")
    model_kwargs: dict = setting({}, "--model-kwargs", "--model_kwargs", nargs="*", metavar="K=V",
                                 help="further model constructor arguments, values read as YAML (e.g. "
                                      "shallow_attn=token); a yml recipe may give a mapping")

    RUNTIME = ("backend", "spike_storage")  # how to run the weights, not what they are: never taken from a checkpoint

    @classmethod
    def add_flags(cls, parser, inherit=False):
        """Add every field's flag to `parser` (or an argument group). inherit=True (the tools): every
        default is None, meaning the checkpoint's value, else the variant's."""
        for f in dataclasses.fields(cls):
            kw = dict(f.metadata["argparse"])
            default = f.default_factory() if f.default is dataclasses.MISSING else f.default
            help_ = f.metadata["help"]
            if inherit and f.name not in cls.RUNTIME:
                default = None
                help_ = f"{help_ + '; ' if help_ else ''}unset: the checkpoint's, else the variant's"
            parser.add_argument(*f.metadata["flags"], dest=f.name, default=default, help=help_, **kw)
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
        """{field: value} a checkpoint records: its "model_args" (ours since they exist), else its run's
        "args" (ours by field name, QKFormer/MAE's by theirs); a model name only if it is one of ours;
        a value only if our flag could have given it; model_kwargs only as `file_settings` allows."""
        own = checkpoint.get("model_args") if isinstance(checkpoint, dict) else None
        recorded = own if isinstance(own, dict) else recorded_args(checkpoint)
        actions = {a.dest: a for a in cls.add_flags(argparse.ArgumentParser(add_help=False))._actions}
        found = {}
        for f in dataclasses.fields(cls):
            if f.name in cls.RUNTIME:
                continue
            # a value of another type is another code base's setting of that name (QKFormer's CIFAR
            # yml records depths: 4, its total block count), not ours
            values = [recorded[n] for n in (f.name, *f.metadata["recorded"])
                      if recorded.get(n) is not None and not value_problem(actions[f.name], recorded[n])]
            if values:
                found[f.name] = values[0]
        if "model_kwargs" in found:
            found["model_kwargs"] = file_settings(found["model_kwargs"], source)
        if str(found.get("model", "")).lower() not in timm.list_models("spiliformer*"):
            found.pop("model", None)
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
            if f.name not in values or values[f.name] == getattr(self, f.name):
                continue
            if f.name == "model" and str(values["model"]).lower() == str(self.model).lower():
                continue
            value, flag = values[f.name], next(o for o in f.metadata["flags"] if o.startswith("--"))
            if f.metadata["argparse"].get("action") is argparse.BooleanOptionalAction:
                out.append(flag if value else f"--no-{flag[2:]}")
            elif isinstance(value, dict):
                out.append(f"{flag} " + " ".join(f"{k}={v}" for k, v in value.items()))
            elif isinstance(value, (list, tuple)):
                if list(value) != list(getattr(self, f.name) or ()):
                    out.append(f"{flag} " + " ".join(map(str, value)))
            else:
                out.append(f"{flag} {value}")
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


def file_settings(kwargs, source):
    """Model constructor arguments read from a file (a checkpoint's record, a yml recipe): data, so only
    the model's declared SpiLiFormer.SETTINGS, each a plain value of its kind. Anything else would let
    the file steer timm.create_model (pretrained=True with a pretrained_cfg_overlay URL and a cache_dir
    fetches and writes files); one ConfigError line names the key."""
    if not isinstance(kwargs, dict):
        raise ConfigError(f"{source}: model_kwargs is a {type(kwargs).__name__}, expected a mapping of model "
                          "settings")
    for key, value in kwargs.items():
        if key not in SpiLiFormer.SETTINGS:
            raise ConfigError(f"{source}: model_kwargs {key!r} is not a model setting, and only model settings "
                              f"({', '.join(SpiLiFormer.SETTINGS)}) are taken from a file; if you trust it, "
                              f"give --model-kwargs {key}=... on your own command line")
        problem = setting_problem(SpiLiFormer.SETTINGS[key], value)
        if problem:
            raise ConfigError(f"{source}: model_kwargs {key}: {value!r} {problem}")
    return dict(kwargs)


def setting_problem(kind, value):
    """Why `value` is not a plain value of `kind` (a type, [type] for a list, or a tuple of allowed
    strings), or None."""
    if isinstance(kind, tuple):
        return None if value in kind and isinstance(value, str) else f"is not one of {list(kind)}"
    if isinstance(kind, list):
        if not isinstance(value, (list, tuple)):
            return "is not a list"
        return next(filter(None, (setting_problem(kind[0], v) for v in value)), None)
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        return None
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        return f"is not {'an' if kind is int else 'a'} {kind.__name__}"
    return None


def recorded_args(checkpoint):
    """A checkpoint's "args" (a dict, or an argparse.Namespace as MAE-style code saves it) as a dict."""
    recorded = checkpoint.get("args") if isinstance(checkpoint, dict) else None
    recorded = vars(recorded) if isinstance(recorded, argparse.Namespace) else recorded
    return recorded if isinstance(recorded, dict) else {}


def value_problem(action, value):
    """Why a value (from a yml recipe, a checkpoint's record) could not have come from the flag's
    command line, or None."""
    if value is None or (action.dest == "model_kwargs" and isinstance(value, dict)):
        return None
    if action.nargs == 0:  # on/off flags
        return None if isinstance(value, bool) else "is not true or false"
    many = action.nargs in ("+", "*") or isinstance(action.nargs, int)
    values = value if many and isinstance(value, (list, tuple)) else [value]
    if many and not isinstance(value, (list, tuple)):
        return "is not a list"
    kind = action.type or str
    for v in values:
        if kind is int and (isinstance(v, bool) or not isinstance(v, int)):
            return "is not an integer"
        if kind is float and (isinstance(v, bool) or not isinstance(v, (int, float))):
            return "is not a number"
        if kind is str and not isinstance(v, str):
            return "is not a string"
        if action.choices is not None and v not in action.choices:
            return f"is not one of {list(action.choices)}"
    return None
