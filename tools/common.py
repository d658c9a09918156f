"""What every paper-table tool shares: its command line, the model (any checkpoint, any variant)
and the evaluation data of any dataset the training scripts read (their own data code)."""
import csv
import sys
import warnings

import torch
import torch.nn as nn

import models
from models import ConfigError
from engine.config import Parser, check_values, input_size, parse_command_line, shared_flags
from engine.registry import DATASETS
from engine.model_config import ModelConfig, positive
from models.checkpoint import recorded_args


def build_parser(description):
    """train.py's shared flags (engine/config.py, same spellings) and the tools' own."""
    p = Parser(description)
    p.add_argument("--dataset", choices=sorted(DATASETS), default=None,
                   help="the data to analyse on (default: the checkpoint's, else cifar10)")
    p.add_argument("--checkpoint", default="", help="weights to analyse (none: random weights, with a warning)")
    g = shared_flags(p, tools=True)
    g.add_argument("--num-batches", type=positive, default=4, help="batches of data to use")
    p.add_argument("--output", default="", help="where the CSV or PNG goes")
    return p


def parse(parser, argv):
    """The tools' command line, checked as train.py checks the flags they share."""
    args = parser.parse_args(argv)
    check_values(parser, args)
    return args


def load_model(args):
    """The model to analyse: the settings a checkpoint records, overridden by the flags given, else
    the dataset's paper model; weights from --checkpoint."""
    checkpoint = models.read_checkpoint(args.checkpoint) if args.checkpoint else None
    trained_on = recorded_args(checkpoint).get("dataset")
    trained_on = trained_on if trained_on in DATASETS else None
    if args.dataset is None:
        args.dataset = trained_on or "cifar10"
    elif trained_on not in (None, args.dataset):
        raise ConfigError(f"{args.checkpoint} was trained on {trained_on}, not {args.dataset}: drop --dataset to "
                          "analyse it on its own data")
    entry = DATASETS[args.dataset]
    recorded = ModelConfig.recorded_in(checkpoint, args.checkpoint)
    cfg = ModelConfig(model=entry.model, num_classes=entry.num_classes).updated(recorded).updated(vars(args))
    if str(args.device).startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"--device {args.device}: no CUDA GPU is visible here; use --device cpu")
    model = cfg.build()
    args.data = data_settings(entry, checkpoint, args, model)
    if checkpoint is not None:
        model.load_state_dict(models.checkpoint_filter_fn(checkpoint, model))
        print(f"{args.checkpoint}: {cfg.model} " + ", ".join(f"{k}={v}" for k, v in cfg.kwargs().items()))
    else:
        warnings.warn("no --checkpoint: analysing a randomly initialised model", stacklevel=2)
    return model.to(args.device).eval()


def recorded_input_size(checkpoint):
    """The training input size a checkpoint's "args" record (ours: img_size, one value or [H, W];
    MAE/QKFormer's: input_size, one value), or None."""
    recorded = recorded_args(checkpoint)
    size = recorded.get("img_size", recorded.get("input_size"))
    if isinstance(size, int):
        return (size, size)
    return tuple(size) if isinstance(size, (list, tuple)) and len(size) in (1, 2) else None


def data_settings(entry, checkpoint, args, model):
    """The run's evaluation data settings, resolved once as its train.py resolves them: --input-size,
    else the checkpoint's; its mean, std and crop where it records them (a run with its own
    normalisation is analysed under it), else the dataset's recipe and variant."""
    recorded = recorded_args(checkpoint)
    trained = recorded_input_size(checkpoint)
    size = args.img_size or trained
    if size is not None and (len(size) > 2 or any(side % model.reduction for side in size)):
        raise ConfigError(f"--input-size {' '.join(map(str, size))}: one value or H W, each divisible by "
                          f"{model.reduction} (the model's downsampling)")
    run = parse_command_line(entry, ["--img-size", *map(str, size)] if size else [])
    data = {"img_size": list(input_size(run)), "mean": run.mean, "std": run.std, "crop_pct": run.crop_pct}
    for key in ("mean", "std"):
        value = recorded.get(key)
        if isinstance(value, list) and len(value) == len(run.mean) and all(
                isinstance(v, (int, float)) and not isinstance(v, bool) for v in value):
            data[key] = value
    crop = recorded.get("crop_pct")
    if isinstance(crop, (int, float)) and 0 < crop <= 1 and tuple(data["img_size"]) == tuple(trained or ()):
        data["crop_pct"] = crop
    return data


def eval_data(args, model):
    """(evaluation set of unnormalised inputs in [0, 1] (static) or event-count frames, mean, std), built
    by the dataset's own code (its registry entry) with `args.data` at the model's time steps."""
    entry = DATASETS[args.dataset]
    run = parse_command_line(entry, []).replaced({
        **args.data, "mean": [0.0] * len(args.data["mean"]), "std": [1.0] * len(args.data["std"]),
        "data_dir": args.data_dir, "verify": args.verify, "dts_cache": args.dts_cache, "eval": True,
        "T": args.T or model.T})  # normalised with mean 0, std 1: the model's own normalisation is InputSpace's
    _, dataset, _ = entry.build(entry, run, False)
    check_classes(dataset, model, args)
    if entry.event:
        return dataset, None, None
    return dataset, args.data["mean"], args.data["std"]


def check_classes(dataset, model, args):
    """A model's outputs are the data's classes, or every number the tool prints is meaningless."""
    classes = len(getattr(dataset, "classes", ()))
    if classes and classes != model.num_classes:
        raise ConfigError(f"the model classifies {model.num_classes} classes and {args.dataset} under "
                          f"{args.data_dir} has {classes}: analyse a checkpoint on the data it was trained on")


def batches(dataset, args):
    loader = torch.utils.data.DataLoader(dataset, batch_size=args.batch_size, shuffle=False)
    for i, (x, y) in enumerate(loader):
        if i >= args.num_batches:
            break
        yield x.to(args.device), y.to(args.device)


class InputSpace(nn.Module):
    """The model seen from input space: x in [0, 1] -> (x * scale - mean) / std -> pass-2 logits.

    Attacks and corruptions act on images before normalisation; event-count frames are divided by
    `scale` (their batch maximum) so that they live in [0, 1] too.
    """

    def __init__(self, model, mean=None, std=None, scale=1.0):
        super().__init__()
        self.model = model
        self.scale = scale
        shape = (1, -1, 1, 1)
        self.register_buffer("mean", torch.tensor(mean).view(shape) if mean is not None else torch.zeros(1))
        self.register_buffer("std", torch.tensor(std).view(shape) if std is not None else torch.ones(1))

    def forward(self, x):
        out = self.model((x * self.scale - self.mean) / self.std, passes=False)
        return out


def write_csv(path, rows):
    """A list of same-keyed dicts -> CSV at `path` (no-op without a path)."""
    if not path or not rows:
        return
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    print(f"wrote {path}")


def main_guard(main):
    """Run `main`, turning user errors into one clear line (anything else keeps its traceback)."""
    try:
        return main()
    except models.UserError as exc:
        print(f"error: {models.user_message(exc)}", file=sys.stderr)
        return 1
