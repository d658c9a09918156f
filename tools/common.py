"""What every paper-table tool shares: its command line, the model (any checkpoint, any variant)
and the evaluation data of any dataset the training scripts read (their own data code)."""
import argparse
import csv
import sys
import warnings
from pathlib import Path
from types import SimpleNamespace

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import timm  # noqa: E402
import torch  # noqa: E402
import torch.nn as nn  # noqa: E402
from timm.data import create_transform  # noqa: E402

import models  # noqa: E402
from engine import data as engine_data  # noqa: E402
from engine.imagenet import eval_crop_pct  # noqa: E402

EVENT_T = 16  # event frames per sample unless -T says otherwise (the paper's T)
DATASETS = {  # name -> (default model, classes, static?, input size, mean, std)
    "cifar10": ("spiliformer_4_384", 10, True, 32, engine_data.CIFAR_MEAN, engine_data.CIFAR_STD),
    "cifar100": ("spiliformer_4_384", 100, True, 32, engine_data.CIFAR_MEAN, engine_data.CIFAR_STD),
    "imagenet": ("spiliformer_10_768", 1000, True, 224, engine_data.IMAGENET_MEAN, engine_data.IMAGENET_STD),
    "cifar10dvs": ("spiliformer_2_256", 10, False, 128, None, None),
    "ncaltech101": ("spiliformer_2_256", 101, False, 128, None, None),
}


def build_parser(description):
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--dataset", choices=sorted(DATASETS), default="cifar10")
    p.add_argument("--model", default=None, help="default: the dataset's paper model")
    p.add_argument("--checkpoint", default="", help="weights to analyse (none: random weights, with a warning)")
    p.add_argument("--data-path", "--data_path", "-data-dir", dest="data_path", default="./data")
    p.add_argument("-T", "--T", dest="T", type=int, default=None)
    p.add_argument("-b", "--batch-size", dest="batch_size", type=int, default=16)
    p.add_argument("--num-batches", dest="num_batches", type=int, default=4, help="batches of data to use")
    p.add_argument("--embed-dim", dest="embed_dim", type=int, default=None)
    p.add_argument("--num-heads", dest="num_heads", type=int, default=None)
    p.add_argument("--depths", type=int, nargs="+", default=None)
    p.add_argument("--input-size", dest="input_size", type=int, default=None)
    p.add_argument("--no-ff-lidiff", dest="ff_lidiff", action="store_false")
    p.add_argument("--no-fb-lidiff", dest="fb_lidiff", action="store_false")
    p.add_argument("--legacy", action="store_true", help="official numerics, for the authors' weights")
    p.add_argument("--neuron", choices=models.neurons.NEURONS, default="lif")
    p.add_argument("--backend", choices=models.neurons.BACKENDS, default="auto")
    p.add_argument("--no-verify", dest="verify", action="store_false", help="CIFAR pickles with other checksums")
    p.add_argument("--dts-cache", "--dts_cache", dest="dts_cache", default="")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--output", default="", help="where the CSV or PNG goes")
    return p


def load_model(args):
    name, classes, _, size, _, _ = DATASETS[args.dataset]
    kwargs = {k: v for k, v in dict(T=args.T, embed_dim=args.embed_dim, num_heads=args.num_heads,
                                    depths=args.depths).items() if v is not None}
    model = timm.create_model((args.model or name).lower(), num_classes=classes, ff_lidiff=args.ff_lidiff,
                              fb_lidiff=args.fb_lidiff, legacy=args.legacy, neuron=args.neuron,
                              backend=args.backend, **kwargs)
    if args.checkpoint:
        models.load_checkpoint(model, args.checkpoint)
    else:
        warnings.warn("no --checkpoint: analysing a randomly initialised model", stacklevel=2)
    return model.to(args.device).eval()


def eval_data(args):
    """(dataset of unnormalised inputs in [0, 1] (static) or event-count frames, mean, std)."""
    _, _, static, default_size, mean, std = DATASETS[args.dataset]
    size = args.input_size or default_size
    if args.dataset in ("cifar10dvs", "ncaltech101"):
        from engine.dvs import event_datasets
        ns = SimpleNamespace(data_dir=args.data_path, T=args.T or EVENT_T, dts_cache=args.dts_cache)
        _, test, _ = event_datasets(args.dataset, ns, (size, size))
        return test, None, None
    crop = 1.0 if args.dataset != "imagenet" else eval_crop_pct((size, size))
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
        out = self.model((x * self.scale - self.mean) / self.std, return_both=False)
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
    """Run `main`, turning the usual user errors into one clear line."""
    try:
        return main()
    except (engine_data.DatasetError, models.CheckpointMismatchError, FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
