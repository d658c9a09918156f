"""The CIFAR10-DVS and N-Caltech101 scripts: the official DVS recipe (SPEC 7), event frames."""
from .config import build_parser, input_size, parse_args
from .dvs import event_datasets
from .runner import run

RECIPE = dict(model="spiliformer_2_256", T=16, img_size=[128], epochs=120, cooldown_epochs=10, batch_size=16,
              opt="adamw", lr=5e-3, opt_eps=1e-8, weight_decay=0.06, sched="cosine", min_lr=1e-5,
              warmup_epochs=10, warmup_lr=1e-5, mixup=0.5, cutmix=0.0, mixup_prob=0.5, mixup_off_epoch=75,
              smoothing=0.1, amp=True, workers=8, experiment=".", log_interval=50)


def main(name, argv=None):
    parser = build_parser(f"SpiLiFormer on {name}")
    parser.add_argument("--dts_cache", "--dts-cache", dest="dts_cache", default="",
                        help="folder for the split datasets, so that the next run starts at once")
    args = parse_args(parser, argv, defaults=RECIPE)
    return run(args, lambda args: event_datasets(name, args, input_size(args)))
