"""Command line + YAML recipes: one parser with every flag, in both spellings users bring.

Resolution, lowest to highest: the parser's defaults, the dataset's recipe (`<folder>/<folder>.yml`
beside its train.py, and `phaseN.yml` for `--phase N`), the yml given by --config, the command line.
yml keys are the flags' destinations; their values are checked like the command line's. Every
multi-word flag is accepted with dashes and with underscores (`--batch-size`, `--batch_size`), so
the seed commands of every folder work; --help shows one spelling and the recipe's values.
"""
import argparse
import math
import sys
from pathlib import Path

import torch
import yaml

from models import ConfigError
from models.settings import file_settings, setting_problem

from .model_config import ModelConfig, flag, parse_model_kwargs


class _HelpFormatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """One spelling per flag in --help (short form, then the first long one); all are accepted. The
    description is printed as written (a tool's examples)."""

    def _get_help_string(self, action):
        if action.default in (None, "", []) or isinstance(action, argparse._StoreFalseAction):
            return action.help or ""  # the help says what an unset value (or the switch) means
        return super()._get_help_string(action)

    def _format_action_invocation(self, action):
        if not action.option_strings:
            return super()._format_action_invocation(action)
        short = [o for o in action.option_strings if not o.startswith("--")][:1]
        long = [o for o in action.option_strings if o.startswith("--")][:1]
        negative = [o for o in action.option_strings if o.startswith("--no-")][:1]  # BooleanOptionalAction
        names = ", ".join(dict.fromkeys(short + long + negative))
        if action.nargs == 0:
            return names
        return f"{names} {self._format_args(action, self._get_default_metavar_for_optional(action))}"


def shared_flags(p, tools=False):
    """The flags train.py and the paper-table tools share, in the same spellings. tools=True: model
    settings unset (the checkpoint's, else the variant's), a smaller batch, the GPU when there is one."""
    ModelConfig.add_flags(p.add_argument_group("model"), inherit=tools)
    g = p.add_argument_group("data")
    flag(g, "-data-dir", "--data-dir", "--data-path", default="./data", help="dataset folder")
    flag(g, "--no-verify", dest="verify", action="store_false",
         help="accept dataset files whose checksums differ from the official ones")
    flag(g, "--img-size", "--input-size", type=int, nargs="+", default=None,
         help="input size: one value (square) or H W" + (" (unset: the checkpoint's, else the variant's)" if tools
                                                          else ""))
    flag(g, "-b", "--batch-size", type=int, default=16 if tools else 64, help="per process")
    flag(g, "--device", default=("cuda" if torch.cuda.is_available() else "cpu") if tools else None,
         help="cuda or cpu" + ("" if tools else " (default: cuda when available)"))
    return g


def new_parser(description):
    """A parser of train.py or a tool: one spelling per flag in --help, the defaults shown."""
    return argparse.ArgumentParser(description=description, usage="%(prog)s [options]", formatter_class=_HelpFormatter)


def build_parser(description):
    p = new_parser(description)
    flag(p, "-c", "--config", default="", help="YAML recipe over the dataset's; the command line overrides it")
    g = shared_flags(p)
    flag(g, "-j", "--workers", "--num-workers", type=int, default=4,
         help="loader worker processes per training process (capped at its cores)")
    flag(g, "--mean", type=float, nargs="+", default=None, help="per-channel input mean (unset: the variant's)")
    flag(g, "--std", type=float, nargs="+", default=None, help="per-channel input std (unset: the variant's)")
    flag(g, "--crop-pct", type=float, default=None,
         help="evaluation centre-crop fraction (unset: the variant's; ImageNet: 224/256 up to 224)")
    flag(g, "--scale", type=float, nargs=2, default=(0.08, 1.0), help="random-resized-crop area")
    flag(g, "--ratio", type=float, nargs=2, default=(3 / 4, 4 / 3), help="random-resized-crop aspect")
    flag(g, "--hflip", type=float, default=0.5, help="horizontal-flip probability")
    flag(g, "--color-jitter", type=float, default=0.0, help="colour-jitter strength (0: off)")
    flag(g, "--aa", default=None, help="timm auto-augment policy, e.g. rand-m9-n1-mstd0.4-inc1; 'none' or '' for none")
    flag(g, "--interpolation", default="bicubic", help="evaluation resize interpolation")
    flag(g, "--train-interpolation", default="bicubic", help="training resize interpolation")
    flag(g, "--reprob", type=float, default=0.0, help="random erasing probability")
    flag(g, "--remode", default="const", help="random-erasing fill: const, rand or pixel")
    flag(g, "--recount", type=int, default=1, help="random-erasing count per image")
    flag(g, "--mixup", type=float, default=0.0, help="mixup alpha (0: off)")
    flag(g, "--cutmix", type=float, default=0.0, help="cutmix alpha (0: off)")
    flag(g, "--mixup-prob", type=float, default=1.0, help="probability of mixing a batch")
    flag(g, "--mixup-switch-prob", type=float, default=0.5, help="chance of cutmix instead of mixup when both are on")
    flag(g, "--mixup-mode", default="batch", help="mix per batch, pair or elem")
    flag(g, "--mixup-off-epoch", type=int, default=0, help="turn mixup/cutmix off from this epoch (0: never)")
    flag(g, "--smoothing", type=float, default=0.1, help="label smoothing")

    g = p.add_argument_group("optimisation")
    flag(g, "--alpha", type=float, default=0.5, help="eq 22: weight of the pass-1 loss")
    flag(g, "--alpha-end", type=float, default=None,
         help="move alpha linearly to this value over training (official DVS: 0.5 -> 0.2)")
    flag(g, "--epochs", type=int, default=None, help="epochs before the cool-down (every recipe sets it)")
    flag(g, "--cooldown-epochs", type=int, default=0, help="epochs at the minimum lr after --epochs")
    flag(g, "--val-batch-size", type=int, default=None, help="evaluation batch per process (unset: --batch-size)")
    flag(g, "--accum-iter", type=int, default=1, help="gradient accumulation steps")
    flag(g, "--opt", default="adamw", help="timm optimizer name")
    flag(g, "--opt-eps", type=float, default=None, help="optimizer epsilon (unset: timm's)")
    flag(g, "--momentum", type=float, default=0.9, help="SGD momentum")
    flag(g, "--lr", type=float, default=None, help="peak learning rate (absolute)")
    flag(g, "--blr", type=float, default=None, help="base lr: without --lr, lr = blr x effective batch / 256")
    flag(g, "--layer-decay", type=float, default=None, help="layer-wise lr decay (1.0 or unset: none)")
    flag(g, "--sched-on-updates", action=argparse.BooleanOptionalAction, default=False,
         help="step the lr schedule every update instead of every epoch")
    flag(g, "--min-lr", type=float, default=1e-5, help="lr at the end of the schedule")
    flag(g, "--weight-decay", type=float, default=None, help="decoupled weight decay (every recipe sets it)")
    flag(g, "--sched", default="cosine", help="timm lr schedule name")
    flag(g, "--warmup-epochs", type=int, default=0, help="linear warm-up epochs from --warmup-lr")
    flag(g, "--warmup-lr", type=float, default=1e-5, help="lr at the start of the warm-up")
    flag(g, "--warmup-prefix", action=argparse.BooleanOptionalAction, default=False,
         help="cosine over the epochs after the warm-up (MAE's shape); --epochs stays the total")
    flag(g, "--clip-grad", type=float, default=None, help="clip the gradient norm to this (unset: no clipping)")

    g = p.add_argument_group("run")
    flag(g, "--output", "--output-dir", default="./outputs", help="checkpoints, config, log.txt, tensorboard go here")
    flag(g, "--experiment", default="", help="sub-folder of --output (default: model-T-time)")
    flag(g, "--log-dir", default="", help="tensorboard folder (default: the run folder)")
    flag(g, "--finetune", default="", help="initialise from CKPT (ours, QKFormer's or SpiLiFormer's); tensors it "
         "lacks or that do not fit are reported and keep their initialisation")
    flag(g, "--resume", default="", help="checkpoint to continue from (or to evaluate with --eval)")
    flag(g, "--eval", action="store_true", help="evaluate --resume and exit")
    flag(g, "--start-epoch", type=int, default=None, help="epoch to start at (unset: 0, or the resumed one's next)")
    flag(g, "--save-every", type=int, default=0, help="also keep checkpoint-EPOCH.pth every N epochs")
    flag(g, "--seed", type=int, default=42, help="seed of order, augmentation and initialisation (rank r adds r)")
    flag(g, "--amp", action=argparse.BooleanOptionalAction, default=False, help="mixed precision (CUDA only)")
    flag(g, "--amp-dtype", choices=("bf16", "fp16"), default="fp16",
         help="fp16 (with a GradScaler, as the official runs) or bf16")
    flag(g, "--threads", type=int, default=None, help="torch threads per process (default on CPU: OMP_NUM_THREADS "
         "if set, else its share of the cores minus its loader workers; on CUDA: torch's)")
    flag(g, "--compile", action="store_true",
         help="torch.compile the training model (the first steps compile: seconds on CUDA, minutes on CPU)")
    flag(g, "--log-interval", type=int, default=50, help="a progress line every N steps")
    flag(g, "--dist-eval", action=argparse.BooleanOptionalAction, default=True, help="shard evaluation over processes")
    flag(g, "--local-rank", type=int, default=None,
         help="accepted for torch.distributed.launch; LOCAL_RANK from the environment wins")
    return p


POSITIVE = ("T", "epochs", "batch_size", "accum_iter", "val_batch_size", "log_interval", "threads")
UNIT = ("in [0, 1]", lambda v: 0 <= v <= 1)
RANGES = {  # float flags: (the rule, as --help would say it; the check); nan and inf never pass
    "lr": ("> 0", lambda v: v > 0), "blr": ("> 0", lambda v: v > 0), "min_lr": (">= 0", lambda v: v >= 0),
    "warmup_lr": (">= 0", lambda v: v >= 0), "weight_decay": (">= 0", lambda v: v >= 0),
    "clip_grad": ("> 0", lambda v: v > 0), "smoothing": ("in [0, 1)", lambda v: 0 <= v < 1),
    "drop_path": ("in [0, 1)", lambda v: 0 <= v < 1), "mixup": (">= 0", lambda v: v >= 0),
    "cutmix": (">= 0", lambda v: v >= 0), "color_jitter": (">= 0", lambda v: v >= 0),
    "crop_pct": ("in (0, 1]", lambda v: 0 < v <= 1), "mixup_prob": UNIT, "mixup_switch_prob": UNIT,
    "reprob": UNIT, "hflip": UNIT, "momentum": UNIT, "alpha": UNIT, "alpha_end": UNIT,
}
NON_NEGATIVE = ("workers", "cooldown_epochs", "warmup_epochs", "save_every", "mixup_off_epoch")


class FrozenConfig(argparse.Namespace):
    """The resolved configuration; read-only, so every derived value is computed, not written back."""

    def __setattr__(self, name, value):
        if getattr(self, "_frozen", False):
            raise AttributeError(f"the configuration is frozen (resolved once in engine/config.py); "
                                 f"compute {name!r} where it is needed instead of writing it back")
        super().__setattr__(name, value)

    def freeze(self):
        super().__setattr__("_frozen", True)
        return self

    def as_dict(self):
        return {k: v for k, v in vars(self).items() if not k.startswith("_")}

    @property
    def given(self):
        """The destinations set on the command line (not by a recipe or a default)."""
        return getattr(self, "_given", frozenset())

    def replaced(self, values):
        """A frozen copy with `values` instead."""
        copy = FrozenConfig(**{**vars(self), **values, "_frozen": False})
        return copy.freeze()


def parse_command_line(entry, argv=None):
    """The resolved, frozen configuration of `entry`'s train.py (see the module docstring)."""
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser(f"SpiLiFormer on {entry.title}")
    if entry.add_flags:
        entry.add_flags(parser)
    defaults = {}
    for path in entry.recipes(argv):
        defaults.update(read_recipe(parser, path))
    data = entry.data_config
    defaults.setdefault("model", entry.model)
    args = parse_args(parser, argv, defaults=defaults, frozen=False)
    if args.img_size is None:
        args.img_size = list(data["input_size"])
    if entry.resolve:
        entry.resolve(args, parser, argv)
    for key in ("crop_pct", "mean", "std"):
        if getattr(args, key) is None:
            setattr(args, key, data[key] if key == "crop_pct" else list(data[key]))
    return args.freeze()


_UNSET = object()


def parse_args(parser, argv=None, defaults=None, frozen=True):
    """Parse `argv` over the yml given by --config over `defaults` (the dataset's recipe)."""
    argv = sys.argv[1:] if argv is None else argv
    if defaults:
        parser.set_defaults(**defaults)
    first, _ = parser.parse_known_args(argv)
    user_recipe = read_recipe(parser, first.config) if first.config else {}
    parser.set_defaults(**user_recipe)
    args = parser.parse_args(argv, namespace=FrozenConfig())
    # what the user chose (command line or own yml), as opposed to what a recipe chose
    probe = argparse.Namespace(**{a.dest: _UNSET for a in parser._actions})
    given = {k for k, v in vars(parser.parse_known_args(argv, namespace=probe)[0]).items() if v is not _UNSET}
    args._given = frozenset(given)  # the command line's: a checkpoint's record goes over any recipe
    given |= set(user_recipe)
    if {"lr", "blr"} <= given:
        parser.error("give --lr (absolute) or --blr (scaled by the effective batch / 256), not both")
    if "blr" in given:
        args.lr = None  # the user's base lr wins over a recipe's absolute one
    try:
        args.model_kwargs = parse_model_kwargs(args.model_kwargs)
    except ValueError as exc:
        parser.error(str(exc))
    if args.aa is not None and str(args.aa).strip().lower() in ("", "none", "null", "off"):
        args.aa = None  # timm asserts on 'none'
    check_values(parser, args)
    return args.freeze() if frozen else args


def check_values(parser, args):
    """Integers and floats inside their ranges, an input size of one or two sides (train.py and the
    tools): a parser error naming the flag."""
    if args.img_size is not None and (len(args.img_size) not in (1, 2) or min(args.img_size) < 1):
        parser.error(f"--img-size takes one positive value (square) or two (H W), got {args.img_size}")
    for name in POSITIVE + NON_NEGATIVE:  # their kind is checked already: argparse's type, a recipe's kind
        value = getattr(args, name, None)
        if value is not None and (value < 1 if name in POSITIVE else value < 0):
            parser.error(f"--{name.replace('_', '-')} must be {'>= 1' if name in POSITIVE else '>= 0'}, "
                         f"got {value}")
    for name, (rule, ok) in RANGES.items():
        value = getattr(args, name, None)
        if value is not None and not (math.isfinite(value) and ok(value)):
            parser.error(f"--{name.replace('_', '-')} must be {rule}, got {value}")


def read_recipe(parser, path, _seen=()):
    """A yml recipe as {destination: value}; any problem is a parser error naming the file. A recipe may
    begin with `extends: OTHER.yml` (relative to its own folder) and hold only what differs."""
    try:
        with open(path) as f:
            recipe = yaml.safe_load(f)
    except FileNotFoundError:
        parser.error(f"config file not found: {path}")
    except (OSError, yaml.YAMLError) as exc:
        parser.error(f"{path} is not valid YAML: {' '.join(str(exc).split())}")
    recipe = recipe or {}
    if not isinstance(recipe, dict):
        parser.error(f"{path} must be a mapping of flag names to values, got a {type(recipe).__name__}")
    base = {}
    if "extends" in recipe:
        other = Path(path).parent / str(recipe.pop("extends"))
        if other.resolve() in _seen:
            parser.error(f"{path}: extends {other}, which extends it back")
        base = read_recipe(parser, other, (*_seen, Path(path).resolve()))
    actions = {a.dest: a for a in parser._actions}
    unknown = sorted(set(recipe) - set(actions))
    if unknown:
        parser.error(f"{path}: unknown keys {unknown}; keys are the flags' names with underscores "
                     "(see --help)")
    if isinstance(recipe.get("img_size"), int):  # one side, as `--img-size 224` gives it
        recipe["img_size"] = [recipe["img_size"]]
    for key, value in recipe.items():
        problem = key != "model_kwargs" and value is not None and setting_problem(kind_of(actions[key]), value)
        if problem:
            parser.error(f"{path}: {key}: {value!r} {problem}")
    if "model_kwargs" in recipe:  # a shared recipe is data: model settings only
        try:
            recipe["model_kwargs"] = file_settings(parse_model_kwargs(recipe["model_kwargs"]), path)
        except ConfigError as exc:
            parser.error(str(exc))
    return {**base, **recipe}


def kind_of(action):
    """The kind of value (models.settings.setting_problem) a flag takes: a recipe's value must be one."""
    if action.nargs == 0 or isinstance(action, argparse.BooleanOptionalAction):
        return bool
    kind = tuple(action.choices) if action.choices is not None else (action.type or str)
    return [kind] if action.nargs in ("+", "*") or isinstance(action.nargs, int) else kind


def input_size(args):
    """(H, W) from --img-size."""
    size = list(args.img_size)
    return (size[0], size[-1])
