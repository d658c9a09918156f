"""The ImageNet-1K script: DeiT/MAE-style flags and recipe (SPEC 7), ImageFolder data."""
import argparse

from .config import build_parser, input_size, parse_args
from .data import IMAGENET_MEAN, IMAGENET_STD, check_same_classes, image_folder, image_transforms
from .runner import run

# Table 1 recipe (Sec. 4.1), phase 1: MAE's schedule, linear warm-up from 0 then a cosine over the
# remaining epochs, stepped every update; stochastic depth 0.1 as DeiT/MAE (decisions D8, E9)
RECIPE = dict(model="spiliformer_10_768", img_size=[224], batch_size=64, epochs=200, blr=6e-4, lr=None,
              min_lr=1e-6, warmup_epochs=5, warmup_lr=0.0, warmup_prefix=True, weight_decay=0.05,
              layer_decay=1.0, opt="adamw", sched="cosine", sched_on_updates=True, aa="rand-m9-mstd0.5-inc1",
              smoothing=0.1, reprob=0.25, remode="pixel", mixup=0.0, cutmix=0.0, drop_path=0.1,
              scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3), amp=True, amp_dtype="fp16", workers=10, experiment=".",
              dist_eval=False, log_interval=100)
# phase 2 (--phase 2 --finetune PHASE1_CKPT): "we decrease the base learning rate to 2e-6 and continue
# training for an additional 20 epochs using an epoch-wise learning rate decay strategy"
PHASE2 = dict(blr=2e-6, epochs=20, warmup_epochs=0, sched_on_updates=False)


def eval_crop_pct(size):
    """224: resize 256 -> centre crop 224; larger sizes: resize straight to the size (crop ratio 1.0),
    as the official evaluation does."""
    return 224 / 256 if max(size) <= 224 else 1.0


def main(argv=None):
    parser = build_parser("SpiLiFormer on ImageNet-1K")
    parser.add_argument("--phase", type=int, choices=(1, 2), default=1,
                        help="Table 1 recipe phase; 2: blr 2e-6, 20 epochs, no warm-up, lr decays per epoch")
    early = argparse.ArgumentParser(add_help=False)  # the phase picks the defaults the flags override
    early.add_argument("--phase", type=int, default=1)
    phase = early.parse_known_args(argv)[0].phase
    args = parse_args(parser, argv, defaults={**RECIPE, **(PHASE2 if phase == 2 else {})})
    if args.phase == 2 and not (args.finetune or args.resume or args.eval):
        parser.error("--phase 2 continues from phase 1's weights: add --finetune PHASE1_CKPT")
    if args.crop_pct is None:
        args.crop_pct = eval_crop_pct(input_size(args))

    def datasets(args):
        train_tf, val_tf = image_transforms(args, IMAGENET_MEAN, IMAGENET_STD)
        train = None if args.eval else image_folder(args.data_dir, "train", train_tf)  # --eval: no train scan
        val = image_folder(args.data_dir, "val", val_tf)
        check_same_classes(args.data_dir, val.classes)
        return train, val, len(val.classes)

    return run(args, datasets)
