"""The CIFAR-10/100 scripts: the two differ only in their yml and torchvision dataset class."""
from .config import build_parser, parse_args
from .data import CIFAR_MEAN, CIFAR_STD, cifar_dataset, image_transforms
from .runner import run


def main(name, argv=None):
    parser = build_parser(f"SpiLiFormer on {name.upper()}")
    args = parse_args(parser, argv, defaults={"img_size": [32]})

    def datasets(args):
        train_tf, val_tf = image_transforms(args, CIFAR_MEAN, CIFAR_STD)
        train = None if args.eval else cifar_dataset(name, args.data_dir, True, train_tf, verify=args.verify)
        val = cifar_dataset(name, args.data_dir, False, val_tf, verify=args.verify)
        return train, val, len(val.classes)

    return run(args, datasets)
