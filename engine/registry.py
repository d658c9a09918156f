"""Every dataset the project trains on, in one place: read by the five train.py scripts, the tools
and the parameter table. Adding a dataset is one entry here, a folder with train.py (two lines)
and its recipe yml, and a `build` function returning (train set or None, validation set, classes).

Input size, mean and std are the model variant's (`pretrained_cfg` in models/spiliformer.py).
"""
import argparse
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import timm

import models  # noqa: F401  (registers the variants)
from models import ConfigError

ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class DatasetEntry:
    name: str                 # --dataset of the tools, key of DATASETS
    title: str
    folder: str               # repository folder holding train.py and <folder>.yml, the paper recipe
    num_classes: int
    model: str                # the paper's variant
    params: tuple             # exact parameter counts (SpiLiFormer, QKFormer = both ablations off), SPEC 5
    event: bool               # event frames [B, T, 2, H, W] rather than static images
    build: Callable           # (entry, args, with_train) -> (train set or None, validation set, classes)
    add_flags: Optional[Callable] = None   # parser -> None, for flags only this dataset has
    resolve: Optional[Callable] = None     # (args, parser, argv) -> None, for recipe rules (ImageNet phase)
    later_recipes: Optional[Callable] = None  # (entry, argv) -> ymls over the recipe (ImageNet's phase 2)

    @property
    def recipe(self):
        return ROOT / self.folder / f"{Path(self.folder).name}.yml"

    def recipes(self, argv):
        """The recipe files a command line resolves over, lowest first."""
        return [self.recipe, *(self.later_recipes(self, argv) if self.later_recipes else ())]

    @property
    def data_config(self):
        """The variant's input size (H, W), mean, std and crop_pct (timm's pretrained_cfg)."""
        cfg = timm.models.get_pretrained_cfg(self.model)
        return {"input_size": tuple(cfg.input_size[1:]), "mean": cfg.mean, "std": cfg.std, "crop_pct": cfg.crop_pct}


def _cifar(entry, args, with_train):
    from .data import cifar_splits
    return cifar_splits(entry, args, with_train)


def _imagenet(entry, args, with_train):
    from .data import imagenet_splits
    return imagenet_splits(entry, args, with_train)


def _event(entry, args, with_train):
    from .config import input_size
    from .dvs import event_datasets
    train, val, classes = event_datasets(entry.name, args, input_size(args))
    return (train if with_train else None), val, classes


def _event_flags(parser):
    parser.add_argument("--dts_cache", "--dts-cache", dest="dts_cache", default="",
                        help="folder for the split datasets, so that the next run starts at once")


def _imagenet_flags(parser):
    parser.add_argument("--phase", type=int, choices=(1, 2), default=1,
                        help="Table 1 recipe phase; 2: imagenet_1k/phase2.yml (blr 2e-6, 20 epochs, no "
                             "warm-up, lr decaying per epoch) over the phase-1 recipe")


def _imagenet_phase(entry, argv):
    early = argparse.ArgumentParser(add_help=False)
    early.add_argument("--phase", type=int, default=1)
    phase = early.parse_known_args(argv)[0].phase
    return [entry.recipe.with_name(f"phase{phase}.yml")] if phase > 1 else []


def _imagenet_resolve(args, parser, argv):
    if args.phase == 2 and not (args.finetune or args.resume or args.eval):
        parser.error("--phase 2 continues from phase 1's weights: add --finetune PHASE1_CKPT")
    if args.crop_pct is None:
        args.crop_pct = eval_crop_pct(args.img_size)


def eval_crop_pct(size):
    """224: resize 256 -> centre crop 224; larger sizes: resize straight to the size (crop ratio 1.0),
    as the official ImageNet evaluation does."""
    return 224 / 256 if max(size) <= 224 else 1.0


DATASETS = {e.name: e for e in (
    DatasetEntry("cifar10", "CIFAR-10", "cifar10", 10, "spiliformer_4_384", (7_003_450, 6_706_234), False,
                 _cifar),
    DatasetEntry("cifar100", "CIFAR-100", "cifar100", 100, "spiliformer_4_384", (7_038_100, 6_740_884), False,
                 _cifar),
    DatasetEntry("cifar10dvs", "CIFAR10-DVS", "cifar10dvs", 10, "spiliformer_2_256", (1_570_698, 1_504_138), True,
                 _event, add_flags=_event_flags),
    DatasetEntry("ncaltech101", "N-Caltech101", "ncaltech101", 101, "spiliformer_2_256", (1_594_085, 1_527_525),
                 True, _event, add_flags=_event_flags),
    DatasetEntry("imagenet", "ImageNet-1K", "imagenet_1k", 1000, "spiliformer_10_768", (69_103_816, 64_962_760),
                 False, _imagenet, add_flags=_imagenet_flags, resolve=_imagenet_resolve,
                 later_recipes=_imagenet_phase),
)}


def get(name):
    try:
        return DATASETS[name]
    except KeyError:
        raise ConfigError(f"unknown dataset {name!r}; choose from {sorted(DATASETS)}") from None
