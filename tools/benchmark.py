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

--spike-storage bits|lean runs `fast` with spike storage (models/spike_storage.py); --memory-report
prints what backward keeps per image, by kind and by stage, for each storage level (one training
forward, no timing):

    python tools/benchmark.py --model spiliformer_4_384 --embed-dim 128 -T 4 -b 16 --device cpu --memory-report
"""
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from engine.benchmark import (AMP_DTYPES, COMPILE_MODES, SAVED_KINDS, Config, compare_configs,  # noqa: E402
                              measure_all, saved_memory)
from models import ConfigError  # noqa: E402
from engine.config import Parser  # noqa: E402
from engine.model_config import ModelConfig, count, positive  # noqa: E402
from tools.common import main_guard  # noqa: E402
from models.spike_storage import LEVELS as STORAGE_LEVELS  # noqa: E402


def parse(argv=None):
    p = Parser(__doc__)
    ModelConfig.add_flags(p.add_argument_group("model"), defaults={"model": "spiliformer_4_384"})
    p.add_argument("-b", "--batch-size", type=positive, default=64, help="images per step")
    p.add_argument("--input-size", type=positive, default=None, help="square input side (default: the variant's)")
    p.add_argument("--device", choices=("cpu", "cuda"), default="cuda" if torch.cuda.is_available() else "cpu",
                   help="where to measure")
    p.add_argument("--amp", choices=sorted(AMP_DTYPES), default=None,
                   help="autocast dtype on CUDA (default: none; with --compare, fast uses bf16 on CUDA)")
    p.add_argument("--compile", nargs="?", const="default", choices=COMPILE_MODES, default=None,
                   help="torch.compile mode (default: none; with --compare it applies to fast only)")
    p.add_argument("--compare", action="store_true", help="straight port vs QKFormer vs our fastest")
    p.add_argument("--memory-report", action="store_true",
                   help="bytes backward keeps per image, by kind and stage, for each spike storage level")
    p.add_argument("--threads", type=positive, default=None, help="CPU threads per configuration (default: 1 on CPU)")
    p.add_argument("--timer", choices=("cpu", "wall"), default=None,
                   help="process CPU time (default on CPU) or wall time (default on CUDA)")
    p.add_argument("--warmup", type=count, default=2, help="untimed steps first")
    p.add_argument("--repeats", type=positive, default=5, help="timed repeats (the median is shown)")
    p.add_argument("--json", default="", help="also write the results here, one object keyed by configuration")
    return p.parse_args(argv)


def memory_report(base):
    """Two tables: MB per image that backward keeps, by kind and by stage, for each spike storage level
    ('off' = autograd's own float tensors)."""
    if base.threads:
        torch.set_num_threads(base.threads)
    levels = {level: saved_memory(base, spike_storage=level) for level in STORAGE_LEVELS}
    totals = {level: sum(kinds.values()) for level, (kinds, _) in levels.items()}
    rows = []
    for title, table in (("kind", 0), ("stage", 1)):
        rows.append(f"{title + ' (MB/image)':<22}" + "".join(f"{level:>10}" for level in levels))
        for name in (SAVED_KINDS if table == 0 else list(levels["off"][1])):
            rows.append(f"{name:<22}" + "".join(f"{tables[table].get(name, 0) / 2**20:>10.2f}"
                                                 for tables in levels.values()))
        rows.append(f"{'total':<22}" + "".join(f"{t / 2**20:>10.2f}" for t in totals.values()))
        rows.append(f"{'x off':<22}" + "".join(f"{t / totals['off']:>9.2f}x" for t in totals.values()))
        rows.append("")
    return "\n".join(rows), {level: {"kinds": k, "stages": s} for level, (k, s) in levels.items()}


def main(argv=None):
    args = parse(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda: no CUDA GPU is visible here; use --device cpu")
    with torch.device("meta"):
        ModelConfig.from_args(args).build()  # a setting the model refuses: one line, before any measuring
    threads = args.threads or (1 if args.device == "cpu" else None)
    base = Config(model=ModelConfig.from_args(args), batch_size=args.batch_size, input_size=args.input_size,
                  device=args.device, amp=args.amp or "none", compile=args.compile or "none", threads=threads)
    if args.memory_report:
        text, results = memory_report(base)
        print(f"{args.model} width {args.embed_dim or 'default'} T {args.T or 'default'} batch {args.batch_size} "
              f"on {args.device}, amp {base.amp}: what backward keeps, per image")
        print(text)
        if args.json:
            Path(args.json).write_text(json.dumps(results, indent=2))
        return 0
    if args.compare:
        configs = compare_configs(base, amp=args.amp, compile=args.compile or "none")
    else:
        configs = {"run": base}
    results = measure_all(configs, args.warmup, args.repeats, args.timer)
    device = torch.cuda.get_device_name() if args.device == "cuda" else f"cpu ({threads or torch.get_num_threads()} thread(s))"
    print(f"{args.model} width {args.embed_dim or 'default'} T {args.T or 'default'} batch {args.batch_size} on {device}")
    print(f"{'config':<10} {'backend':<13} {'amp':<5} {'compile':<8} {'storage':<8} {'train img/s':>12} "
          f"{'eval img/s':>11} {'peak MB':>9}")
    for name, cfg in configs.items():
        r = results[name]
        storage = cfg.model.spike_storage or "off"
        print(f"{name:<10} {cfg.model.backend:<13} {cfg.amp:<5} {cfg.compile:<8} {storage:<8} "
              f"{r['train_img_s']:>12.2f} {r['eval_img_s']:>11.2f} {r['peak_mem_mb']:>9.0f}", flush=True)
    out_of_memory = [name for name, r in results.items() if r["peak_mem_mb"] == float("inf")]
    if out_of_memory:
        print(f"out of memory at batch {args.batch_size}: {', '.join(out_of_memory)} (0 img/s, peak inf)")
    if args.compare and not {"straight", "qkformer", "fast"} & set(out_of_memory):
        s, q, f = results["straight"], results["qkformer"], results["fast"]
        print(f"fast / straight: train {f['train_img_s'] / s['train_img_s']:.2f}x, "
              f"eval {f['eval_img_s'] / s['eval_img_s']:.2f}x, memory {f['peak_mem_mb'] / s['peak_mem_mb']:.2f}x; "
              f"fast / qkformer: train {f['train_img_s'] / q['train_img_s']:.2f}x")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main_guard(main))
