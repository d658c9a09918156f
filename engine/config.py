"""Command line + YAML recipes: one parser with every flag, read in both spellings users bring.

Resolution, lowest to highest: the parser's defaults, the dataset's recipe (`<folder>/<folder>.yml`
beside its train.py, and `phaseN.yml` for `--phase N`), the yml given by --config, the command line.
yml keys are the flags' destinations; their values are checked by the flags' own types.
"""
import argparse
import sys
from pathlib import Path

import torch
import yaml

from models import ConfigError
from models.settings import file_settings, setting_problem

from .model_config import ModelConfig, count, parse_model_kwargs, positive, unit, within

above_0, at_least_0 = within(float, "> 0"), within(float, ">= 0")


class _HelpFormatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """The defaults shown, a tool's description (its examples) as written, the metavar once."""

    def _get_help_string(self, action):
        if action.default in (None, "", []) or isinstance(action, argparse._StoreFalseAction):
            return action.help or ""  # the help says what an unset value (or the switch) means
        return super()._get_help_string(action)

    def _format_action_invocation(self, action):
        if not action.option_strings or action.nargs == 0:
            return super()._format_action_invocation(action)
        metavar = self._format_args(action, self._get_default_metavar_for_optional(action))
        return f"{', '.join(action.option_strings)} {metavar}"


class Parser(argparse.ArgumentParser):
    """The parser of train.py and the tools. A flag is declared with dashes and also read with
    underscores (`--batch_size` is `--batch-size`), the spellings of every seed command."""

    def __init__(self, description):
        super().__init__(description=description, usage="%(prog)s [options]", formatter_class=_HelpFormatter)

    def parse_known_args(self, args=None, namespace=None):
        args = sys.argv[1:] if args is None else args
        return super().parse_known_args([_dashed(a) for a in args], namespace)


def _dashed(arg):
    name, sep, value = arg.partition("=")
    return name.replace("_", "-") + sep + value if arg.startswith("--") else arg


def shared_flags(p, tools=False, event=False):
    """The flags train.py and the paper-table tools share. tools=True: model settings unset (the
    checkpoint's, else the variant's), a smaller batch, the GPU when there is one. event=True (event
    datasets; every tool, which takes any dataset): the split datasets' cache folder."""
    ModelConfig.add_flags(p.add_argument_group("model"), inherit=tools)
    g = p.add_argument_group("data")
    g.add_argument("-data-dir", "--data-dir", "--data-path", default="./data", help="dataset folder")
    g.add_argument("--no-verify", dest="verify", action="store_false",
                   help="accept dataset files whose checksums differ from the official ones")
    g.add_argument("--img-size", "--input-size", type=positive, nargs="+", default=None,
                   help="input size: one value (square) or H W" + (" (unset: the checkpoint's, else the variant's)"
                                                                    if tools else ""))
    g.add_argument("-b", "--batch-size", type=positive, default=16 if tools else 64, help="per process")
    g.add_argument("--device", default=("cuda" if torch.cuda.is_available() else "cpu") if tools else None,
                   help="cuda or cpu" + ("" if tools else " (default: cuda when available)"))
    if event or tools:
        g.add_argument("--dts-cache", default="", help="event data: the folder of the split datasets (train.py "
                       "writes it there, so that the next run starts at once)")
    return g


def build_parser(description, event=False):
    p = Parser(description)
    p.add_argument("-c", "--config", default="", help="YAML recipe over the dataset's; the command line overrides it")
    add = shared_flags(p, event=event).add_argument
    add("-j", "--workers", "--num-workers", type=count, default=4,
        help="loader worker processes per training process (capped at its cores)")
    add("--mean", type=float, nargs="+", default=None, help="per-channel input mean")
    add("--std", type=float, nargs="+", default=None, help="per-channel input std")
    add("--crop-pct", type=within(float, "in (0, 1]"), default=None,
        help="evaluation centre-crop fraction (unset: the variant's; ImageNet: 224/256 up to 224)")
    add("--scale", type=float, nargs=2, default=(0.08, 1.0), help="random-resized-crop area")
    add("--ratio", type=float, nargs=2, default=(3 / 4, 4 / 3), help="random-resized-crop aspect")
    add("--hflip", type=unit, default=0.5, help="horizontal-flip probability")
    add("--color-jitter", type=at_least_0, default=0.0, help="colour-jitter strength (0: off)")
    add("--aa", default=None, help="timm auto-augment policy, e.g. rand-m9-n1-mstd0.4-inc1; 'none' or '' for none")
    add("--interpolation", default="bicubic", help="evaluation resize interpolation")
    add("--train-interpolation", default="bicubic", help="training resize interpolation")
    add("--reprob", type=unit, default=0.0, help="random erasing probability")
    add("--remode", default="const", help="random-erasing fill: const, rand or pixel")
    add("--recount", type=positive, default=1, help="random-erasing count per image")
    add("--mixup", type=at_least_0, default=0.0, help="mixup alpha (0: off)")
    add("--cutmix", type=at_least_0, default=0.0, help="cutmix alpha (0: off)")
    add("--mixup-prob", type=unit, default=1.0, help="probability of mixing a batch")
    add("--mixup-switch-prob", type=unit, default=0.5, help="chance of cutmix instead of mixup when both are on")
    add("--mixup-mode", default="batch", help="mix per batch, pair or elem")
    add("--mixup-off-epoch", type=count, default=0, help="turn mixup/cutmix off from this epoch (0: never)")
    add("--smoothing", type=within(float, "in [0, 1)"), default=0.1, help="label smoothing")

    add = p.add_argument_group("optimisation").add_argument
    add("--alpha", type=unit, default=0.5, help="eq 22: weight of the pass-1 loss")
    add("--alpha-end", type=unit, default=None,
        help="move alpha linearly to this value over training (official DVS: 0.5 -> 0.2)")
    add("--epochs", type=positive, default=None, help="epochs before the cool-down (every recipe sets it)")
    add("--cooldown-epochs", type=count, default=0, help="epochs at the minimum lr after --epochs")
    add("--val-batch-size", type=positive, default=None, help="evaluation batch per process (unset: --batch-size)")
    add("--accum-iter", type=positive, default=1, help="gradient accumulation steps")
    add("--opt", default="adamw", help="timm optimizer name")
    add("--opt-eps", type=above_0, default=None, help="optimizer epsilon (unset: timm's)")
    add("--momentum", type=unit, default=0.9, help="SGD momentum")
    add("--lr", type=above_0, default=None, help="peak learning rate (absolute)")
    add("--blr", type=above_0, default=None, help="base lr: without --lr, lr = blr x effective batch / 256")
    add("--layer-decay", type=within(float, "in (0, 1]"), default=None, help="layer-wise lr decay (1.0 or unset: none)")
    add("--sched-on-updates", action=argparse.BooleanOptionalAction, default=False,
        help="step the lr schedule every update instead of every epoch")
    add("--min-lr", type=at_least_0, default=1e-5, help="lr at the end of the schedule")
    add("--weight-decay", type=at_least_0, default=None, help="decoupled weight decay (every recipe sets it)")
    add("--sched", default="cosine", help="timm lr schedule name")
    add("--warmup-epochs", type=count, default=0, help="linear warm-up epochs from --warmup-lr")
    add("--warmup-lr", type=at_least_0, default=1e-5, help="lr at the start of the warm-up")
    add("--warmup-prefix", action=argparse.BooleanOptionalAction, default=False,
        help="cosine over the epochs after the warm-up (MAE's shape); --epochs stays the total")
    add("--clip-grad", type=above_0, default=None, help="clip the gradient norm to this (unset: no clipping)")

    add = p.add_argument_group("run").add_argument
    add("--output", "--output-dir", default="./outputs", help="checkpoints, config, log.txt, tensorboard go here")
    add("--experiment", default="", help="sub-folder of --output (default: model-T-time)")
    add("--log-dir", default="", help="tensorboard folder (default: the run folder)")
    add("--finetune", default="", help="initialise from CKPT (ours, QKFormer's or SpiLiFormer's); tensors it lacks "
        "or that do not fit are reported and keep their initialisation")
    add("--resume", default="", help="checkpoint to continue from (or to evaluate with --eval)")
    add("--eval", action="store_true", help="evaluate --resume and exit")
    add("--start-epoch", type=count, default=None, help="epoch to start at (unset: 0, or the resumed one's next)")
    add("--save-every", type=count, default=0, help="also keep checkpoint-EPOCH.pth every N epochs")
    add("--seed", type=int, default=42, help="seed of order, augmentation and initialisation (rank r adds r)")
    add("--amp", action=argparse.BooleanOptionalAction, default=False, help="mixed precision (CUDA only)")
    add("--amp-dtype", choices=("bf16", "fp16"), default="fp16", help="fp16 (with a GradScaler, as the official "
        "runs) or bf16")
    add("--threads", type=positive, default=None, help="torch threads per process (default on CPU: OMP_NUM_THREADS "
        "if set, else its share of the cores minus its loader workers; on CUDA: torch's)")
    add("--compile", action="store_true",
        help="torch.compile the training model (the first steps compile: seconds on CUDA, minutes on CPU)")
    add("--log-interval", type=positive, default=50, help="a progress line every N steps")
    add("--dist-eval", action=argparse.BooleanOptionalAction, default=True, help="shard evaluation over processes")
    add("--local-rank", type=int, default=None,
        help="accepted for torch.distributed.launch; LOCAL_RANK from the environment wins")
    return p


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

    given = property(lambda self: getattr(self, "_given", frozenset()), doc="destinations the command line set")

    def replaced(self, values):
        """A frozen copy with `values` instead."""
        return FrozenConfig(**{**vars(self), **values, "_frozen": False}).freeze()


def parse_command_line(entry, argv=None):
    """The resolved, frozen configuration of `entry`'s train.py (see the module docstring)."""
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser(f"SpiLiFormer on {entry.title}", event=entry.event)
    early = argparse.ArgumentParser(add_help=False, usage=parser.usage)  # the phase, to read its recipe first
    for p in (parser, early) if entry.phases > 1 else ():
        p.add_argument("--phase", type=int, choices=range(1, entry.phases + 1), default=1, help="recipe phase: "
                       "N > 1 reads phaseN.yml over the recipe (ImageNet's 2: blr 2e-6, 20 epochs, no warm-up)")
    phase = early.parse_known_args(argv)[0].phase if entry.phases > 1 else 1
    data = entry.data_config  # the variant's, under the recipe
    defaults = {"model": entry.model, "img_size": list(data["input_size"]), "mean": list(data["mean"]),
                "std": list(data["std"])}
    for path in entry.recipes(phase):
        defaults.update(read_recipe(parser, path))
    args = parse_args(parser, argv, defaults=defaults, frozen=False)
    if phase > 1 and not (args.finetune or args.resume or args.eval):
        parser.error(f"--phase {phase} continues from phase {phase - 1}'s weights: add --finetune CHECKPOINT")
    if args.crop_pct is None:  # it depends on the size (ImageNet)
        args.crop_pct = entry.eval_crop(args.img_size) if entry.eval_crop else data["crop_pct"]
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
    """What the flags' types cannot see (train.py and the tools): an input size of one or two sides."""
    if args.img_size is not None and len(args.img_size) not in (1, 2):
        parser.error(f"--img-size takes one value (square) or two (H W), got {args.img_size}")


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
        problem = key != "model_kwargs" and value is not None and value_problem(actions[key], value)
        if problem:
            parser.error(f"{path}: {key}: {value!r} {problem}")
    if "model_kwargs" in recipe:  # a shared recipe is data: model settings only
        try:
            recipe["model_kwargs"] = file_settings(parse_model_kwargs(recipe["model_kwargs"]), path)
        except ConfigError as exc:
            parser.error(str(exc))
    return {**base, **recipe}


def value_problem(action, value):
    """Why a recipe's value is not one the flag takes: its kind (models.settings.setting_problem), then
    its range (the flag's type), or None."""
    if action.nargs == 0 or isinstance(action, argparse.BooleanOptionalAction):
        return setting_problem(bool, value)
    kind = tuple(action.choices) if action.choices is not None else getattr(action.type, "kind", action.type) or str
    listed = action.nargs in ("+", "*") or isinstance(action.nargs, int)
    problem = setting_problem([kind] if listed else kind, value)
    try:
        for v in (value if listed else [value]) if not problem and hasattr(action.type, "kind") else ():
            action.type(v)
    except argparse.ArgumentTypeError as exc:
        return str(exc).split(", got ")[0]  # the value is named already
    return problem


def input_size(args):
    """(H, W) from --img-size."""
    size = list(args.img_size)
    return (size[0], size[-1])
