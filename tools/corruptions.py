"""Corruption robustness (CIFAR-10-C, ImageNet-C style): top-1 per corruption type and severity.

    python tools/corruptions.py --dataset cifar10 --data-path DIR --checkpoint CKPT --corruption-path DIR/CIFAR-10-C
    python tools/corruptions.py --dataset imagenet --data-path DIR --checkpoint CKPT --num-batches 10

With --corruption-path holding the public CIFAR-10-C files (<corruption>.npy: 50000x32x32x3 uint8,
severities 1-5 stacked by 10000, and labels.npy), those are read; otherwise the corruptions are
generated from the clean evaluation images with the `imagecorruptions` package.
"""
import sys
import types
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402

import models  # noqa: E402
from engine.registry import DATASETS  # noqa: E402
from tools.common import (InputSpace, batches, build_parser, parse, eval_data, load_model, main_guard,  # noqa: E402
                          write_csv)

SEVERITIES = (1, 2, 3, 4, 5)


def _imagecorruptions():
    """imagecorruptions 1.1.2, mended for current libraries: it passes `multichannel=` to
    scikit-image's gaussian (now `channel_axis=`) and uses `np.float_` (gone in NumPy 2)."""
    with warnings.catch_warnings():  # its imports of deprecated scipy/pkg_resources names, not ours to fix
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.filterwarnings("ignore", message="pkg_resources is deprecated")
        import imagecorruptions
        from imagecorruptions import corruptions
    from skimage.filters import gaussian

    def gaussian_compat(image, sigma=1, multichannel=None, **kwargs):
        if multichannel is not None:
            kwargs["channel_axis"] = -1 if multichannel else None
        return gaussian(image, sigma=sigma, **kwargs)

    numpy_compat = types.ModuleType("numpy_compat")
    numpy_compat.__getattr__ = lambda name: np.float64 if name == "float_" else getattr(np, name)
    corruptions.gaussian = gaussian_compat
    corruptions.np = numpy_compat
    return imagecorruptions


def corruption_names(subset="all"):
    return list(_imagecorruptions().get_corruption_names(subset))


def generate(images, name, severity, seed=0):
    """[B, 3, H, W] floats in [0, 1] -> the same images corrupted (imagecorruptions, uint8 round trip)."""
    corrupt = _imagecorruptions().corrupt
    np.random.seed(seed)  # the package draws from NumPy's global generator
    out = []
    for img in images:
        arr = (img.permute(1, 2, 0).cpu().numpy() * 255).round().astype(np.uint8)
        bad = np.asarray(corrupt(arr, corruption_name=name, severity=severity))[: arr.shape[0], : arr.shape[1]]
        out.append(torch.from_numpy(bad.astype(np.float32) / 255).permute(2, 0, 1))
    return torch.stack(out).to(images.device)


def read_cifar10c(folder, name, severity, limit):
    folder = Path(folder)
    data = np.load(folder / f"{name}.npy", mmap_mode="r")
    labels = np.load(folder / "labels.npy")
    per = len(data) // 5
    lo = (severity - 1) * per
    hi = lo + min(per, limit)
    x = torch.from_numpy(np.ascontiguousarray(data[lo:hi])).permute(0, 3, 1, 2).float() / 255
    return x, torch.from_numpy(labels[lo:hi]).long()


@torch.no_grad()
def accuracy(model, x, y, batch_size):
    hits = 0
    for i in range(0, len(x), batch_size):
        hits += (model(x[i:i + batch_size]).argmax(1) == y[i:i + batch_size]).sum().item()
    return 100.0 * hits / max(len(x), 1)


def check_request(names, severities, folder=None):
    """Unknown corruptions or severities, or CIFAR-10-C files missing from `folder`: one error before
    any work (a table half computed is lost otherwise)."""
    unknown = sorted(set(names) - set(corruption_names("all")))
    if unknown:
        raise models.ConfigError(f"unknown corruptions {unknown}; choose from {corruption_names('all')}")
    bad = sorted(set(severities) - set(SEVERITIES))
    if bad:
        raise models.ConfigError(f"severities {bad} do not exist; choose from {list(SEVERITIES)}")
    missing = [f"{name}.npy" for name in names if folder and not Path(folder, f"{name}.npy").is_file()]
    if missing:
        raise models.ConfigError(f"{folder} lacks {', '.join(missing)}; add the files, or choose the corruptions "
                                 "it has with --corruptions")


def main(argv=None):
    parser = build_parser(__doc__.splitlines()[0])
    parser.add_argument("--corruption-path", default="", help="folder of CIFAR-10-C .npy files")
    parser.add_argument("--corruptions", nargs="+", default=None, help="default: all 19 (15 common + 4 extra)")
    parser.add_argument("--severities", type=int, choices=SEVERITIES, nargs="+", default=list(SEVERITIES),
                        help="corruption severities")
    args = parse(parser, argv)
    model = load_model(args)
    if DATASETS[args.dataset].event:
        raise models.ConfigError(f"corruptions apply to images, and {args.dataset} is event data; choose an "
                                 "image dataset")
    dataset, mean, std = eval_data(args, model)
    wrapped = InputSpace(model, mean, std).to(args.device).eval()
    limit = args.num_batches * args.batch_size
    use_files = bool(args.corruption_path) and Path(args.corruption_path, "labels.npy").is_file()
    if args.corruption_path and not use_files:
        print(f"note: no labels.npy in {args.corruption_path}; generating the corruptions instead")
    names = args.corruptions or corruption_names("all")
    check_request(names, args.severities, args.corruption_path if use_files else None)
    clean = None if use_files else [(x, y) for x, y in batches(dataset, args)]
    table = {}
    for name in names:
        table[name] = []
        for severity in args.severities:
            if use_files:
                x, y = read_cifar10c(args.corruption_path, name, severity, limit)
                x, y = x.to(args.device), y.to(args.device)
            else:
                x = torch.cat([generate(b, name, severity) for b, _ in clean])
                y = torch.cat([t for _, t in clean])
            table[name].append(accuracy(wrapped, x, y, args.batch_size))
        row = table[name]
        print(f"{name:<18} " + " ".join(f"{a:6.2f}" for a in row) + f" | mean {sum(row) / len(row):6.2f}",
              flush=True)
    overall = [a for row in table.values() for a in row]
    source = args.corruption_path if use_files else "generated with imagecorruptions"
    print(f"mean top-1 over {len(names)} corruptions x severities {args.severities}: "
          f"{sum(overall) / len(overall):.2f}% ({source}, {limit} images each)")
    write_csv(args.output, [{"corruption": name, **{f"severity_{s}": a for s, a in zip(args.severities, row)},
                             "mean": sum(row) / len(row)} for name, row in table.items()])
    return 0


if __name__ == "__main__":
    sys.exit(main_guard(main))
