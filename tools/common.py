"""What every paper-table tool shares: its command line, the model (any checkpoint, any variant)
and the evaluation data of any dataset the training scripts read (their own data code)."""
import argparse
import csv
import sys
import warnings
from types import SimpleNamespace

import timm
import torch
import torch.nn as nn
from timm.data import create_transform

import models
from engine import data as engine_data
from engine.config import parse_model_kwargs
from engine.registry import DATASETS, eval_crop_pct
from engine.runner import build_model


def build_parser(description):
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--dataset", choices=sorted(DATASETS), default="cifar10")
    p.add_argument("--model", default=None, help="default: the dataset's paper model")
    p.add_argument("--checkpoint", default="", help="weights to analyse (none: random weights, with a warning)")
    p.add_argument("--data-path", "--data_path", "-data-dir", dest="data_path", default="./data")
    p.add_argument("-T", "--T", dest="T", type=int, default=None, help="default: the checkpoint's, else the variant's")
    p.add_argument("--num-classes", "--num_classes", "--nb_classes", dest="num_classes", type=int, default=None,
                   help="default: the checkpoint's, else the dataset's")
    p.add_argument("-b", "--batch-size", dest="batch_size", type=int, default=16)
    p.add_argument("--num-batches", dest="num_batches", type=int, default=4, help="batches of data to use")
    p.add_argument("--embed-dim", dest="embed_dim", type=int, default=None)
    p.add_argument("--num-heads", dest="num_heads", type=int, default=None)
    p.add_argument("--depths", type=int, nargs="+", default=None)
    p.add_argument("--input-size", dest="input_size", type=int, nargs="+", default=None, help="one value or H W")
    p.add_argument("--no-ff-lidiff", dest="ff_lidiff", action="store_false", default=None)
    p.add_argument("--no-fb-lidiff", dest="fb_lidiff", action="store_false", default=None)
    p.add_argument("--chained-feedback", dest="chained_feedback", action="store_true", default=None,
                   help="feedback decoders chained (the ablation wiring), for checkpoints trained so")
    p.add_argument("--legacy", action="store_true", default=None, help="official numerics, for the authors' weights")
    p.add_argument("--model-kwargs", "--model_kwargs", dest="model_kwargs", nargs="*", default=None,
                   metavar="K=V", help="further model constructor arguments (default: the checkpoint's)")
    p.add_argument("--neuron", choices=models.neurons.NEURONS, default=None)
    p.add_argument("--backend", choices=models.neurons.BACKENDS, default="auto")
    p.add_argument("--no-verify", dest="verify", action="store_false", help="CIFAR pickles with other checksums")
    p.add_argument("--dts-cache", "--dts_cache", dest="dts_cache", default="")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--output", default="", help="where the CSV or PNG goes")
    return p


# Model settings a checkpoint's "args" may record: ours under our names, MAE/QKFormer's under theirs.
ARCHITECTURE = {"T": ("T", "time_step"), "num_classes": ("num_classes", "nb_classes"), "embed_dim": ("embed_dim",),
                "depths": ("depths",), "num_heads": ("num_heads",), "ff_lidiff": ("ff_lidiff",),
                "fb_lidiff": ("fb_lidiff",), "feedback_scale": ("feedback_scale",), "neuron": ("neuron",),
                "chained_feedback": ("chained_feedback",),
                "legacy": ("legacy",), "input_size": ("img_size",)}


def recorded_architecture(checkpoint):
    """The model settings stored in a checkpoint's "args" (a dict, or an argparse.Namespace)."""
    recorded = checkpoint.get("args") if isinstance(checkpoint, dict) else None
    recorded = vars(recorded) if isinstance(recorded, argparse.Namespace) else recorded
    if not isinstance(recorded, dict):
        return {}
    found = {}
    for key, names in ARCHITECTURE.items():
        values = [recorded[n] for n in names if recorded.get(n) is not None]
        if values:
            found[key] = values[0]
    if isinstance(recorded.get("model_kwargs"), dict):
        found.update(recorded["model_kwargs"])
    if str(recorded.get("model", "")).lower() in timm.list_models("spiliformer*"):
        found["model"] = str(recorded["model"]).lower()
    return found


def load_model(args):
    """The model to analyse: the architecture a checkpoint records, overridden by explicit flags, else
    the dataset's paper model; weights from --checkpoint."""
    entry = DATASETS[args.dataset]
    checkpoint = models.read_checkpoint(args.checkpoint) if args.checkpoint else None
    settings = {"model": entry.model, "num_classes": entry.num_classes, **recorded_architecture(checkpoint or {})}
    settings.update({k: v for k, v in vars(args).items() if k in (*ARCHITECTURE, "model") and v is not None})
    try:
        settings.update(parse_model_kwargs(args.model_kwargs))
    except ValueError as exc:
        raise models.ConfigError(str(exc)) from None
    input_size = settings.pop("input_size", None)
    kwargs = {k: v for k, v in settings.items() if k != "model"}
    model = build_model(settings["model"], backend=args.backend, **kwargs)
    if input_size is not None:
        model.input_size = tuple(input_size) if len(input_size) == 2 else (input_size[0],) * 2
    if checkpoint is not None:
        model.load_state_dict(models.checkpoint_filter_fn(checkpoint, model))
        print(f"{args.checkpoint}: {settings['model']} " + ", ".join(f"{k}={v}" for k, v in kwargs.items()))
    else:
        warnings.warn("no --checkpoint: analysing a randomly initialised model", stacklevel=2)
    return model.to(args.device).eval()


def eval_data(args, model):
    """(dataset of unnormalised inputs in [0, 1] (static) or event-count frames, mean, std), at the
    model's time steps and the input size its checkpoint records (flags override both)."""
    entry = DATASETS[args.dataset]
    data = entry.data_config
    size = args.input_size or getattr(model, "input_size", None) or data["input_size"]
    size = (size[0], size[-1])
    if entry.event:
        from engine.dvs import event_datasets
        ns = SimpleNamespace(data_dir=args.data_path, T=args.T or model.T, dts_cache=args.dts_cache)
        _, test, _ = event_datasets(args.dataset, ns, size)
        return test, None, None
    mean, std = data["mean"], data["std"]
    crop = 1.0 if args.dataset != "imagenet" else eval_crop_pct(size)
    # normalised with mean 0, std 1: float images in [0, 1]; the model's own normalisation is InputSpace's
    transform = create_transform(size, is_training=False, crop_pct=crop, interpolation="bicubic",
                                 mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))
    if args.dataset == "imagenet":
        return engine_data.image_folder(args.data_path, "val", transform), mean, std
    return engine_data.cifar_dataset(args.dataset, args.data_path, False, transform, verify=args.verify), mean, std


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
        out = self.model((x * self.scale - self.mean) / self.std)
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
