"""Images/s of a full training step (both passes, loss, backward, optimizer step) and of an eval
step, and peak memory of the training steps (CUDA: max allocated; CPU: peak RSS), median of timed
repeats after warm-up. With --compare the three configurations run side by side, repeats interleaved:

    straight  the official code's way: spikingjelly's LIF, float32, eager
    qkformer  the same with both ablations off (QKFormer's cost)
    fast      the default configuration: backend auto, bf16 AMP on CUDA (--amp to change), eager
              (--compile adds torch.compile to fast only)

    python tools/benchmark.py --model spiliformer_4_384 --embed-dim 128 -b 16 -T 4 --device cpu --compare --json out.json
    python tools/benchmark.py --model spiliformer_4_384 -b 64 --device cuda --compare --amp bf16
    python tools/benchmark.py --model spiliformer_10_768 -b 2 --device cpu --backend torch
"""
import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from engine.benchmark import AMP_DTYPES, COMPILE_MODES, Config, compare_configs, measure_all  # noqa: E402
from models.config import ModelConfig  # noqa: E402


def parse(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ModelConfig.add_flags(p.add_argument_group("model"))
    p.set_defaults(model="spiliformer_4_384")
    p.add_argument("-b", "--batch-size", type=int, default=64)
    p.add_argument("--input-size", type=int, default=None, help="default: the variant's")
    p.add_argument("--device", choices=("cpu", "cuda"), default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--amp", choices=sorted(AMP_DTYPES), default=None,
                   help="autocast dtype on CUDA (default: none; with --compare, fast uses bf16 on CUDA)")
    p.add_argument("--compile", nargs="?", const="default", choices=COMPILE_MODES, default=None,
                   help="torch.compile mode (default: none; with --compare it applies to fast only)")
    p.add_argument("--compare", action="store_true", help="straight port vs QKFormer vs our fastest")
    p.add_argument("--threads", type=int, default=None, help="CPU threads per configuration (default: 1 on CPU)")
    p.add_argument("--timer", choices=("cpu", "wall"), default=None,
                   help="process CPU time (default on CPU) or wall time (default on CUDA)")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--json", default="", help="also write the results here, one object keyed by configuration")
    return p.parse_args(argv)


def main(argv=None):
    args = parse(argv)
    threads = args.threads or (1 if args.device == "cpu" else None)
    base = Config(model=ModelConfig.from_args(args), batch_size=args.batch_size, input_size=args.input_size,
                  device=args.device, amp=args.amp or "none", compile=args.compile or "none", threads=threads)
    if args.compare:
        configs = compare_configs(base, amp=args.amp, compile=args.compile or "none")
    else:
        configs = {"run": base}
    results = measure_all(configs, args.warmup, args.repeats, args.timer)
    device = torch.cuda.get_device_name() if args.device == "cuda" else f"cpu ({threads or torch.get_num_threads()} thread(s))"
    print(f"{args.model} width {args.embed_dim or 'default'} T {args.T or 'default'} batch {args.batch_size} on {device}")
    print(f"{'config':<10} {'backend':<13} {'amp':<5} {'compile':<8} {'train img/s':>12} {'eval img/s':>11} "
          f"{'peak MB':>9}")
    for name, cfg in configs.items():
        r = results[name]
        print(f"{name:<10} {cfg.model.backend:<13} {cfg.amp:<5} {cfg.compile:<8} {r['train_img_s']:>12.2f} "
              f"{r['eval_img_s']:>11.2f} {r['peak_mem_mb']:>9.0f}", flush=True)
    if args.compare:
        s, q, f = results["straight"], results["qkformer"], results["fast"]
        print(f"fast / straight: train {f['train_img_s'] / s['train_img_s']:.2f}x, "
              f"eval {f['eval_img_s'] / s['eval_img_s']:.2f}x, memory {f['peak_mem_mb'] / s['peak_mem_mb']:.2f}x; "
              f"fast / qkformer: train {f['train_img_s'] / q['train_img_s']:.2f}x")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
