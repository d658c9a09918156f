"""Tiny datasets in the real on-disk formats, for end-to-end tests."""
import pickle
from pathlib import Path

import numpy as np


def _pickle(path, obj):
    with open(path, "wb") as f:
        pickle.dump(obj, f)


def _images(rng, labels):
    """Class-dependent colour plus noise, so a model can learn something in a few steps."""
    base = (np.asarray(labels)[:, None] * 37 % 256).astype(np.int64)
    noise = rng.integers(0, 64, size=(len(labels), 3072))
    return ((base + noise) % 256).astype(np.uint8)


def write_cifar(root, name="cifar10", train_per_batch=8, test=8, classes=None, seed=0):
    """CIFAR python pickles as torchvision reads them (cifar-10-batches-py / cifar-100-python)."""
    rng = np.random.default_rng(seed)
    if name == "cifar10":
        folder, classes = Path(root) / "cifar-10-batches-py", classes or 10
        folder.mkdir(parents=True, exist_ok=True)
        names = [f"class{i}" for i in range(classes)]
        for i in range(1, 6):
            labels = list(rng.integers(0, classes, train_per_batch))
            _pickle(folder / f"data_batch_{i}",
                    {"batch_label": f"training batch {i} of 5", "labels": labels, "data": _images(rng, labels),
                     "filenames": [f"img{j}.png" for j in range(train_per_batch)]})
        labels = list(rng.integers(0, classes, test))
        _pickle(folder / "test_batch", {"labels": labels, "data": _images(rng, labels)})
        _pickle(folder / "batches.meta", {"label_names": names, "num_cases_per_batch": train_per_batch})
    else:
        folder, classes = Path(root) / "cifar-100-python", classes or 100
        folder.mkdir(parents=True, exist_ok=True)
        for split, n in (("train", 5 * train_per_batch), ("test", test)):
            fine = list(rng.integers(0, classes, n))
            _pickle(folder / split, {"fine_labels": fine, "coarse_labels": [f // 5 for f in fine],
                                     "data": _images(rng, fine)})
        _pickle(folder / "meta", {"fine_label_names": [f"class{i}" for i in range(classes)],
                                  "coarse_label_names": [f"super{i}" for i in range(20)]})
    return folder


def write_image_folder(root, classes=3, train_per_class=4, val_per_class=2, size=(40, 48), seed=0):
    """ImageNet's layout: ROOT/{train,val}/<wnid>/<name>.JPEG, real JPEG files."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    for split, n in (("train", train_per_class), ("val", val_per_class)):
        for c in range(classes):
            folder = Path(root) / split / f"n{c:08d}"
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                pixels = (rng.integers(0, 64, (*size, 3)) + c * 80) % 256
                Image.fromarray(pixels.astype(np.uint8)).save(folder / f"{split}_{c}_{i}.JPEG", quality=90)
    return Path(root)
