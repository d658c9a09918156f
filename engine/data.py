"""Data loading shared by the scripts: samplers, loaders, timm transforms, and the CIFAR datasets."""
import pickle
import random
import socket
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps
from timm.data import Mixup, create_transform
from timm.data.auto_augment import AutoAugment, RandAugment
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Sampler, get_worker_info
from torchvision import datasets as tv_datasets
from torchvision.datasets.utils import check_integrity, download_and_extract_archive

from models import UserError

from .config import input_size


class DatasetError(UserError):
    """Data that is missing, incomplete or not in the expected format."""


class ShardSampler(Sampler):
    """Evaluation indices rank::world_size, without the padding DistributedSampler adds (which
    would count some images twice); the per-process sums are all-reduced, so totals are exact."""

    def __init__(self, length, rank, world_size):
        self.indices = range(rank, length, world_size)

    def __iter__(self):
        return iter(self.indices)

    def __len__(self):
        return len(self.indices)


class TrainSampler(DistributedSampler):
    """DistributedSampler's order (a seeded permutation per epoch; process r takes every world_size-th
    index), as (epoch, index) keys for SeededSamples, from sample `start` of this process's share on:
    a run stopped mid-epoch continues with the very batch it would have drawn next."""

    def __init__(self, dataset, num_replicas, rank, seed):
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=True, seed=seed, drop_last=True)
        self.start = 0

    def set_epoch(self, epoch, start=0):
        super().set_epoch(epoch)
        self.start = start

    def __iter__(self):
        return ((self.epoch, i) for i in list(super().__iter__())[self.start:])

    def __len__(self):
        return self.num_samples - self.start


class SeededSamples(Dataset):
    """Each training sample draws its augmentation from its own seed (run seed, epoch, index) rather
    than from whichever loader worker happens to read it, so a batch's data does not depend on
    --workers, and a resumed run (mid-epoch too) draws exactly what the straight run drew. The
    caller's random state is left as it was (it matters when loading runs in the main process)."""

    def __init__(self, dataset, seed):
        self.dataset, self.seed = dataset, seed

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, key):
        epoch, index = key
        seed = hash((self.seed, epoch, index)) & (2 ** 63 - 1)  # ints hash the same in every process
        in_worker = get_worker_info() is not None  # a worker's own state matters to nobody
        saved = None if in_worker else (random.getstate(), np.random.get_state(), torch.get_rng_state())
        random.seed(seed)
        np.random.seed(seed % 2 ** 32)
        torch.default_generator.manual_seed(seed)  # the CPU generator transforms draw from (torch.manual_seed
        try:                                       # also seeds every device: 20 times slower)
            return self.dataset[index]
        finally:
            if saved is not None:
                random.setstate(saved[0])
                np.random.set_state(saved[1])
                torch.set_rng_state(saved[2])


def make_loaders(train_set, val_set, args, d, workers, worker_init_fn=None):
    """`train_set` None (--eval) gives no training loader. Training order and augmentation are functions
    of (seed, epoch, index), the same for any number of processes and workers, so runs are repeatable
    and resumable (TrainSampler, SeededSamples)."""
    if len(val_set) == 0:
        raise DatasetError("the validation split is empty; the dataset has too few samples per class")
    if args.dist_eval:
        val_sampler = ShardSampler(len(val_set), d.rank, d.world_size)
    else:
        val_sampler = ShardSampler(len(val_set), 0, 1) if d.main else ShardSampler(0, 0, 1)
    common = dict(num_workers=workers, pin_memory=d.device.type == "cuda",
                  worker_init_fn=worker_init_fn if workers else None)
    val_loader = DataLoader(val_set, batch_size=args.val_batch_size or args.batch_size, sampler=val_sampler,
                            **common)
    if train_set is None:  # --eval
        return None, val_loader
    train_sampler = TrainSampler(train_set, d.world_size, d.rank, args.seed)
    train_loader = DataLoader(SeededSamples(train_set, args.seed), batch_size=args.batch_size,
                              sampler=train_sampler, drop_last=True, **common)
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


def image_transforms(args):
    """timm's training transform (crop, flip, RandAugment, random erasing) and eval transform."""
    size = input_size(args)
    mean, std = tuple(args.mean), tuple(args.std)
    train = create_transform(size, is_training=True, scale=tuple(args.scale), ratio=tuple(args.ratio),
                             hflip=args.hflip, color_jitter=args.color_jitter, auto_augment=args.aa,
                             interpolation=args.train_interpolation, mean=mean, std=std, re_prob=args.reprob,
                             re_mode=args.remode, re_count=args.recount)
    val = create_transform(size, is_training=False, interpolation=args.interpolation, mean=mean, std=std,
                           crop_pct=args.crop_pct)
    return mend_posterize(train), val


def posterize(img, bits_to_keep, **_):
    """timm's posterize, keeping 0 bits as a black image: timm's `-inc1` policies map magnitude 10 to
    0 bits, which Pillow < 12 turned black and Pillow >= 12 rejects (ValueError, mid-epoch)."""
    if bits_to_keep >= 8:
        return img
    if bits_to_keep <= 0:
        return Image.new(img.mode, img.size)
    return ImageOps.posterize(img, bits_to_keep)


def mend_posterize(transform):
    """Give the posterize ops of `transform`'s Rand/AutoAugment our `posterize` (timm's own global
    op table is left alone)."""
    for t in getattr(transform, "transforms", ()):
        ops = t.ops if isinstance(t, RandAugment) else \
            [op for sub in t.policy for op in sub] if isinstance(t, AutoAugment) else ()
        for op in ops:
            if op.name.startswith("Posterize"):
                op.aug_fn = posterize
    return transform


# ---------------------------------------------------------------- CIFAR

CIFAR = {
    "cifar10": (tv_datasets.CIFAR10, "cifar-10-batches-py",
                ["data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4", "data_batch_5", "test_batch",
                 "batches.meta"]),
    "cifar100": (tv_datasets.CIFAR100, "cifar-100-python", ["train", "test", "meta"]),
}


def _online(host="www.cs.toronto.edu", port=443, timeout=3.0):
    try:
        socket.create_connection((host, port), timeout=timeout).close()
        return True
    except OSError:
        return False


class _CifarUnpickler(pickle.Unpickler):
    """Only what CIFAR python pickles hold (dicts, lists, strings, numbers, NumPy arrays and scalars).
    torchvision reads them with pickle.load, which runs whatever a file names; these files come from
    the internet or from other people's scripts."""

    ALLOWED = {("numpy._core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "scalar"),
               ("numpy._core.numeric", "_frombuffer"), ("numpy", "ndarray"), ("numpy", "dtype")}

    def find_class(self, module, name):
        module = module.replace("numpy.core.", "numpy._core.")  # NumPy 1 names in older pickles
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"it names {module}.{name}, which a CIFAR file never holds")
        return super().find_class(module, name)


def read_cifar_pickle(path, keys):
    """One CIFAR python pickle as a dict holding `keys`, read with _CifarUnpickler."""
    try:
        with open(path, "rb") as f:
            entry = _CifarUnpickler(f, encoding="latin1").load()
    except Exception as exc:  # any unpickling failure means the file is not what we expect
        raise DatasetError(f"{path} is not a CIFAR python pickle ({type(exc).__name__}: {exc})") from None
    if not isinstance(entry, dict):
        raise DatasetError(f"{path} holds a {type(entry).__name__}, expected a dict with keys {list(keys)}")
    # pickles written by Python 3 code with bytes keys (b'data'): the same content
    entry = {k.decode("latin1") if isinstance(k, bytes) else k: v for k, v in entry.items()}
    missing = [k for k in keys if k not in entry]
    if missing:
        raise DatasetError(f"{path} has no {missing} (keys: {sorted(entry)}); expected {list(keys)}")
    return entry


class CifarPickles(Dataset):
    """CIFAR-10/100 from the python pickles, as torchvision's classes return them (PIL image, int),
    read with a restricted unpickler and checked: data N x 3072 uint8, N labels within the classes."""

    def __init__(self, name, root, train, transform=None, verify=True):
        tv_class, folder, _ = CIFAR[name]
        folder = Path(root) / folder
        label_key = "labels" if name == "cifar10" else "fine_labels"
        files = [(folder / f, md5) for f, md5 in (tv_class.train_list if train else tv_class.test_list)]
        meta = tv_class.meta
        files_to_check = files + [(folder / meta["filename"], meta["md5"])]
        if verify:
            bad = [p.name for p, md5 in files_to_check if not check_integrity(str(p), md5)]
            if bad:
                raise DatasetError(f"{name.upper()} files {bad} under {folder} fail the official checksum. "
                                   "Re-download them, or pass --no-verify to load CIFAR-format files that "
                                   "differ from the official ones (a subset, generated data)")
        self.classes = read_cifar_pickle(folder / meta["filename"], [meta["key"]])[meta["key"]]
        data, targets = [], []
        for path, _ in files:
            entry = read_cifar_pickle(path, ["data", label_key])
            images, labels = np.asarray(entry["data"]), np.asarray(entry[label_key])
            if images.dtype != np.uint8 or images.ndim != 2 or images.shape[1] != 3 * 32 * 32:
                raise DatasetError(f"{path}: 'data' is {images.dtype} {list(images.shape)}, expected uint8 "
                                   "[N, 3072] (N images of 32x32 RGB, channel-first)")
            if labels.shape != (len(images),) or not np.issubdtype(labels.dtype, np.integer):
                raise DatasetError(f"{path}: {len(images)} images but '{label_key}' is {labels.dtype} "
                                   f"{list(labels.shape)}; expected {len(images)} integer labels")
            if len(labels) and (labels.min() < 0 or labels.max() >= len(self.classes)):
                raise DatasetError(f"{path}: labels span {labels.min()}..{labels.max()}, outside the "
                                   f"{len(self.classes)} classes of {meta['filename']}")
            data.append(images)
            targets.append(labels)
        self.data = np.concatenate(data).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
        self.targets = np.concatenate(targets).tolist()
        self.transform = transform

    def __len__(self):
        return len(self.data)

    def __getitem__(self, index):
        image = Image.fromarray(self.data[index])
        return (self.transform(image) if self.transform else image), self.targets[index]


def cifar_dataset(name, root, train, transform, verify=True):
    """CIFAR-10/100 from `root`, downloaded there when absent and the machine is online."""
    tv_class, folder, files = CIFAR[name]
    root = Path(root)
    present = all((root / folder / f).is_file() for f in files)
    layout = (f"expected {root / folder}/ holding " + ", ".join(files) +
              " (the 'CIFAR python version' archive, extracted)")
    if not present:
        if not _online():
            raise DatasetError(f"no {name.upper()} under {root}: {layout}. This machine is offline, so it "
                               "cannot be downloaded; pass -data-dir with the folder that holds it")
        download_and_extract_archive(tv_class.url, str(root), filename=tv_class.filename, md5=tv_class.tgz_md5)
    return CifarPickles(name, root, train, transform, verify)


def cifar_splits(entry, args, with_train):
    """(train or None, test, classes) of CIFAR-10/100 with the recipe's transforms."""
    train_tf, val_tf = image_transforms(args)
    train = cifar_dataset(entry.name, args.data_dir, True, train_tf, verify=args.verify) if with_train else None
    val = cifar_dataset(entry.name, args.data_dir, False, val_tf, verify=args.verify)
    return train, val, len(val.classes)


# ---------------------------------------------------------------- ImageNet (ImageFolder)



def load_image(path):
    """ImageFolder's loader, naming the file when it cannot be decoded (one bad JPEG in a million)."""
    try:
        with open(path, "rb") as f:
            return Image.open(f).convert("RGB")
    except (OSError, SyntaxError, ValueError) as exc:  # PIL's errors for broken or truncated files
        raise DatasetError(f"cannot decode image {path} ({type(exc).__name__}: {exc}); replace or remove "
                           "the file") from None


def image_folder(root, split, transform):
    """torchvision ImageFolder of ROOT/SPLIT/<class>/<image>, with an error that shows the layout."""
    folder = Path(root) / split
    layout = (f"expected {Path(root)}/train/<class>/<image> and {Path(root)}/val/<class>/<image> "
              "(e.g. val/n01440764/ILSVRC2012_val_00000293.JPEG; sort the validation images into class "
              "folders first)")
    if not folder.is_dir():
        raise DatasetError(f"no {split}/ folder under {root}: {layout}")
    try:
        return tv_datasets.ImageFolder(str(folder), transform=transform, loader=load_image)
    except (FileNotFoundError, RuntimeError) as exc:
        raise DatasetError(f"{folder}: {exc}; {layout}") from exc


def check_same_classes(root, classes, split="val", other="train"):
    """Labels are indices into the sorted class folders, so ROOT/train and ROOT/val must hold the same
    ones; otherwise every label after the first difference is wrong. No-op without ROOT/train."""
    folder = Path(root) / other
    if not folder.is_dir():
        return
    theirs = sorted(p.name for p in folder.iterdir() if p.is_dir())
    if theirs != list(classes):
        only_split = sorted(set(classes) - set(theirs))
        only_other = sorted(set(theirs) - set(classes))
        raise DatasetError(f"{Path(root) / split} has {len(classes)} class folders and {folder} has "
                           f"{len(theirs)}; they must be the same (only in {split}: {only_split[:5]}, only "
                           f"in {other}: {only_other[:5]}), or labels are mismatched")


def imagenet_splits(entry, args, with_train):
    """(train or None, val, classes) of an ImageFolder tree; --eval scans no training images."""
    train_tf, val_tf = image_transforms(args)
    train = image_folder(args.data_dir, "train", train_tf) if with_train else None
    val = image_folder(args.data_dir, "val", val_tf)
    check_same_classes(args.data_dir, val.classes)
    return train, val, len(val.classes)
