"""Adversarial robustness (Table 4): FGSM and PGD (torchattack) in input space, before normalisation.

    python tools/attack.py --dataset cifar100 --data-path DIR --checkpoint CKPT -T 4 --num-batches 20

Event frames are scaled into [0, 1] by their batch maximum, so epsilon is a fraction of it.
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
import torchattack  # noqa: E402

from engine.model_config import count, within  # noqa: E402
from tools.common import (InputSpace, batches, build_parser, parse, eval_data, load_model, main_guard,  # noqa: E402
                          write_csv)

FGSM_EPS = (0.05, 0.1, 0.2, 0.3)
PGD_EPS, PGD_STEP = 8 / 255, 2 / 255
PGD_STEPS = (5, 10, 30, 50)


def attacks(fgsm_eps=FGSM_EPS, pgd_steps=PGD_STEPS):
    """Column name -> factory(model) of Table 4's attacks."""
    columns = {"clean": None}
    columns.update({f"FGSM {eps:g}": (lambda m, e=eps: torchattack.FGSM(m, eps=e)) for eps in fgsm_eps})
    columns.update({f"PGD {n}": (lambda m, n=n: torchattack.PGD(m, eps=PGD_EPS, alpha=PGD_STEP, steps=n))
                    for n in pgd_steps})
    return columns


def robustness(model, data, mean, std, columns):
    """Top-1 (%) of `model` under each attack, over `data` (inputs in [0, 1] or event counts)."""
    hits = dict.fromkeys(columns, 0)
    total = 0
    for x, y in data:
        scale = x.amax().clamp(min=1.0).item() if mean is None else 1.0
        wrapped = InputSpace(model, mean, std, scale).to(x.device).eval()
        x01 = x / scale
        for name, make in columns.items():
            adv = x01 if make is None else make(wrapped)(x01, y)
            with torch.no_grad():
                hits[name] += (wrapped(adv).argmax(1) == y).sum().item()
        total += len(y)
    return {name: 100.0 * h / max(total, 1) for name, h in hits.items()}, total


def main(argv=None):
    parser = build_parser(__doc__.splitlines()[0])
    parser.add_argument("--fgsm-eps", type=within(float, ">= 0"), nargs="+", default=list(FGSM_EPS),
                        help="FGSM strengths, in input units ([0, 1] images)")
    parser.add_argument("--pgd-steps", type=count, nargs="+", default=list(PGD_STEPS),
                        help="PGD step counts (eps and step size as Table 4)")
    args = parse(parser, argv)
    model = load_model(args)
    dataset, mean, std = eval_data(args, model)
    columns = attacks(args.fgsm_eps, args.pgd_steps)
    result, n = robustness(model, batches(dataset, args), mean, std, columns)
    print(f"top-1 (%) on {n} {args.dataset} images; PGD: eps 8/255, step 2/255")
    print(" | ".join(f"{k:>9}" for k in result))
    print(" | ".join(f"{v:>9.2f}" for v in result.values()))
    write_csv(args.output, [result])
    return 0


if __name__ == "__main__":
    sys.exit(main_guard(main))
