"""Push the recipes' real data pipelines through thousands of generated samples (not a test: minutes).

    python tests/scale_run.py cifar   --n 50000   # CIFAR-10 recipe loader, one full epoch
    python tests/scale_run.py imagenet --n 5000   # ImageNet recipe on JPEGs of odd sizes and modes
    python tests/scale_run.py dvs     --n 1000    # CIFAR10-DVS: raw files -> frames -> recipe loader

Faults that tiny tests miss (an augmentation op at an extreme magnitude, an odd image mode) show up
here as an exception; the run prints samples/s and the count of batches it saw.
"""
import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from datagen import write_cifar, write_cifar10dvs  # noqa: E402
from engine import registry  # noqa: E402
from engine.config import parse_command_line  # noqa: E402
from engine.data import make_loaders, make_mixup  # noqa: E402
from engine.distributed import Dist  # noqa: E402


def write_odd_jpegs(root, n, classes=10, seed=0):
    """ImageNet-like files: sizes from 40 px to 500 px, RGB, grayscale and CMYK JPEGs, one PNG in a
    .JPEG name (ImageNet has all of these)."""
    from PIL import Image
    rng = np.random.default_rng(seed)
    for split, count in (("train", n), ("val", max(n // 10, classes))):
        for i in range(count):
            c = i % classes
            folder = Path(root) / split / f"n{c:08d}"
            folder.mkdir(parents=True, exist_ok=True)
            h, w = rng.integers(40, 500, 2)
            image = Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
            mode = ("RGB", "L", "CMYK")[i % 3]
            fmt = "PNG" if i == 7 else "JPEG"
            image.convert(mode).save(folder / f"{i}.JPEG", format=fmt)
    return Path(root)


def drive(loader, mixup, limit=None):
    started, seen, batches = time.time(), 0, 0
    for images, targets in loader:
        if mixup is not None:
            images, targets = mixup(images, targets)
        assert images.isfinite().all()
        seen += images.shape[0]
        batches += 1
        if limit and seen >= limit:
            break
    return seen, batches, time.time() - started


def main():
    p = argparse.ArgumentParser()
    p.add_argument("job", choices=("cifar", "imagenet", "dvs"))
    p.add_argument("--n", type=int, default=5000)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--root", default="", help="reuse generated data here")
    opts = p.parse_args()
    root = Path(opts.root or tempfile.mkdtemp(prefix=f"scale-{opts.job}-"))
    started = time.time()
    if opts.job == "cifar":
        if not (root / "cifar-10-batches-py").is_dir():
            write_cifar(root, "cifar10", train_per_batch=opts.n // 5, test=1000)
        entry, flags = registry.get("cifar10"), ["--no-verify"]
    elif opts.job == "imagenet":
        if not (root / "train").is_dir():
            write_odd_jpegs(root, opts.n)
        entry, flags = registry.get("imagenet"), []
    else:
        if not (root / "download").is_dir() and not (root / "events_np").is_dir():
            write_cifar10dvs(root, per_class=opts.n // 10, events=20000)
        entry, flags = registry.get("cifar10dvs"), []
    # the recipe as the job's train.py resolves it, and its own dataset code
    args = parse_command_line(entry, ["--data-dir", str(root), "-j", str(opts.workers), *flags])
    train, val, classes = entry.build(entry, args, True)
    print(f"data ready in {time.time() - started:.0f} s: {len(train)} train / {len(val)} val samples", flush=True)
    train_loader, val_loader = make_loaders(train, val, args, Dist(), args.workers)
    mixup = make_mixup(args, classes)
    seen, batches, seconds = drive(train_loader, mixup)
    print(f"train: {seen} samples in {batches} batches, {seconds:.0f} s ({seen / seconds:.0f} samples/s)", flush=True)
    seen, batches, seconds = drive(val_loader, None)
    print(f"val: {seen} samples in {batches} batches, {seconds:.0f} s", flush=True)


if __name__ == "__main__":
    main()
