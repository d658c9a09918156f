"""Command line + YAML recipe: one parser with every flag, in both spellings users bring.

The yml's keys are the parser's destinations; the command line overrides the yml, which overrides
the parser's defaults (timm's two-stage pattern). Every multi-word flag is accepted with dashes and
with underscores (`--batch-size`, `--batch_size`), so the seed commands of every folder work.
"""
import argparse
import sys

import yaml

from models.neurons import BACKENDS, NEURONS


def build_parser(description):
    p = argparse.ArgumentParser(description=description, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("-c", "--config", default="", help="YAML recipe; the command line overrides it")

    g = p.add_argument_group("model")
    g.add_argument("--model", default="spiliformer_4_384", help="registered model name (any case)")
    g.add_argument("-T", "--T", "--time-step", "--time_step", dest="T", type=int, default=None,
                   help="time steps (default: the variant's)")
    g.add_argument("--num-classes", "--num_classes", dest="num_classes", type=int, default=None)
    g.add_argument("--embed-dim", "--embed_dim", dest="embed_dim", type=int, default=None,
                   help="width of the deepest stage, to shrink the model")
    g.add_argument("--depths", type=int, nargs="+", default=None)
    g.add_argument("--num-heads", "--num_heads", dest="num_heads", type=int, default=None)
    g.add_argument("--ff-lidiff", "--ff_lidiff", dest="ff_lidiff", action=argparse.BooleanOptionalAction,
                   default=True, help="FF-LiDiff attention (off: QKFormer token attention)")
    g.add_argument("--fb-lidiff", "--fb_lidiff", dest="fb_lidiff", action=argparse.BooleanOptionalAction,
                   default=True, help="FB-LiDiff attention with feedback (off: one pass)")
    g.add_argument("--feedback-scale", "--feedback_scale", dest="feedback_scale", type=float, default=1.0)
    g.add_argument("--neuron", choices=NEURONS, default="lif")
    g.add_argument("--backend", choices=BACKENDS, default="auto", help="LIF kernel")
    g.add_argument("--legacy", action="store_true", help="official numerics, for released weights")
    g.add_argument("--alpha", type=float, default=0.5, help="eq 22: weight of the pass-1 loss")
    g.add_argument("--alpha-end", "--alpha_end", dest="alpha_end", type=float, default=None,
                   help="move alpha linearly to this value over training (official DVS: 0.5 -> 0.2)")

    g = p.add_argument_group("data")
    g.add_argument("-data-dir", "--data-dir", "--data_dir", "--data-path", "--data_path", dest="data_dir",
                   default="./data", help="dataset folder")
    g.add_argument("--no-verify", "--no_verify", dest="verify", action="store_false",
                   help="accept dataset files whose checksums differ from the official ones")
    g.add_argument("--img-size", "--img_size", "--input-size", "--input_size", dest="img_size", type=int,
                   nargs="+", default=None, help="input size: one value (square) or H W")
    g.add_argument("-j", "--workers", "--num-workers", "--num_workers", dest="workers", type=int, default=4)
    g.add_argument("--mean", type=float, nargs="+", default=None)
    g.add_argument("--std", type=float, nargs="+", default=None)
    g.add_argument("--crop-pct", "--crop_pct", dest="crop_pct", type=float, default=None)
    g.add_argument("--scale", type=float, nargs=2, default=(0.08, 1.0), help="random-resized-crop area")
    g.add_argument("--ratio", type=float, nargs=2, default=(3 / 4, 4 / 3), help="random-resized-crop aspect")
    g.add_argument("--hflip", type=float, default=0.5)
    g.add_argument("--color-jitter", "--color_jitter", dest="color_jitter", type=float, default=0.0)
    g.add_argument("--aa", default=None, help="timm auto-augment policy, e.g. rand-m9-n1-mstd0.4-inc1")
    g.add_argument("--interpolation", default="bicubic")
    g.add_argument("--train-interpolation", "--train_interpolation", dest="train_interpolation",
                   default="bicubic")
    g.add_argument("--reprob", type=float, default=0.0, help="random erasing probability")
    g.add_argument("--remode", default="const")
    g.add_argument("--recount", type=int, default=1)
    g.add_argument("--mixup", type=float, default=0.0, help="mixup alpha (0: off)")
    g.add_argument("--cutmix", type=float, default=0.0, help="cutmix alpha (0: off)")
    g.add_argument("--mixup-prob", "--mixup_prob", dest="mixup_prob", type=float, default=1.0)
    g.add_argument("--mixup-switch-prob", "--mixup_switch_prob", dest="mixup_switch_prob", type=float,
                   default=0.5)
    g.add_argument("--mixup-mode", "--mixup_mode", dest="mixup_mode", default="batch")
    g.add_argument("--mixup-off-epoch", "--mixup_off_epoch", dest="mixup_off_epoch", type=int, default=0,
                   help="turn mixup/cutmix off from this epoch (0: never)")
    g.add_argument("--smoothing", type=float, default=0.1, help="label smoothing")

    g = p.add_argument_group("optimisation")
    g.add_argument("--epochs", type=int, default=300, help="epochs before the cool-down")
    g.add_argument("--cooldown-epochs", "--cooldown_epochs", dest="cooldown_epochs", type=int, default=0)
    g.add_argument("-b", "--batch-size", "--batch_size", dest="batch_size", type=int, default=64,
                   help="per process")
    g.add_argument("--val-batch-size", "--val_batch_size", dest="val_batch_size", type=int, default=None)
    g.add_argument("--accum-iter", "--accum_iter", dest="accum_iter", type=int, default=1,
                   help="gradient accumulation steps")
    g.add_argument("--opt", default="adamw")
    g.add_argument("--opt-eps", "--opt_eps", dest="opt_eps", type=float, default=None)
    g.add_argument("--momentum", type=float, default=0.9)
    g.add_argument("--lr", type=float, default=1e-3, help="peak learning rate (absolute)")
    g.add_argument("--blr", type=float, default=None,
                   help="base lr: without --lr, lr = blr x effective batch / 256")
    g.add_argument("--layer-decay", "--layer_decay", dest="layer_decay", type=float, default=None,
                   help="layer-wise lr decay (1.0 or unset: none)")
    g.add_argument("--sched-on-updates", "--sched_on_updates", dest="sched_on_updates",
                   action=argparse.BooleanOptionalAction, default=False,
                   help="step the lr schedule every update instead of every epoch")
    g.add_argument("--min-lr", "--min_lr", dest="min_lr", type=float, default=1e-5)
    g.add_argument("--weight-decay", "--weight_decay", dest="weight_decay", type=float, default=0.05)
    g.add_argument("--sched", default="cosine")
    g.add_argument("--warmup-epochs", "--warmup_epochs", dest="warmup_epochs", type=int, default=0)
    g.add_argument("--warmup-lr", "--warmup_lr", dest="warmup_lr", type=float, default=1e-5)
    g.add_argument("--clip-grad", "--clip_grad", dest="clip_grad", type=float, default=None)

    g = p.add_argument_group("run")
    g.add_argument("--output", "--output-dir", "--output_dir", dest="output", default="./outputs",
                   help="checkpoints, config, log.txt and tensorboard go here")
    g.add_argument("--experiment", default="", help="sub-folder of --output (default: model-T-time)")
    g.add_argument("--log-dir", "--log_dir", dest="log_dir", default="",
                   help="tensorboard folder (default: the run folder)")
    g.add_argument("--finetune", default="",
                   help="initialise from CKPT (ours, QKFormer's or SpiLiFormer's); tensors it lacks or "
                        "that do not fit are reported and keep their initialisation")
    g.add_argument("--resume", default="", help="checkpoint to continue from (or to evaluate with --eval)")
    g.add_argument("--eval", action="store_true", help="evaluate --resume and exit")
    g.add_argument("--start-epoch", "--start_epoch", dest="start_epoch", type=int, default=None)
    g.add_argument("--save-every", "--save_every", dest="save_every", type=int, default=0,
                   help="also keep checkpoint-EPOCH.pth every N epochs")
    g.add_argument("--seed", type=int, default=42)
    g.add_argument("--amp", action=argparse.BooleanOptionalAction, default=False,
                   help="mixed precision (CUDA only)")
    g.add_argument("--amp-dtype", "--amp_dtype", dest="amp_dtype", choices=("bf16", "fp16"), default="bf16")
    g.add_argument("--device", default=None, help="cuda or cpu (default: cuda when available)")
    g.add_argument("--compile", action="store_true",
                   help="torch.compile the training model (the first steps compile: seconds on CUDA, minutes on CPU)")
    g.add_argument("--log-interval", "--log_interval", dest="log_interval", type=int, default=50)
    g.add_argument("--dist-eval", "--dist_eval", dest="dist_eval", action=argparse.BooleanOptionalAction,
                   default=True, help="shard evaluation over processes")
    g.add_argument("--local-rank", "--local_rank", dest="local_rank", type=int, default=None,
                   help="accepted for torch.distributed.launch; LOCAL_RANK from the environment wins")
    return p


def parse_args(parser, argv=None, defaults=None):
    """Parse `argv` over the yml given by --config (and `defaults`, the script's recipe)."""
    argv = sys.argv[1:] if argv is None else argv
    if defaults:
        parser.set_defaults(**defaults)
    first, _ = parser.parse_known_args(argv)
    if first.config:
        try:
            with open(first.config) as f:
                recipe = yaml.safe_load(f) or {}
        except FileNotFoundError:
            parser.error(f"config file not found: {first.config}")
        known = {a.dest for a in parser._actions}
        unknown = sorted(set(recipe) - known)
        if unknown:
            parser.error(f"{first.config}: unknown keys {unknown}; keys are the flags' names with "
                         "underscores (see --help)")
        parser.set_defaults(**recipe)
    args = parser.parse_args(argv)
    if isinstance(args.img_size, int):
        args.img_size = [args.img_size]
    if args.img_size is not None and len(args.img_size) not in (1, 2):
        parser.error("--img-size takes one value (square) or two (H W)")
    return args


def input_size(args):
    """(H, W) from --img-size."""
    size = list(args.img_size)
    return (size[0], size[-1])
