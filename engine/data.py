"""Data loading shared by the scripts: samplers, loaders, timm transforms, and the CIFAR datasets."""
import socket
from pathlib import Path

import torch
from timm.data import Mixup, create_transform
from torch.utils.data import DataLoader, DistributedSampler, Sampler
from torchvision import datasets as tv_datasets

from .config import input_size


class DatasetError(RuntimeError):
    pass


class ShardSampler(Sampler):
    """Evaluation indices rank::world_size, without the padding DistributedSampler adds (which
    would count some images twice); the per-process sums are all-reduced, so totals are exact."""

    def __init__(self, length, rank, world_size):
        self.indices = range(rank, length, world_size)

    def __iter__(self):
        return iter(self.indices)

    def __len__(self):
        return len(self.indices)


def make_loaders(train_set, val_set, args, d):
    """`train_set` None (--eval) gives no training loader. Training order is a seeded permutation per epoch, the same for any number of processes
    (process r takes every world_size-th index), so runs are repeatable and resumable."""
    if len(val_set) == 0:
        raise DatasetError("the validation split is empty; the dataset has too few samples per class")
    if args.dist_eval:
        val_sampler = ShardSampler(len(val_set), d.rank, d.world_size)
    else:
        val_sampler = ShardSampler(len(val_set), 0, 1) if d.main else ShardSampler(0, 0, 1)
    common = dict(num_workers=args.workers, pin_memory=d.device.type == "cuda")
    val_loader = DataLoader(val_set, batch_size=args.val_batch_size or args.batch_size, sampler=val_sampler,
                            **common)
    if train_set is None:  # --eval
        return None, val_loader
    train_sampler = DistributedSampler(train_set, num_replicas=d.world_size, rank=d.rank, shuffle=True,
                                       seed=args.seed, drop_last=True)
    train_loader = DataLoader(train_set, batch_size=args.batch_size, sampler=train_sampler, drop_last=True,
                              **common)
    if len(train_loader) == 0:
        raise DatasetError(f"{len(train_set)} training samples make no full batch of {args.batch_size} per "
                           f"process on {d.world_size} process(es); lower --batch-size")
    return train_loader, val_loader


def make_mixup(args, num_classes):
    """timm Mixup/CutMix (it also applies label smoothing to the soft targets), or None."""
    if args.mixup <= 0 and args.cutmix <= 0:
        return None
    return Mixup(mixup_alpha=args.mixup, cutmix_alpha=args.cutmix, prob=args.mixup_prob,
                 switch_prob=args.mixup_switch_prob, mode=args.mixup_mode, label_smoothing=args.smoothing,
                 num_classes=num_classes)


def image_transforms(args, default_mean, default_std):
    """timm's training transform (crop, flip, RandAugment, random erasing) and eval transform."""
    size = input_size(args)
    mean = tuple(args.mean or default_mean)
    std = tuple(args.std or default_std)
    train = create_transform(size, is_training=True, scale=tuple(args.scale), ratio=tuple(args.ratio),
                             hflip=args.hflip, color_jitter=args.color_jitter, auto_augment=args.aa,
                             interpolation=args.train_interpolation, mean=mean, std=std, re_prob=args.reprob,
                             re_mode=args.remode, re_count=args.recount)
    val = create_transform(size, is_training=False, interpolation=args.interpolation, mean=mean, std=std,
                           crop_pct=args.crop_pct)
    return train, val


# ---------------------------------------------------------------- CIFAR

CIFAR = {
    "cifar10": (tv_datasets.CIFAR10, "cifar-10-batches-py",
                ["data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4", "data_batch_5", "test_batch",
                 "batches.meta"]),
    "cifar100": (tv_datasets.CIFAR100, "cifar-100-python", ["train", "test", "meta"]),
}
CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR_STD = (0.2470, 0.2435, 0.2616)


def _online(host="www.cs.toronto.edu", port=443, timeout=3.0):
    try:
        socket.create_connection((host, port), timeout=timeout).close()
        return True
    except OSError:
        return False


def _unverified(cls):
    """The torchvision class without md5 checks (torchvision only checks existence when md5 is None)."""
    return type(cls.__name__, (cls,), {
        "train_list": [[name, None] for name, _ in cls.train_list],
        "test_list": [[name, None] for name, _ in cls.test_list],
        "meta": {**cls.meta, "md5": None},
    })


def cifar_dataset(name, root, train, transform, verify=True):
    """torchvision's CIFAR-10/100 from `root`, downloaded there when absent and the machine is online."""
    cls, folder, files = CIFAR[name]
    root = Path(root)
    present = all((root / folder / f).is_file() for f in files)
    layout = (f"expected {root / folder}/ holding " + ", ".join(files) +
              " (the 'CIFAR python version' archive, extracted)")
    if not present:
        if not _online():
            raise DatasetError(f"no {name.upper()} under {root}: {layout}. This machine is offline, so it "
                               "cannot be downloaded; pass -data-dir with the folder that holds it")
        cls(str(root), train=train, download=True)
    try:
        return (cls if verify else _unverified(cls))(str(root), train=train, transform=transform)
    except RuntimeError as exc:
        if "corrupted" not in str(exc):
            raise
        raise DatasetError(f"{name.upper()} files under {root / folder} fail torchvision's checksum check "
                           f"({exc}). Re-download them, or pass --no-verify to load CIFAR-format files "
                           "that differ from the official ones (a subset, generated data)") from exc


# ---------------------------------------------------------------- ImageNet (ImageFolder)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def image_folder(root, split, transform):
    """torchvision ImageFolder of ROOT/SPLIT/<class>/<image>, with an error that shows the layout."""
    folder = Path(root) / split
    layout = (f"expected {Path(root)}/train/<class>/<image> and {Path(root)}/val/<class>/<image> "
              "(e.g. val/n01440764/ILSVRC2012_val_00000293.JPEG; sort the validation images into class "
              "folders first)")
    if not folder.is_dir():
        raise DatasetError(f"no {split}/ folder under {root}: {layout}")
    try:
        return tv_datasets.ImageFolder(str(folder), transform=transform)
    except (FileNotFoundError, RuntimeError) as exc:
        raise DatasetError(f"{folder}: {exc}; {layout}") from exc
