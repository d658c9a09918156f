"""Every dataset the project trains on, in one place: read by the five train.py scripts, the tools
and the parameter table. Adding a dataset is one entry here, a folder with train.py (two lines)
and its recipe yml, and a `build` function returning (train set or None, validation set, classes).

Input size, mean and std are the model variant's (`pretrained_cfg` in models/spiliformer.py).
"""
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import timm

import models  # noqa: F401  (registers the variants)
from models import ConfigError

from .data import cifar_splits, imagenet_splits

ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class DatasetEntry:
    name: str                 # --dataset of the tools, key of DATASETS
    title: str
    folder: str               # repository folder holding train.py and <folder>.yml, the paper recipe
    num_classes: int
    model: str                # the paper's variant
    params: tuple             # exact parameter counts (SpiLiFormer, QKFormer = both ablations off), SPEC 5
    event: bool               # event frames [B, T, 2, H, W] rather than static images; adds --dts-cache
    build: Callable           # (entry, args, with_train) -> (train set or None, validation set, classes)
    phases: int = 1           # --phase N > 1 reads phaseN.yml over the recipe, from phase N-1's weights
    eval_crop: Optional[Callable] = None  # (H, W) -> crop_pct where --crop-pct is unset (ImageNet's)

    @property
    def recipe(self):
        return ROOT / self.folder / f"{Path(self.folder).name}.yml"

    def recipes(self, phase=1):
        """The recipe files of a phase, lowest first."""
        return [self.recipe, *([self.recipe.with_name(f"phase{phase}.yml")] if phase > 1 else [])]

    @property
    def data_config(self):
        """The variant's input size (H, W), mean, std and crop_pct (timm's pretrained_cfg)."""
        cfg = timm.models.get_pretrained_cfg(self.model)
        return {"input_size": tuple(cfg.input_size[1:]), "mean": cfg.mean, "std": cfg.std, "crop_pct": cfg.crop_pct}


def _event(entry, args, with_train):
    from .dvs import event_splits  # spikingjelly is imported for event data only
    return event_splits(entry, args, with_train)


def eval_crop_pct(size):
    """224: resize 256 -> centre crop 224; larger sizes: resize straight to the size (crop ratio 1.0),
    as the official ImageNet evaluation does."""
    return 224 / 256 if max(size) <= 224 else 1.0


DATASETS = {e.name: e for e in (
    DatasetEntry("cifar10", "CIFAR-10", "cifar10", 10, "spiliformer_4_384", (7_003_450, 6_706_234), False,
                 cifar_splits),
    DatasetEntry("cifar100", "CIFAR-100", "cifar100", 100, "spiliformer_4_384", (7_038_100, 6_740_884), False,
                 cifar_splits),
    DatasetEntry("cifar10dvs", "CIFAR10-DVS", "cifar10dvs", 10, "spiliformer_2_256", (1_570_698, 1_504_138), True,
                 _event),
    DatasetEntry("ncaltech101", "N-Caltech101", "ncaltech101", 101, "spiliformer_2_256", (1_594_085, 1_527_525),
                 True, _event),
    DatasetEntry("imagenet", "ImageNet-1K", "imagenet_1k", 1000, "spiliformer_10_768", (69_103_816, 64_962_760),
                 False, imagenet_splits, phases=2, eval_crop=eval_crop_pct),
)}


def get(name):
    try:
        return DATASETS[name]
    except KeyError:
        raise ConfigError(f"unknown dataset {name!r}; choose from {sorted(DATASETS)}") from None
