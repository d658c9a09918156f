"""Event data (CIFAR10-DVS, N-Caltech101): raw files -> events -> T frames -> 9:1 split -> cache.

spikingjelly does the reading (N-Caltech101's ATIS files) and the frame integration
(`integrate_events_by_fixed_frames_number`, the same function and results in 0.0.0.0.14 and 2.0).
We drive its steps ourselves because its dataset classes differ between those versions and, as
released in 0.0.0.0.14 (the official code's), would download or delete files whose checksums differ,
swallow errors raised in their conversion threads, and read CIFAR10-DVS with `np.fromstring` in
binary mode, which NumPy 2 removed. The folders are 0.0.0.0.14's (`events_np/`,
`frames_number_<T>_split_by_number/`), so folders it made are used as they are.
"""
import json
import math
import os
import random
import shutil
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from spikingjelly.datasets import integrate_events_by_fixed_frames_number, load_ATIS_bin
from torchvision.datasets.utils import extract_archive
from torchvision import transforms as tv_transforms
from torchvision.transforms import InterpolationMode
from torchvision.transforms import functional as TF

from models import spikingjelly_compat as sj

from .config import input_size
from .data import DatasetError

CIFAR10DVS_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")


def read_cifar10dvs(path):
    """AEDAT 2.0 file -> events dict, exactly as spikingjelly's CIFAR10DVS.load_origin_data
    (header lines '#...', then big-endian uint32 (address, timestamp) pairs)."""
    with open(path, "rb") as f:
        f.seek(sj.aedat_header_size(f))
        data = np.frombuffer(f.read(), dtype=">u4")
    if len(data) % 2:
        raise DatasetError(f"{path}: odd number of 32-bit words, not an AEDAT 2.0 event file")
    addr, t = data[::2], data[1::2]
    x = (addr & 0xFE) >> 1
    y = (addr & 0x7F00) >> 8
    p = addr & 1
    return {"t": t, "x": 127 - y, "y": 127 - x, "p": 1 - p.astype(int)}


SOURCES = {
    "cifar10dvs": dict(
        title="CIFAR10-DVS", reader=read_cifar10dvs, ext=".aedat", extract_sub="", hw=(128, 128),
        archives=[f"{c}.zip" for c in CIFAR10DVS_CLASSES],
        where="https://figshare.com/articles/dataset/CIFAR10-DVS_New/4724671 (ten zip files, one per class)"),
    "ncaltech101": dict(
        title="N-Caltech101", reader=load_ATIS_bin, ext=".bin",
        extract_sub="Caltech101", hw=(180, 240), archives=["Caltech101.zip"],
        where="https://www.garrickorchard.com/datasets/n-caltech101 (Caltech101.zip)"),
}


def _layout(name, root):
    s = SOURCES[name]
    sub = f"{s['extract_sub']}/" if s["extract_sub"] else ""
    return (f"put the {s['title']} download from {s['where']} as {root}/download/"
            f"{{{', '.join(s['archives'])}}}, or its extracted class folders as {root}/extract/{sub}<class>/"
            f"*{s['ext']}; a folder spikingjelly already converted ({root}/events_np/<class>/*.npz) is used as is")


def _raw_folder(name, root):
    """The folder of <class>/<raw file> folders, extracting the downloaded archives if needed."""
    s = SOURCES[name]
    extract = root / "extract"
    raw = extract / s["extract_sub"] if s["extract_sub"] else extract
    if raw.is_dir() and any(raw.glob(f"*/*{s['ext']}")):
        return raw
    archives = [root / "download" / a for a in s["archives"]]
    missing = [a.name for a in archives if not a.is_file()]
    if missing:
        raise DatasetError(f"no {s['title']} under {root} (missing {', '.join(missing)}): {_layout(name, root)}")
    for archive in archives:
        print(f"extracting {archive}", flush=True)
        extract_archive(str(archive), str(extract))
    return raw


def for_each_file(work, files, failure):
    """work(file) on a few threads (the file I/O and NumPy release the GIL); the first failure is a
    DatasetError naming its file (`failure` formatted with it), not an error lost in a thread."""
    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
        for src, future in zip(files, [pool.submit(work, f) for f in files]):
            try:
                future.result()
            except Exception as exc:
                raise DatasetError(f"{failure.format(src)}: {type(exc).__name__}: {exc}") from exc


def prepare_events(name, root):
    """ROOT/events_np/<class>/*.npz, converting the raw files once (into a temporary folder, renamed
    when complete, so an interrupted conversion is redone rather than half used)."""
    root = Path(root)
    events = root / "events_np"
    if events.is_dir() and any(events.glob("*/*.npz")):
        return events
    raw = _raw_folder(name, root)
    files = sorted(raw.glob(f"*/*{SOURCES[name]['ext']}"))
    tmp = root / "events_np.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    started = time.time()
    reader = SOURCES[name]["reader"]

    def convert(src):
        dst = tmp / src.parent.name / (src.stem + ".npz")
        dst.parent.mkdir(parents=True, exist_ok=True)
        events_dict = reader(str(src))
        np.savez(dst, t=events_dict["t"], x=events_dict["x"], y=events_dict["y"], p=events_dict["p"])

    print(f"converting {len(files)} {SOURCES[name]['title']} event files to {events} (once)", flush=True)
    for_each_file(convert, files, "cannot read {}")
    tmp.rename(events)
    print(f"converted in {time.time() - started:.1f} s", flush=True)
    return events


def integrate_frames(events, T, hw):
    """Events dict -> frames [T, 2, H, W] (float64 event counts): T slices of equal event count, the last
    one taking the remainder (spikingjelly's split_by='number')."""
    return integrate_events_by_fixed_frames_number(events, "number", T, *hw)


MANIFEST = "manifest.json"


def whole_frames(frames, T):
    """The frame files under `frames` known to be whole: those the manifest lists with their size, or,
    without a manifest (a folder spikingjelly or a killed run wrote), those that read back."""
    if not frames.is_dir():
        return set()
    for tmp in frames.glob("*/*.tmp"):  # a write a kill interrupted
        tmp.unlink(missing_ok=True)
    try:
        manifest = json.loads((frames / MANIFEST).read_text())
        sizes = manifest["files"] if manifest.get("T") == T else {}
    except (OSError, ValueError, KeyError, AttributeError):
        sizes = None
    whole = set()
    for path in frames.glob("*/*.npz"):
        rel = f"{path.parent.name}/{path.name}"
        if sizes is not None:
            if sizes.get(rel) == path.stat().st_size:
                whole.add(rel)
        elif _reads_back(path):
            whole.add(rel)
    if sizes is None and len(whole) < len(list(frames.glob("*/*.npz"))):
        print(f"{frames}: {len(list(frames.glob('*/*.npz'))) - len(whole)} frame files are empty or cut short "
              "(an interrupted run?); integrating them again", flush=True)
    return whole


def _reads_back(path):
    try:
        with np.load(path) as f:
            return f["frames"].ndim == 4
    except Exception:  # empty, truncated or not an npz: not whole, whatever numpy calls it
        return False


def write_manifest(frames, T, files):
    """frames/manifest.json: T and each file's size, written last, so that a folder with a manifest is
    whole and later runs check it by size alone."""
    manifest = {"T": T, "files": {rel: (frames / rel).stat().st_size for rel in files}}
    tmp = frames / (MANIFEST + ".tmp")
    tmp.write_text(json.dumps(manifest))
    tmp.replace(frames / MANIFEST)


def prepare_frames(name, root, T):
    """ROOT/frames_number_<T>_split_by_number/<class>/*.npz (key 'frames'), integrating the samples that
    have no frames yet, each written whole or not at all; the samples [(path, label)] and classes in
    the order of spikingjelly's dataset (classes and files sorted by name)."""
    root = Path(root)
    events = prepare_events(name, root)
    frames = root / f"frames_number_{T}_split_by_number"
    sources = sorted(events.glob("*/*.npz"))
    whole = whole_frames(frames, T)
    todo = [src for src in sources if f"{src.parent.name}/{src.name}" not in whole]
    hw = SOURCES[name]["hw"]

    def integrate(src):
        with np.load(src) as f:
            sample = {key: f[key] for key in "txyp"}
        dst = frames / src.parent.name / src.name
        dst.parent.mkdir(parents=True, exist_ok=True)
        tmp = dst.with_name(dst.name + ".tmp")
        with open(tmp, "wb") as f:
            np.savez_compressed(f, frames=integrate_frames(sample, T, hw))
        tmp.replace(dst)

    if todo:
        started = time.time()
        print(f"integrating {len(todo)} samples into T={T} frames in {frames} (once)", flush=True)
        for_each_file(integrate, todo, "cannot integrate {} into frames")
        print(f"frames ready in {time.time() - started:.1f} s", flush=True)
    if todo or not (frames / MANIFEST).is_file():
        write_manifest(frames, T, [f"{src.parent.name}/{src.name}" for src in sources])
    classes = sorted({src.parent.name for src in sources})
    samples = [(str((frames / src.parent.name / src.name).relative_to(root)), classes.index(src.parent.name))
               for src in sources]
    return samples, classes


def split_per_class(samples, train_ratio=0.9):
    """The first ceil(ratio * n) samples of each class, in file order, for training; the rest for test."""
    by_class = {}
    for sample in samples:
        by_class.setdefault(sample[1], []).append(sample)
    train, test = [], []
    for label in sorted(by_class):
        items = by_class[label]
        cut = math.ceil(len(items) * train_ratio)
        train += items[:cut]
        test += items[cut:]
    return train, test


def load_split(name, root, T, size, cache_dir=None, train_ratio=0.9):
    """(train samples, test samples, classes), from `cache_dir` when it was built for this exact set-up."""
    root = Path(root).resolve()
    config = {"dataset": name, "root": str(root), "T": T, "split_by": "number", "train_ratio": train_ratio,
              "input_size": list(size)}
    manifest = Path(cache_dir) / f"{name}-split.json" if cache_dir else None
    if manifest is not None and manifest.is_file():
        cached = json.loads(manifest.read_text())
        if cached["config"] == config and all((root / p).is_file() for p, _ in cached["train"][:1] + cached["test"][:1]):
            print(f"dts_cache: using {manifest}", flush=True)
            return cached["train"], cached["test"], cached["classes"]
        changed = {k: (cached["config"].get(k), v) for k, v in config.items() if cached["config"].get(k) != v}
        print(f"dts_cache: {manifest} was built for another set-up {changed or '(files moved)'}; rebuilding",
              flush=True)
    samples, classes = prepare_frames(name, root, T)
    train, test = split_per_class(samples, train_ratio)
    if manifest is not None:
        manifest.parent.mkdir(parents=True, exist_ok=True)
        tmp = manifest.with_name(manifest.name + ".tmp")
        tmp.write_text(json.dumps({"config": config, "classes": classes, "train": train, "test": test}))
        tmp.replace(manifest)
    return train, test, classes


class EventFrames(torch.utils.data.Dataset):
    """Integrated frames [T, 2, H, W] (float32 event counts) and labels."""

    def __init__(self, root, samples, classes, transform=None):
        self.root = Path(root)
        self.samples = samples
        self.classes = classes
        self.transform = transform

    def __len__(self):
        return len(self.samples)

    def __getitem__(self, i):
        path, label = self.samples[i]
        try:
            with np.load(self.root / path) as f:
                frames = torch.from_numpy(f["frames"]).float()
        except Exception as exc:  # numpy raises EOFError, BadZipFile, ValueError, ... for a broken file
            raise DatasetError(f"cannot read frames {self.root / path} ({type(exc).__name__}: {exc}); delete it "
                               "and run again to integrate it anew") from None
        if self.transform is not None:
            frames = self.transform(frames)
        return frames, label


class SNNAugmentWide:
    """QKFormer's DVS augmentation: TrivialAugment restricted to geometric ops, one per sample
    (identity, shear-x, translate-x/y, rotate, cutout), the same op on every time step."""

    bins = 31

    def __init__(self):
        self.ops = {
            "identity": None,
            "shear_x": torch.linspace(-0.3, 0.3, self.bins),
            "translate_x": torch.linspace(-5.0, 5.0, self.bins),
            "translate_y": torch.linspace(-5.0, 5.0, self.bins),
            "rotate": torch.linspace(-30.0, 30.0, self.bins),
            "cutout": None,
        }
        # QKFormer's DVS cutout: one square of 0.1-11 % of the frame, erased on every frame and
        # polarity (RandomErasing indexes the last two axes)
        self.cutout = tv_transforms.RandomErasing(p=1.0, scale=(0.001, 0.11), ratio=(1.0, 1.0), value=0)

    def __call__(self, frames):
        name = list(self.ops)[random.randrange(len(self.ops))]
        levels = self.ops[name]
        m = float(levels[random.randrange(self.bins)]) * random.choice((-1, 1)) if levels is not None else 0.0
        nearest = InterpolationMode.NEAREST
        if name == "shear_x":
            return TF.affine(frames, angle=0.0, translate=[0, 0], scale=1.0, shear=[math.degrees(m), 0.0],
                             interpolation=nearest)
        if name in ("translate_x", "translate_y"):
            shift = [int(m), 0] if name == "translate_x" else [0, int(m)]
            return TF.affine(frames, angle=0.0, translate=shift, scale=1.0, shear=[0.0, 0.0], interpolation=nearest)
        if name == "rotate":
            return TF.rotate(frames, m, interpolation=nearest)
        if name == "cutout":
            return self.cutout(frames)
        return frames


def event_splits(entry, args, with_train):
    """(train set or None, test set, classes) at the model's T: -T, else the variant's."""
    name, size = entry.name, input_size(args)
    T = args.T
    if T is None:
        from .model_config import ModelConfig
        with torch.device("meta"):
            T = ModelConfig.from_args(args).build(num_classes=0).T
    train, test, classes = load_split(name, args.data_dir, T, size, cache_dir=args.dts_cache or None)
    root = Path(args.data_dir).resolve()
    # N-Caltech101's 180x240 frames to the input size (128x128 as the official code); bilinear on counts
    resize = tv_transforms.Resize(tuple(size), interpolation=InterpolationMode.BILINEAR, antialias=False)
    train_set = EventFrames(root, train, classes, tv_transforms.Compose(
        [resize, tv_transforms.RandomHorizontalFlip(), SNNAugmentWide()]))
    test_set = EventFrames(root, test, classes, resize)
    return (train_set if with_train else None), test_set, len(classes)
