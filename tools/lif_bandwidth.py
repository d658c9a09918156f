"""Effective memory bandwidth of the LIF kernels (eqs 1-3) on CUDA, against a device copy and the
GPU's HBM peak. The fused Triton kernels should reach >= 70 % of the peak.

    python tools/lif_bandwidth.py                        # T=4, the 10-768 stem's largest neuron, fp32/bf16/fp16
    python tools/lif_bandwidth.py --shape 4 64 192 56 56 --dtype bf16
"""
import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from engine.benchmark import hbm_peak_gbs, lif_bandwidth  # noqa: E402

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--shape", type=int, nargs="+", default=[4, 64, 192, 56, 56], help="[T, ...] (default: "
                   "T=4, batch 64, SpiLiFormer-10-768's stem output)")
    p.add_argument("--dtype", choices=sorted(DTYPES), nargs="+", default=["fp32", "bf16", "fp16"])
    p.add_argument("--backends", nargs="+", default=["triton", "torch"])
    args = p.parse_args(argv)
    if not torch.cuda.is_available():
        print("error: the LIF bandwidth is measured on CUDA; no GPU here (the kernels' correctness is tested on "
              "CPU with TRITON_INTERPRET=1: python -m pytest tests/test_lif_kernels.py)", file=sys.stderr)
        return 2
    name = torch.cuda.get_device_name()
    peak = hbm_peak_gbs(name)
    print(f"{name}; HBM peak {peak or '?'} GB/s (data sheet); shape {args.shape}")
    print(f"{'dtype':<6} {'kernel':<8} {'fwd GB/s':>9} {'bwd GB/s':>9} {'fwd/peak':>9} {'bwd/peak':>9} {'copy GB/s':>10}")
    for dname in args.dtype:
        rows, copy_gbs = lif_bandwidth(tuple(args.shape), DTYPES[dname], args.backends)
        for backend, fwd, bwd in rows:
            frac = (lambda g: f"{g / peak:>8.0%}") if peak else (lambda g: f"{'?':>8}")
            print(f"{dname:<6} {backend:<8} {fwd:>9.0f} {bwd:>9.0f} {frac(fwd):>9} {frac(bwd):>9} {copy_gbs:>10.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
