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


def write_cifar10dvs(root, classes=("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship",
                                   "truck"), per_class=10, events=300, seed=0, zipped=True):
    """CIFAR10-DVS as downloaded: ROOT/download/<class>.zip holding <class>/cifar10_<class>_<i>.aedat
    (AEDAT 2.0: '#' header lines, then big-endian uint32 (address, timestamp) pairs)."""
    import zipfile

    rng = np.random.default_rng(seed)
    root = Path(root)
    (root / "download").mkdir(parents=True, exist_ok=True)
    for c, name in enumerate(classes):
        files = {}
        for i in range(per_class):
            x, y = rng.integers(0, 128, events), (rng.integers(0, 64, events) + 64 * (c % 2))
            p = rng.integers(0, 2, events)
            addr = (y.astype(np.uint32) << 8) | (x.astype(np.uint32) << 1) | p.astype(np.uint32)
            t = np.sort(rng.integers(0, 1_000_000, events)).astype(np.uint32)
            body = np.empty(2 * events, dtype=">u4")
            body[0::2], body[1::2] = addr, t
            files[f"{name}/cifar10_{name}_{i}.aedat"] = b"#!AER-DAT2.0\r\n# This is a raw AE data file\r\n" + body.tobytes()
        if zipped:
            with zipfile.ZipFile(root / "download" / f"{name}.zip", "w") as z:
                for arcname, data in files.items():
                    z.writestr(arcname, data)
        else:
            for arcname, data in files.items():
                path = root / "extract" / arcname
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(data)
    return root


def write_ncaltech101(root, classes=("accordion", "airplanes", "anchor"), per_class=10, events=300, seed=0):
    """N-Caltech101 as downloaded: ROOT/download/Caltech101.zip holding Caltech101/<class>/image_XXXX.bin
    (ATIS events of 40 bits: x (8), y (8), polarity (1), timestamp (23))."""
    import zipfile

    rng = np.random.default_rng(seed)
    root = Path(root)
    (root / "download").mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(root / "download" / "Caltech101.zip", "w") as z:
        for c, name in enumerate(classes):
            for i in range(per_class):
                x, y = rng.integers(0, 240, events), rng.integers(0, 180, events)
                p = rng.integers(0, 2, events)
                t = np.sort(rng.integers(0, 300_000, events))
                raw = np.zeros((events, 5), dtype=np.uint8)
                raw[:, 0], raw[:, 1] = x, y
                raw[:, 2] = (p << 7) | ((t >> 16) & 0x7F)
                raw[:, 3], raw[:, 4] = (t >> 8) & 0xFF, t & 0xFF
                z.writestr(f"Caltech101/{name}/image_{i + 1:04d}.bin", raw.tobytes())
    return root


def _optimizer_state(state_dict):
    import torch
    params = [torch.zeros_like(v, requires_grad=True) for v in state_dict.values() if v.is_floating_point()][:2]
    return torch.optim.AdamW(params).state_dict()


def write_timm_checkpoint(path, state_dict, **args):
    """As timm's CheckpointSaver writes it (QKFormer's CIFAR code): the run's argparse.Namespace in
    'args', the weights under 'state_dict', the scaler under 'amp_scaler'."""
    import argparse

    import torch
    torch.save({"epoch": 309, "arch": "QKFormer", "state_dict": state_dict, "optimizer": _optimizer_state(state_dict),
                "version": 2, "args": argparse.Namespace(model="QKFormer", **args),
                "amp_scaler": torch.amp.GradScaler("cpu").state_dict(), "metric": 96.1}, path)
    return path


def write_mae_checkpoint(path, state_dict, **args):
    """As MAE/DeiT's misc.save_model writes it (QKFormer's ImageNet code)."""
    import argparse

    import torch
    torch.save({"model": state_dict, "optimizer": _optimizer_state(state_dict), "epoch": 199,
                "scaler": torch.amp.GradScaler("cpu").state_dict(),
                "args": argparse.Namespace(model="QKFormer_10_768", **args)}, path)
    return path
