"""Images/s of a full training step (both passes, loss, backward, optimizer step) and of an eval
step, and peak memory (CUDA: max allocated; CPU: peak RSS), median of timed repeats after warm-up.

    python tools/benchmark.py --model spiliformer_4_384 -b 64 -T 4 --device cuda --compare
    python tools/benchmark.py --model spiliformer_10_768 -b 2 --device cpu --backend torch --json out.json
"""
import argparse
import json
import sys
from dataclasses import fields
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from engine.benchmark import AMP_DTYPES, Config, compare_configs, measure  # noqa: E402
from models.neurons import BACKENDS  # noqa: E402


def parse(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="spiliformer_4_384")
    p.add_argument("--embed-dim", type=int, default=None)
    p.add_argument("-b", "--batch-size", type=int, default=64)
    p.add_argument("-T", type=int, default=None)
    p.add_argument("--input-size", type=int, default=None, help="default: the variant's")
    p.add_argument("--device", choices=("cpu", "cuda"), default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--backend", choices=BACKENDS, default="auto")
    p.add_argument("--amp", choices=sorted(AMP_DTYPES), default="none", help="autocast dtype")
    p.add_argument("--compile", choices=("none", "default", "reduce-overhead", "max-autotune"), default="none")
    p.add_argument("--no-fb-lidiff", dest="fb_lidiff", action="store_false")
    p.add_argument("--no-ff-lidiff", dest="ff_lidiff", action="store_false")
    p.add_argument("--compare", action="store_true", help="straight port vs QKFormer vs our fastest")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--json", default="", help="also write the results here")
    return p.parse_args(argv)


def main(argv=None):
    args = parse(argv)
    base = Config(**{f.name: getattr(args, f.name) for f in fields(Config) if f.name != "T"}, T=args.T)
    configs = compare_configs(base) if args.compare else {"run": base}
    results = {}
    print(f"{'config':<10} {'backend':<8} {'amp':<5} {'compile':<8} {'train img/s':>12} {'eval img/s':>11} "
          f"{'peak MB':>9}")
    for name, cfg in configs.items():
        r = results[name] = measure(cfg, args.warmup, args.repeats)
        print(f"{name:<10} {cfg.backend:<8} {cfg.amp:<5} {cfg.compile:<8} {r['train_img_s']:>12.2f} "
              f"{r['eval_img_s']:>11.2f} {r['peak_mem_mb']:>9.0f}", flush=True)
    if args.compare:
        s, q, f = results["straight"], results["qkformer"], results["fast"]
        print(f"fast / straight: train {f['train_img_s'] / s['train_img_s']:.2f}x, "
              f"memory {f['peak_mem_mb'] / s['peak_mem_mb']:.2f}x; "
              f"fast / qkformer: train {f['train_img_s'] / q['train_img_s']:.2f}x")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
